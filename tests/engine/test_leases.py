"""The engine and its leases, in process, on the real PostgreSQL with the real sandbox.

Another engine is played by the test with the engine functions themselves, as another engine
calls them (reclaim_expired_leases, claim_signals, finish_signal); a dead engine is one whose
claims were made a while ago and never renewed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
import structlog

from tests.support.engine import SPIN, Db, python_step, running_engine
from tests.support.waiting import wait_for

FIRST = python_step("first", "return input")
ECHO = python_step("echo", "return input")


@pytest.fixture
def captured_logs() -> Iterator[list[dict[str, Any]]]:
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture.entries
    finally:
        structlog.reset_defaults()


def _lines(logs: list[dict[str, Any]], event: str, signal_id: UUID) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == event and e.get("signal_id") == str(signal_id)]


async def _inside_its_second_step(db: Db, signal_id: UUID) -> bool:
    report = await db.signal(signal_id)
    session = report.get("session") or {}
    return report["status"] == "processing" and len(session.get("step_results", [])) == 1


async def _sessions(db: Db, signal_id: UUID) -> list[dict[str, Any]]:
    return await db.rows(
        "select r.id, r.attempt, r.status, r.error, r.worker_id, r.output,"
        " (select array_agg(x.step_name order by x.position) from public.step_results x"
        "   where x.session_id = r.id) as steps"
        " from public.runtime_sessions r where r.signal_id = %s order by r.attempt",
        signal_id,
    )


async def _take_over(db: Db, signal_id: UUID, thief: str) -> None:
    """What another engine does once this engine's lease has run out: its sweep reclaims the
    signal (ending the attempt's session in error) and its claim takes it, opening a session
    of its own. One transaction, so this engine's own sweep cannot reclaim it in between."""
    async with db.conn.transaction():
        await db.conn.execute(
            "update public.signals set lease_expires_at = clock_timestamp() - interval '1 second'"
            " where id = %s",
            (signal_id,),
        )
        reclaimed = await db.rows("select * from public.reclaim_expired_leases()")
        claimed = await db.rows("select id from public.claim_signals(p_worker_id => %s)", thief)
    assert reclaimed == [{"signal_id": signal_id, "outcome": "pending"}]
    assert [row["id"] for row in claimed] == [signal_id]


@pytest.mark.parametrize(
    ("noticed_by", "lease_seconds", "spin_seconds"),
    [
        # Renewals every second find the lease gone while the 30 s step still runs.
        ("heartbeat", 3, 30),
        # The next renewal is 20 s away: the step ends first and writing its result fails.
        ("write", 60, 2),
    ],
)
async def test_a_run_whose_lease_another_engine_took_stops_and_the_other_engine_finishes_it(
    database_url: str,
    captured_logs: list[dict[str, Any]],
    noticed_by: str,
    lease_seconds: int,
    spin_seconds: int,
) -> None:
    async with (
        Db(database_url) as db,
        running_engine(database_url, lease_seconds=lease_seconds, worker_id="slow") as running,
    ):
        agent = await db.apply("contested", [FIRST, SPIN])
        signal_id = await db.send(agent, {"seconds": spin_seconds})
        await wait_for(lambda: _inside_its_second_step(db, signal_id), what="the slow step")
        first_session = (await db.signal(signal_id))["runtime_session_id"]

        await _take_over(db, signal_id, thief="thief")
        await wait_for(
            lambda: asyncio.sleep(0, _lines(captured_logs, "lease_lost", signal_id)),
            timeout=10,
            what="the engine to notice",
        )
        await db.rows(
            "select * from public.finish_signal(p_signal_id => %s, p_worker_id => 'thief',"
            ' p_output => \'{"by": "thief"}\')',
            signal_id,
        )
        # The engine goes on: the agent's next signal is this engine's to run.
        after = await db.send(agent, {"seconds": 0})
        next_run = await wait_for(lambda: db.finished(after), what="the agent's next run")
        report = await db.signal(signal_id)
        sessions = await _sessions(db, signal_id)
        counters = running.engine.runner.counters
        sandbox = running.engine.sandbox.stats()

    (lost,) = _lines(captured_logs, "lease_lost", signal_id)
    assert lost["noticed_by"] == noticed_by
    assert (lost["agent_id"], lost["session_id"]) == (str(agent), first_session)
    if noticed_by == "write":
        assert "no longer holds signal" in lost["error"]
    else:
        # The sandbox worker running the step was stopped, not left spinning for 30 s.
        assert sandbox.get("retired_cancelled") == 1
    # Finished once, by the engine that took it over; this engine's run ended nothing.
    assert report["status"] == "complete" and report["worker_id"] == "thief"
    assert report["attempts"] == 2
    assert [(s["attempt"], s["worker_id"], s["status"], s["steps"]) for s in sessions] == [
        (1, "slow", "error", ["first"]),
        (2, "thief", "success", None),
    ]
    assert "worker slow stopped renewing its lease during attempt 1" in sessions[0]["error"]
    assert sessions[1]["output"] == {"by": "thief"}
    for event in ("run_succeeded", "run_failed", "signal_processing_crashed"):
        assert not _lines(captured_logs, event, signal_id), event
    assert len(_lines(captured_logs, "step_finished", signal_id)) == 1  # "first" only
    assert next_run["status"] == "complete" and next_run["worker_id"] == "slow"
    assert counters.runs_succeeded == 1 and counters.runs_failed == 0


async def test_a_run_this_engine_reclaimed_from_itself_is_replaced_not_run_twice(
    database_url: str, captured_logs: list[dict[str, Any]]
) -> None:
    """The engine's lease ran out under its own run (as after a stall longer than the lease):
    its own sweep reclaims the signal and claims it again. The stale run must stop; the new
    one runs the agent as it is now."""
    async with (
        Db(database_url) as db,
        running_engine(database_url, lease_seconds=60, worker_id="stalled") as running,
    ):
        agent = await db.apply("stalling", [FIRST, SPIN])
        signal_id = await db.send(agent, {"seconds": 30})
        await wait_for(lambda: _inside_its_second_step(db, signal_id), what="the slow step")
        first_session = (await db.signal(signal_id))["runtime_session_id"]
        # The next attempt need not spin for 30 s to show it replaced the first. The sweep that
        # reclaims the signal reloads edited agents first, so the new claim runs this version.
        await db.apply("stalling", [ECHO])
        await db.conn.execute(
            "update public.signals set lease_expires_at = clock_timestamp() - interval '1 second'"
            " where id = %s",
            (signal_id,),
        )
        report = await wait_for(lambda: db.finished(signal_id), what="the second attempt")
        sessions = await _sessions(db, signal_id)
        sandbox = running.engine.sandbox.stats()
        counters = running.engine.runner.counters

    reclaimed = _reclaims(captured_logs, signal_id)
    assert reclaimed == ["pending"]
    (lost,) = _lines(captured_logs, "lease_lost", signal_id)
    assert lost["noticed_by"] == "reclaim"
    assert (lost["agent_id"], lost["session_id"]) == (str(agent), first_session)
    assert sandbox.get("retired_cancelled") == 1  # the stale 30 s step was stopped
    assert report["status"] == "complete" and report["attempts"] == 2
    assert [(s["attempt"], s["worker_id"], s["status"], s["steps"]) for s in sessions] == [
        (1, "stalled", "error", ["first"]),
        (2, "stalled", "success", ["echo"]),
    ]
    assert counters.runs_succeeded == 1 and counters.runs_failed == 0


def _reclaims(logs: list[dict[str, Any]], signal_id: UUID) -> list[str]:
    return [
        e["outcome"]
        for e in logs
        if e["event"] == "lease_expired_signal_reclaimed"
        and e["reclaimed_signal_id"] == str(signal_id)
    ]


async def _claimed_by_a_dead_engine(db: Db, worker: str) -> list[UUID]:
    """A claim made a minute ago by an engine that then died: its 1 s lease ran out long ago."""
    rows = await db.rows(
        "select id from public.claim_signals(p_worker_id => %s, p_lease_seconds => 1,"
        " p_now => clock_timestamp() - interval '1 minute')",
        worker,
    )
    return [row["id"] for row in rows]


async def test_a_signal_whose_engines_keep_dying_ends_in_error_at_max_attempts(
    database_url: str, captured_logs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORTICO_MAX_ATTEMPTS", "2")
    async with Db(database_url) as db:
        doomed_agent = await db.apply("doomed", [ECHO])
        doomed = await db.send(doomed_agent, {"n": 1})
        assert await _claimed_by_a_dead_engine(db, "crashed-1") == [doomed]
        await db.rows("select * from public.reclaim_expired_leases(p_max_attempts => 2)")
        assert await _claimed_by_a_dead_engine(db, "crashed-2") == [doomed]
        # Another agent's signal, one attempt below the cap.
        lucky_agent = await db.apply("lucky", [ECHO])
        lucky = await db.send(lucky_agent, {"n": 2})
        assert await _claimed_by_a_dead_engine(db, "crashed-3") == [lucky]

        async with running_engine(database_url, worker_id="rescuer") as running:
            assert running.engine.settings.max_attempts == 2
            failed = await wait_for(lambda: db.finished(doomed), what="the doomed signal")
            rescued = await wait_for(lambda: db.finished(lucky), what="the lucky signal")
            counters = running.engine.runner.counters
        doomed_sessions = await _sessions(db, doomed)
        lucky_sessions = await _sessions(db, lucky)

    assert failed["status"] == "error" and failed["attempts"] == 2
    assert failed["error"].startswith(
        "gave up after 2 attempts: each time, the worker running it stopped renewing its lease"
        " (last worker: crashed-2)"
    )
    assert "send the signal again" in failed["error"]
    # The engine never ran it: no session of its own, no step results.
    assert [(s["worker_id"], s["status"], s["steps"]) for s in doomed_sessions] == [
        ("crashed-1", "error", None),
        ("crashed-2", "error", None),
    ]
    assert _reclaims(captured_logs, doomed) == ["error"]
    # Below the cap, the same sweep requeued the signal and the engine ran it.
    assert rescued["status"] == "complete" and rescued["attempts"] == 2
    assert [(s["worker_id"], s["status"], s["steps"]) for s in lucky_sessions] == [
        ("crashed-3", "error", None),
        ("rescuer", "success", ["echo"]),
    ]
    assert _reclaims(captured_logs, lucky) == ["pending"]
    assert counters.runs_succeeded == 1 and counters.runs_failed == 0
