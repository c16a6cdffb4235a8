"""Security class "cross-run state": a run mutates (or tries to mutate) a facade, the
builtins, a cached or shared object, and the next run on the same warm worker must see none of
it; one owner's runs never share a worker with another owner's, and one owner can never hold
the whole pool. Real worker processes; pools of their own where the sizing matters."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from engine.sandbox.pool import SandboxPool
from engine.sandbox.result import SandboxResult
from engine.sandbox.settings import SandboxSettings
from tests.sandbox.helpers import assert_engine_alive, assert_worker_gone, pids_of
from tests.support.waiting import wait_for


async def run_ok(pool: SandboxPool, code: str, tenant: str, value: object = None) -> object:
    result = await pool.run(code, value, tenant=tenant)
    assert result.error is None, result.error
    return result.output


async def on_one_warm_worker(
    pool: SandboxPool, tenant: str, first: str, then: str
) -> tuple[object, SandboxResult]:
    """Run `first`, then `then` for the same tenant, and prove one worker served both."""
    before = await run_ok(pool, first, tenant)
    (pid,) = pids_of(pool, tenant)
    after = await pool.run(then, None, tenant=tenant)
    if after.error is None:
        assert pids_of(pool, tenant) == {pid}, "another worker ran the second step"
    else:
        await assert_worker_gone(pid)  # the error retired the very worker of the first run
    return before, after


MUTATIONS = {
    "replace a facade function": (
        "import json\njson.loads = len",
        "import json\nreturn json.loads('[1]')",
        [1],
    ),
    "add to a facade": (
        "import math\nmath.answer = 42",
        "import math\nreturn hasattr(math, 'answer')",
        False,
    ),
    "replace a method of a builtin type": (
        "str.upper = len",
        "return 'a'.upper()",
        "A",
    ),
    "patch a facade class": (
        "import collections\ncollections.Counter.most_common = len",
        "import collections\nreturn collections.Counter('aab').most_common(1)",
        [["a", 2]],
    ),
    "patch a shared constant object": (
        "import datetime\ndatetime.timezone.utc.offset = 5",
        "import datetime\nreturn datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)"
        ".isoformat()",
        "2024-01-01T00:00:00+00:00",
    ),
    "patch a cached timezone": (
        "import zoneinfo\nzoneinfo.ZoneInfo('UTC').key = 'Mars'",
        "import zoneinfo\nreturn zoneinfo.ZoneInfo('UTC').key",
        "UTC",
    ),
    "patch a cached regex": (
        "import re\nre.compile('a+').pattern = 'b'",
        "import re\nreturn re.compile('a+').pattern",
        "a+",
    ),
    "register with an abstract class": (
        "import collections\ncollections.ChainMap.register(int)",
        "import collections\nreturn issubclass(int, collections.ChainMap)",
        False,
    ),
    "delete from a facade": (
        "import json\ndel json.dumps",
        "import json\nreturn json.dumps(1)",
        "1",
    ),
    "write an item of a facade": (
        "import string\nstring.digits[0] = 'x'",
        "import string\nreturn string.digits",
        "0123456789",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
async def test_a_refused_mutation_is_invisible_to_the_next_run(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    attempt, observe, expected = MUTATIONS[case]
    # The step catches the refusal, so it succeeds and its worker stays warm for the next.
    guarded = "try:\n" + "".join(f"    {line}\n" for line in attempt.splitlines())
    guarded += "    return 'mutated'\nexcept (TypeError, AttributeError) as e:\n    return str(e)"
    first, second = await on_one_warm_worker(pool, tenant, guarded, observe)
    assert first != "mutated"
    assert "not allowed" in str(first), first
    assert second.error is None, second.error
    assert second.output == expected


LEFTOVERS = {
    "a global": ("global counter\ncounter = 41\nreturn counter", "global counter\nreturn counter"),
    "a shadowed builtin": (
        "global len\nlen = lambda x: -1\nreturn len([1])",
        "return len([1, 2])",
    ),
    "a default argument": (
        "def f(acc=[]):\n    acc.append(1)\n    return acc\nreturn f()",
        "def f(acc=[]):\n    acc.append(1)\n    return acc\nreturn f()",
    ),
    "an lru_cache": (
        "import functools\n@functools.lru_cache\ndef f(x):\n    return x\nf(1)\n"
        "return f.cache_info().currsize",
        "import functools\n@functools.lru_cache\ndef f(x):\n    return x\n"
        "return f.cache_info().currsize",
    ),
}
LEFTOVER_RESULTS = {
    "a global": (41, "NameError: name 'counter' is not defined"),
    "a shadowed builtin": (-1, 2),
    "a default argument": ([1], [1]),
    "an lru_cache": (1, 0),
}


@pytest.mark.parametrize("case", sorted(LEFTOVERS))
async def test_what_a_run_leaves_in_its_namespace_is_gone_for_the_next(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    first_code, then_code = LEFTOVERS[case]
    first_expected, then_expected = LEFTOVER_RESULTS[case]
    first, then = await on_one_warm_worker(pool, tenant, first_code, then_code)
    assert first == first_expected
    if isinstance(then_expected, str) and "Error" in then_expected:
        assert then.error is not None and then.error.startswith(then_expected), then.error
    else:
        assert (then.output, then.error) == (then_expected, None)


async def test_the_same_code_gets_fresh_objects_although_its_compilation_is_cached(
    pool: SandboxPool, tenant: str
) -> None:
    code = "x = [1]\nx.append(len(x))\nreturn x"
    assert await run_ok(pool, code, tenant) == [1, 1]
    hits = pool.stats().get("compile_cache_hits", 0)
    assert await run_ok(pool, code, tenant) == [1, 1]
    assert pool.stats()["compile_cache_hits"] == hits + 1


async def test_random_state_is_per_run(pool: SandboxPool, tenant: str) -> None:
    seeded = "import random\nrandom.seed(1234)\nreturn [random.random() for _ in range(3)]"
    drawn = "import random\nreturn [random.random() for _ in range(3)]"
    expected, next_run = await on_one_warm_worker(pool, tenant, seeded, drawn)
    assert next_run.error is None
    assert next_run.output != expected, "a seed survived into the next run"
    assert await run_ok(pool, seeded, tenant) == expected


async def test_print_output_and_decimal_context_do_not_carry_over(
    pool: SandboxPool, tenant: str
) -> None:
    result = await pool.run("print('run one')\nreturn 1", None, tenant=tenant)
    assert result.logs == "run one\n"
    result = await pool.run(
        "import decimal\nreturn str(decimal.Decimal(1) / decimal.Decimal(7))", None, tenant=tenant
    )
    assert result.logs == ""
    assert result.output == "0.1428571428571428571428571429", "the default 28-digit context"


@pytest_asyncio.fixture
async def small_pool() -> AsyncIterator[SandboxPool]:
    """Two idle workers, one worker per tenant, three workers in all: tenants must evict."""
    sandbox = SandboxPool(SandboxSettings(pool_size=1, max_workers_per_tenant=1, max_workers=3))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.close()


async def test_a_worker_never_serves_a_second_owner(small_pool: SandboxPool) -> None:
    owner_of: dict[int, str] = {}
    keep = "return input"
    for round_ in range(4):
        for tenant in ("alice", "bob", "carol", "dave"):
            secret = f"{tenant}-{round_}"
            result = await small_pool.run(keep, secret, tenant=tenant)
            assert result.output == secret
            for worker in small_pool.workers():
                if worker.tenant is not None:
                    assert owner_of.setdefault(worker.pid, worker.tenant) == worker.tenant
    assert len(set(owner_of.values())) == 4
    assert small_pool.stats()["evictions"] > 0, "the test should have made the pool evict"


async def test_one_owner_cannot_hold_the_whole_pool() -> None:
    settings = SandboxSettings(pool_size=2, max_workers_per_tenant=2, max_workers=4)
    sandbox = SandboxPool(settings)
    await sandbox.start()
    try:
        greedy = [
            asyncio.ensure_future(
                sandbox.run("while True:\n    pass", None, tenant="greedy", timeout_ms=1_500)
            )
            for _ in range(3)
        ]

        async def greedy_saturated() -> bool:
            busy = [w for w in sandbox.workers() if w.tenant == "greedy" and w.busy]
            return len(busy) == 2 and sandbox.stats().get("waits", 0) > 0

        await wait_for(greedy_saturated, timeout=10, what="the greedy tenant to fill its share")
        result = await sandbox.run("return 'served'", None, tenant="modest")
        assert result.output == "served"
        assert not all(task.done() for task in greedy), "the greedy runs were still queued"
        assert len(pids_of(sandbox, "greedy")) <= settings.max_workers_per_tenant
        outcomes = await asyncio.gather(*greedy)
        assert all(o.error == "timed out after 1500 ms" for o in outcomes)
        await assert_engine_alive(sandbox, "greedy")
    finally:
        await sandbox.close()


async def test_a_worker_is_recycled_after_its_last_run() -> None:
    sandbox = SandboxPool(SandboxSettings(pool_size=1, max_runs_per_worker=3))
    await sandbox.start()
    try:
        served = []
        for n in range(4):
            assert await run_ok(sandbox, "return input", "bounded", n) == n
            served.append(pids_of(sandbox, "bounded"))
        assert served[0] == served[1] and len(served[1]) == 1, served
        assert served[2] == set(), "the third run was that worker's last"
        assert served[3] and not served[3] & served[0]
        await assert_worker_gone(next(iter(served[0])))
        assert sandbox.stats()["retired_max_runs"] == 1
    finally:
        await sandbox.close()
