"""Portico benchmark: throughput, insert-to-step-start latency, sandbox overhead, memory.

Runs the engine as its own process (`python -m engine run`) against a fresh embedded
PostgreSQL, so the engine's peak RSS is its own. Figures, not assertions: compare them with
the targets printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.db import embedded, migrate  # noqa: E402
from engine.sandbox import process  # noqa: E402

TARGETS = {
    "signals_per_s": ">= 500",
    "latency_ms.p50": "<= 10",
    "sandbox_overhead_ms.p50": "<= 1 (warm)",
    "rss_mb.engine": "<= 150",
    "rss_mb.sandbox_worker": "<= 40",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_until(probe: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.02)


def peak_rss_mb(pid: int) -> float:
    return process.peak_rss_kb(pid) / 1024


def setup_agents(conn: psycopg.Connection[Any], count: int) -> list[str]:
    ids = []
    for i in range(count):
        definition = {
            "name": f"bench-{i}",
            "steps": [{"name": "echo", "type": "python", "config": {"code": "return input"}}],
        }
        row = conn.execute("select public.apply_agent(%s)", (Jsonb(definition),)).fetchone()
        assert row is not None
        ids.append(str(row[0]))
    return ids


def pending_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "select count(*) from public.signals where status not in ('complete', 'error')"
    ).fetchone()
    return int(row[0]) if row else 0


def throughput(conn: psycopg.Connection[Any], agents: list[str], total: int) -> dict[str, Any]:
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "insert into public.signals (type, agent_id, payload)"
            " select 'run', (%s::uuid[])[1 + (g %% %s)], jsonb_build_object('i', g)"
            " from generate_series(0, %s - 1) g",
            (agents, len(agents), total),
        )
    wait_until(lambda: pending_count(conn) == 0, 600, "the throughput batch")
    elapsed = time.perf_counter() - started
    row = conn.execute("select count(*) from public.signals where status = 'error'").fetchone()
    errors = int(row[0]) if row else 0
    return {
        "signals": total,
        "agents": len(agents),
        "seconds": round(elapsed, 3),
        "signals_per_s": round(total / elapsed, 1),
        "errors": errors,
    }


def latency(
    conn: psycopg.Connection[Any], agents: list[str], count: int, rate: float
) -> dict[str, float]:
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for i in range(count):
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        conn.execute(
            "insert into public.signals (type, agent_id, payload, created_at)"
            " values ('run', %s, %s, clock_timestamp())",
            (agents[i % len(agents)], Jsonb({"i": i})),
        )
        next_at += interval
    wait_until(lambda: pending_count(conn) == 0, 120, "the latency signals")
    rows = conn.execute(
        "select extract(epoch from (r.started_at - s.created_at)) * 1000"
        " from public.signals s join public.runtime_sessions x on x.id = s.runtime_session_id"
        " join public.step_results r on r.session_id = x.id"
        " where s.seq > (select max(seq) - %s from public.signals)",
        (count,),
    ).fetchall()
    values = [float(r[0]) for r in rows]
    return {
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "samples": len(values),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="portico-bench-"))
    url = embedded.start_embedded(workdir)
    migrate.migrate(url)
    log = (workdir / "engine.log").open("w")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORTICO_CONCURRENCY": str(args.concurrency),
        "PORTICO_LOG_LEVEL": "warning",
        "PORTICO_LOG_FORMAT": "json",
    }
    engine = subprocess.Popen(
        [sys.executable, "-m", "engine", "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            agents = setup_agents(conn, args.agents)
            # Warm-up: one signal per agent, so figures exclude first-use costs.
            throughput(conn, agents, len(agents))
            # Rounds, reported by their median: a shared 2-core machine varies by ±15 % from
            # one run to the next, and one round would report the noise.
            rounds = [throughput(conn, agents, args.signals) for _ in range(args.rounds)]
            rounds.sort(key=lambda r: r["signals_per_s"])
            result: dict[str, Any] = {"throughput": rounds[len(rounds) // 2]}
            result["throughput_rounds"] = [r["signals_per_s"] for r in rounds]
            result["signals_per_s"] = result["throughput"]["signals_per_s"]
            result["latency_ms"] = latency(conn, agents, args.latency_signals, args.rate)
        workers = psutil.Process(engine.pid).children(recursive=True)
        result["rss_mb"] = {
            "engine": round(peak_rss_mb(engine.pid), 1),
            "sandbox_worker": round(max((peak_rss_mb(w.pid) for w in workers), default=0.0), 1),
        }
    finally:
        engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=60)
        log.close()
    from engine.sandbox import bench as sandbox_bench

    sandbox = sandbox_bench.measure(args.sandbox_runs)
    result["sandbox_overhead_ms"] = sandbox["sandbox_overhead_ms"]
    result["sandbox_cold_start_ms"] = sandbox.get("cold_start_ms")
    result["rss_mb"]["sandbox_worker_isolated"] = sandbox.get("rss_mb", {}).get("sandbox_worker")
    result["targets"] = TARGETS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--signals", type=int, default=5000)
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds (median shown)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency-signals", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="latency inserts per second")
    parser.add_argument("--sandbox-runs", type=int, default=2000)
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    t = result["throughput"]
    print(
        f"throughput      {t['signals_per_s']:>9} signals/s  (median of "
        f"{result['throughput_rounds']}; {t['signals']} signals, {t['agents']} agents, "
        f"{t['seconds']} s, {t['errors']} errors)   target {TARGETS['signals_per_s']}"
    )
    lat = result["latency_ms"]
    print(
        f"latency (ms)    p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  "
        f"({lat['samples']} signals at {args.rate:g}/s)   target p50 {TARGETS['latency_ms.p50']}"
    )
    sb, cold = result["sandbox_overhead_ms"], result["sandbox_cold_start_ms"] or {}
    print(
        f"sandbox (ms)    warm overhead p50 {sb['p50']}  p95 {sb.get('p95')}   "
        f"target p50 {TARGETS['sandbox_overhead_ms.p50']}\n"
        f"                cold start (new worker) p50 {cold.get('p50')}  p95 {cold.get('p95')}"
    )
    rss = result["rss_mb"]
    print(
        f"peak RSS (MB)   engine {rss['engine']}  sandbox worker {rss['sandbox_worker']}   "
        f"targets {TARGETS['rss_mb.engine']} / {TARGETS['rss_mb.sandbox_worker']}"
    )


if __name__ == "__main__":
    main()
