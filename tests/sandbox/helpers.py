"""Assertions shared by the sandbox tests: safe outcomes, a live engine, replaced workers."""

from __future__ import annotations

from engine.sandbox.pool import SandboxPool
from engine.sandbox.result import SandboxResult
from tests.support.waiting import wait_for


def pids_of(pool: SandboxPool, tenant: str) -> set[int]:
    return {w.pid for w in pool.workers() if w.tenant == tenant}


def proc_file(pid: int, name: str) -> bytes:
    """/proc/<pid>/<name> as the engine reads it."""
    with open(f"/proc/{pid}/{name}", "rb") as file:
        return file.read()


def process_exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def assert_engine_alive(pool: SandboxPool, tenant: str) -> None:
    """The pool still runs steps for this tenant after whatever the test did."""
    result = await pool.run("return input['n'] + 1", {"n": 41}, tenant=tenant)
    assert result.error is None, result.error
    assert result.output == 42


async def assert_rejected(
    pool: SandboxPool,
    code: str,
    *,
    tenant: str,
    contains: str,
    value: object = None,
    timeout_ms: int | None = None,
) -> SandboxResult:
    """The step failed with an error containing `contains`, no worker of the tenant was kept
    (tenants here run one step at a time), and the pool serves the tenant again."""
    result = await pool.run(code, value, tenant=tenant, timeout_ms=timeout_ms)
    assert result.error is not None, f"expected an error, got output {result.output!r}"
    assert contains in result.error, result.error
    assert result.output is None
    assert not pids_of(pool, tenant), "the worker that ran the failed step was kept"
    await assert_engine_alive(pool, tenant)
    return result


async def assert_worker_gone(pid: int) -> None:
    async def gone() -> bool:
        return not process_exists(pid)

    await wait_for(gone, timeout=10, what=f"worker {pid} to be reaped")


def assert_no_secret(result: SandboxResult, *secrets: str) -> None:
    text = f"{result.output!r} {result.error!r} {result.logs!r}"
    for secret in secrets:
        assert secret not in text, "a secret leaked into the step result"
