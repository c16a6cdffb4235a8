"""Security class "resources": infinite loops (also inside a bare `except:`), huge strings,
lists and integers, deep recursion, catastrophic regexes, giant output, very long or deeply
nested source. Each ends as a step error naming the limit, with the worker replaced (killed
where it was stuck) and the engine serving the tenant again. Real worker processes."""

from __future__ import annotations

import pytest

from engine.sandbox.pool import SandboxPool
from tests.sandbox.helpers import (
    assert_engine_alive,
    assert_rejected,
    assert_worker_gone,
    pids_of,
)

SPINS = {
    "infinite loop": "while True:\n    pass",
    "bare except around the loop": (
        "while True:\n    try:\n        while True:\n            pass\n    except:\n        pass"
    ),
    "BaseException around the loop": (
        "while True:\n    try:\n        while True:\n            pass\n"
        "    except BaseException:\n        continue"
    ),
    "finally restarts the loop": (
        "def spin():\n    try:\n        while True:\n            pass\n    finally:\n"
        "        spin()\nspin()"
    ),
    "huge integer power": "return 7 ** (7 ** 9) > 0",
    "tower of powers": "x = 10 ** 10 ** 10",
    "catastrophic regex": "import re\nreturn bool(re.match(r'(a+)+$', 'a' * 40 + 'b'))",
    "nested catastrophic regex": "import re\nreturn re.findall(r'(x+x+)+y', 'x' * 5000)",
    "endless generator consumed": "import itertools\nreturn sum(itertools.count())",
}


@pytest.mark.parametrize("case", sorted(SPINS))
async def test_a_step_that_never_ends_is_killed_at_its_deadline(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    await assert_engine_alive(pool, tenant)
    (pid,) = pids_of(pool, tenant)
    await assert_rejected(
        pool, SPINS[case], tenant=tenant, timeout_ms=400, contains="timed out after 400 ms"
    )
    await assert_worker_gone(pid)


MEMORY = {
    "huge string": "return len('a' * 2 ** 34)",
    "huge list": "return len([0] * 10 ** 10)",
    "huge bytes": "return len(bytes(10 ** 10))",
    "huge join": "return len(''.join(['x' * 10 ** 6] * 10 ** 4))",
    "huge padding": "return len('%*s' % (10 ** 10, 'x'))",
    "huge format width": "return len(format('x', '>10000000000'))",
    "huge dict": "return len(dict.fromkeys(range(10 ** 9)))",
}


@pytest.mark.parametrize("case", sorted(MEMORY))
async def test_a_step_past_the_memory_limit_gets_a_memory_error(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    await assert_rejected(
        pool, MEMORY[case], tenant=tenant, timeout_ms=10_000, contains="memory limit exceeded"
    )


ERRORS = {
    "deep recursion": ("def f(n):\n    return f(n + 1)\nreturn f(0)", "RecursionError"),
    "mutual recursion": (
        "def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\nreturn a(0)",
        "RecursionError",
    ),
    "recursion in a lambda": ("f = lambda: f()\nreturn f()", "RecursionError"),
    "repr of a deep structure": (
        "x = []\nfor i in range(100000):\n    x = [x]\nreturn repr(x)",
        "RecursionError",
    ),
    "integer to a huge string": ("return str(10 ** 5000)", "ValueError: Exceeds the limit"),
    "range of an absurd size": ("return len(range(10 ** 30))", "OverflowError"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
async def test_runaway_computation_is_a_clear_step_error(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    code, message = ERRORS[case]
    await assert_rejected(pool, code, tenant=tenant, contains=message)


async def test_a_caught_memory_error_leaves_the_worker_usable(
    pool: SandboxPool, tenant: str
) -> None:
    code = "try:\n    x = 'a' * 2 ** 34\nexcept MemoryError:\n    return 'recovered'"
    result = await pool.run(code, None, tenant=tenant)
    assert (result.output, result.error) == ("recovered", None)
    await assert_engine_alive(pool, tenant)


async def test_giant_output_prints_and_errors_are_capped(pool: SandboxPool, tenant: str) -> None:
    settings = pool.settings
    await assert_rejected(
        pool,
        f"return 'x' * {settings.max_output_bytes * 4}",
        tenant=tenant,
        contains="output is too large",
    )
    result = await pool.run(
        "s = 'y' * 100000\nfor i in range(1000):\n    print(s)\nreturn 1", None, tenant=tenant
    )
    assert result.output == 1
    assert len(result.logs.encode()) <= settings.max_log_bytes + 100
    result = await assert_rejected(
        pool, "raise ValueError('z' * 10 ** 7)", tenant=tenant, contains="ValueError: zzz"
    )
    assert result.error is not None and len(result.error) <= 4000


async def test_exceptions_nobody_can_raise_never_block_the_worker(
    pool: SandboxPool, tenant: str
) -> None:
    """A generator whose cleanup raises, collected later, is an "unraisable" exception that
    Python would print on stderr; thousands of them must neither block nor end the worker."""
    code = (
        "def g():\n    try:\n        yield 1\n    finally:\n        raise ValueError('x' * 1000)\n"
        "for i in range(2000):\n    x = g()\n    next(x)\n    x = None\nreturn 'done'"
    )
    first = await pool.run(code, None, tenant=tenant, timeout_ms=5_000)
    assert (first.output, first.error) == ("done", None)
    pid = pids_of(pool, tenant)
    second = await pool.run(code, None, tenant=tenant, timeout_ms=5_000)
    assert (second.output, second.error) == ("done", None)
    assert pids_of(pool, tenant) == pid, "the same warm worker served both runs"


SOURCES = {
    "too many characters": ("x = 1\n" * 20_000, "code is too long: 120000 characters"),
    "too many bytes": ("s = '" + "é" * 40_000 + "'", "code is too long: 80006 bytes"),
    "too many syntax nodes": ("x = [" + "a," * 30_000 + "]", "more than 50000 syntax nodes"),
    "a very long expression": ("return " + "1+" * 30_000 + "1", "nested too deeply"),
    "deeply nested brackets": ("return " + "[" * 300 + "]" * 300, "too many nested parentheses"),
    "deeply nested blocks": (
        "".join(" " * i + "if True:\n" for i in range(150)) + " " * 150 + "pass",
        "too many levels of indentation",
    ),
    "long subscript chain": ("return input" + "[0]" * 5_000, "nested too deeply at line 1"),
    "long attribute chain": ("return input" + ".a" * 10_000, "nested too deeply at line 1"),
    "long unary chain": ("return " + "-" * 20_000 + "1", "nested too deeply"),
    "deeply nested lambdas": ("f = " + "lambda: " * 400 + "1", "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
async def test_oversized_or_deeply_nested_source_is_refused_clearly(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    code, message = SOURCES[case]
    await assert_rejected(pool, code, tenant=tenant, contains=message)
