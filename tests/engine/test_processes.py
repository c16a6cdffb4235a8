"""Several engine processes (`python -m engine run`) on one real PostgreSQL: FIFO per agent,
a SIGKILLed worker's signal finished by another, graceful shutdown (SIGTERM and SIGINT), sync
reaching every engine."""

from __future__ import annotations

import itertools
import signal as os_signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import SPIN, Db, EngineProcess, python_step
from tests.support.waiting import wait_for, wait_for_sync

pytestmark = pytest.mark.slow


@pytest.fixture
def engines(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[EngineProcess] = []

    def start(name: str, **env: str) -> EngineProcess:
        proc = EngineProcess(database_url, tmp_path / f"{name}.log", env=env).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


async def test_fifo_per_agent_across_engine_processes_and_many_agents(
    database_url: str, engines: Any
) -> None:
    started = [engines(name, PORTICO_CONCURRENCY="4") for name in ("a", "b", "c")]
    # Every engine listens before the first signal, or the first one up could take them all.
    wait_for_sync(
        lambda: all(engine.has_event("engine_started") for engine in started),
        timeout=60,
        what="three engines started",
    )
    async with Db(database_url) as db:
        agents = [await db.apply(f"queue-{i}", [SPIN]) for i in range(12)]
        # Each run takes a little time, so no one engine can drain every queue alone.
        sent = [
            (agent, await db.send(agent, {"k": k, "seconds": 0.02}))
            for k in range(6)
            for agent in agents
        ]
        for _, signal_id in sent:
            await wait_for(lambda s=signal_id: db.finished(s), timeout=60, what="all runs")
        rows = await db.rows(
            "select s.agent_id, s.seq, s.status, r.started_at, r.completed_at, r.worker_id"
            " from public.signals s join public.runtime_sessions r on r.id = s.runtime_session_id"
            " order by s.agent_id, s.seq"
        )

    assert len(rows) == len(sent) and all(r["status"] == "complete" for r in rows)
    assert len({r["worker_id"] for r in rows}) >= 2, "work should spread over the engines"
    by_agent: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        by_agent.setdefault(row["agent_id"], []).append(row)
    for runs in by_agent.values():
        for earlier, later in itertools.pairwise(runs):
            # In sequence order, and never overlapping: one run of an agent at a time.
            assert earlier["completed_at"] <= later["started_at"]


async def test_a_sigkilled_engine_signal_is_finished_by_another(
    database_url: str, engines: Any
) -> None:
    async with Db(database_url) as db:
        agent = await db.apply("long", [python_step("first", "return input"), SPIN])
        victim = engines("victim")
        signal_id = await db.send(agent, {"seconds": 3})

        async def mid_run() -> bool:
            report = await db.signal(signal_id)
            session = report.get("session") or {}
            return report["status"] == "processing" and len(session.get("step_results", [])) == 1

        await wait_for(mid_run, timeout=20, what="the run to be inside its slow step")
        victim.send(os_signal.SIGKILL)
        victim.wait()
        rescuer = engines("rescuer")
        report = await wait_for(lambda: db.finished(signal_id), timeout=60, what="rescue")
        sessions = await db.rows(
            "select attempt, status, error, worker_id from public.runtime_sessions"
            " where signal_id = %s order by attempt",
            signal_id,
        )

    assert report["status"] == "complete" and report["attempts"] == 2
    assert [(s["attempt"], s["status"]) for s in sessions] == [(1, "error"), (2, "success")]
    assert "stopped renewing its lease" in sessions[0]["error"]
    assert rescuer.has_event("run_succeeded")


@pytest.mark.parametrize("stop_with", [os_signal.SIGTERM, os_signal.SIGINT], ids=["TERM", "INT"])
async def test_sigterm_or_sigint_lets_the_in_flight_run_finish_then_exits_zero(
    database_url: str, engines: Any, stop_with: os_signal.Signals
) -> None:
    async with Db(database_url) as db:
        agent = await db.apply("graceful", [SPIN])
        engine = engines(
            "graceful", PORTICO_SHUTDOWN_GRACE_SECONDS="60", PORTICO_WORKER_ID="graceful"
        )
        # Longer than the 2 s lease: the stopping engine must keep renewing it while it
        # finishes, or the bystander reclaims the signal and runs it a second time.
        signal_id = await db.send(agent, {"seconds": 4})
        await wait_for(lambda: _status_is(db, signal_id, "processing"), what="claim")
        engines("bystander")
        engine.send(stop_with)
        assert engine.wait(timeout=60) == 0
        report = await db.signal(signal_id)
        sessions = await db.rows(
            "select worker_id, status from public.runtime_sessions where signal_id = %s",
            signal_id,
        )
    assert report["status"] == "complete" and report["attempts"] == 1
    assert sessions == [{"worker_id": "graceful", "status": "success"}]
    requested = [e for e in engine.events() if e.get("event") == "shutdown_requested"]
    assert [e["os_signal"] for e in requested] == [stop_with.name]
    assert engine.has_event("engine_stopped")


async def test_sigterm_past_the_grace_period_releases_the_signal_to_another_engine(
    database_url: str, engines: Any
) -> None:
    async with Db(database_url) as db:
        agent = await db.apply("impatient", [SPIN])
        first = engines("first", PORTICO_SHUTDOWN_GRACE_SECONDS="0.1")
        signal_id = await db.send(agent, {"seconds": 30})
        await wait_for(lambda: _status_is(db, signal_id, "processing"), what="claim")
        first.send(os_signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        released = await db.signal(signal_id)
        assert released["status"] == "pending" and released["attempts"] == 0
        # The second engine need not spin for 30 s to show it took the released signal.
        await db.apply("impatient", [python_step("echo", "return input")])
        second = engines("second")
        report = await wait_for(lambda: db.finished(signal_id), timeout=60, what="second engine")
        sessions = await db.rows(
            "select attempt, status from public.runtime_sessions where signal_id = %s"
            " order by attempt",
            signal_id,
        )
    assert report["status"] == "complete" and report["attempts"] == 1
    assert [(s["attempt"], s["status"]) for s in sessions] == [(1, "error"), (2, "success")]
    assert first.has_event("signals_released")
    assert second.has_event("run_succeeded") and not second.has_event("signal_processing_crashed")


async def test_sync_makes_every_running_engine_reload(database_url: str, engines: Any) -> None:
    procs = [engines("one"), engines("two")]
    for proc in procs:
        wait_for_sync(lambda p=proc: p.has_event("engine_started"), timeout=30)
    async with Db(database_url) as db:
        signal_id = await db.send(None, {}, type="sync")
        await wait_for(lambda: db.finished(signal_id), what="sync")
    for proc in procs:
        wait_for_sync(
            lambda p=proc: p.has_event("agent_config_reloaded"),
            timeout=10,
            what="each engine to reload",
        )


async def _status_is(db: Db, signal_id: Any, status: str) -> bool:
    return (await db.signal(signal_id))["status"] == status
