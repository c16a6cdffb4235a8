"""Sandbox benchmark: warm per-step overhead over a plain exec of the same code, cold start,
and one worker's peak RSS. Figures, not assertions; `python -m engine.sandbox.bench` prints
them (`--json` for one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import builtins
import json
import statistics
import time
from typing import Any

from engine.sandbox import process
from engine.sandbox.pool import SandboxPool
from engine.sandbox.settings import SandboxSettings

STEP_CODE = """\
total = 0
for value in input["values"]:
    total += value
return {"n": input["n"], "total": total, "label": f"run {input['n']}"}
"""
WARMUP_RUNS = 50
COLD_STARTS = 10


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 4)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99)}


def _input(n: int) -> dict[str, Any]:
    return {"n": n, "values": [1, 2, 3, 4, 5]}


def plain_exec_ms(n: int) -> list[float]:
    """The same code as an ordinary function, compiled once, exec'd and called per run."""
    body = "".join(f"    {line}\n" for line in STEP_CODE.splitlines())
    code = compile(f"def step(input):\n{body}", "<plain>", "exec")
    samples = []
    for i in range(n):
        started = time.perf_counter()
        scope: dict[str, Any] = {"__builtins__": builtins}
        exec(code, scope)  # noqa: S102 - the benchmark's baseline, our own constant code
        scope["step"](_input(i))
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def warm_runs_ms(n: int) -> tuple[list[float], float]:
    """Consecutive runs of one tenant on a warm worker; and that worker's peak RSS (MB)."""
    settings = SandboxSettings(pool_size=1, max_runs_per_worker=n + WARMUP_RUNS + 1)
    pool = SandboxPool(settings)
    await pool.start()
    try:
        for i in range(WARMUP_RUNS):
            await pool.run(STEP_CODE, _input(i), tenant="bench")
        samples = []
        for i in range(n):
            started = time.perf_counter()
            result = await pool.run(STEP_CODE, _input(i), tenant="bench")
            samples.append((time.perf_counter() - started) * 1000)
            if result.error:
                raise RuntimeError(f"benchmark step failed: {result.error}")
        bound = [w for w in pool.workers() if w.tenant == "bench"]
        rss = process.peak_rss_kb(bound[0].pid) / 1024 if bound else float("nan")
    finally:
        await pool.close()
    return samples, rss


async def cold_runs_ms(count: int) -> list[float]:
    """First runs of new tenants with no idle worker: start, boot, self-test, compile, run."""
    pool = SandboxPool(SandboxSettings(pool_size=0))
    await pool.start()
    try:
        samples = []
        for i in range(count):
            started = time.perf_counter()
            await pool.run(STEP_CODE, _input(i), tenant=f"cold-{i}")
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        await pool.close()
    return samples


def measure(n: int = 2000) -> dict[str, Any]:
    """The figures `scripts/bench` reports for the sandbox."""
    plain = plain_exec_ms(n)
    warm, rss_mb = asyncio.run(warm_runs_ms(n))
    cold = asyncio.run(cold_runs_ms(COLD_STARTS))
    baseline = statistics.median(plain)
    return {
        "sandbox_overhead_ms": _percentiles([sample - baseline for sample in warm]),
        "sandbox_run_ms": _percentiles(warm),
        "plain_exec_ms": _percentiles(plain),
        "cold_start_ms": _percentiles(cold),
        "rss_mb": {"sandbox_worker": round(rss_mb, 1)},
        "runs": n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=2000, help="warm runs to time")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = measure(args.n)
    if args.json:
        print(json.dumps(figures))
        return
    overhead, cold = figures["sandbox_overhead_ms"], figures["cold_start_ms"]
    run, plain = figures["sandbox_run_ms"], figures["plain_exec_ms"]
    print(f"warm overhead (ms)  p50 {overhead['p50']}  p95 {overhead['p95']}  (target p50 <= 1)")
    print(f"sandbox run / plain exec    p50 {run['p50']} / {plain['p50']} ms")
    print(f"cold start (ms)             p50 {cold['p50']}  p95 {cold['p95']}")
    print(f"worker peak RSS (MB)        {figures['rss_mb']['sandbox_worker']}  (target <= 40)")


if __name__ == "__main__":
    main()
