"""The engine end to end, in process, on the real PostgreSQL with the real sandbox."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from engine.transports.base import WakeupHandler
from engine.transports.postgres import PostgresTransport
from tests.support.engine import Db, python_step, running_engine
from tests.support.waiting import wait_for

ADD_ONE = python_step("add-one", "return {'n': input['n'] + 1}")
DOUBLE = python_step("double", "return {'n': input['n'] * 2}")


async def test_multi_step_agent_passes_each_output_to_the_next_step(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url):
        agent = await db.apply(
            "math",
            [
                ADD_ONE,
                DOUBLE,
                python_step("describe", "print('n is', input['n'])\nreturn f\"n={input['n']}\""),
            ],
        )
        signal_id = await db.send(agent, {"n": 4})
        report = await wait_for(lambda: db.finished(signal_id), what="run to finish")

    assert report["status"] == "complete" and report["error"] is None
    session = report["session"]
    assert session["status"] == "success" and session["output"] == "n=10"
    results = session["step_results"]
    assert [(r["step_name"], r["input"], r["output"]) for r in results] == [
        ("add-one", {"n": 4}, {"n": 5}),
        ("double", {"n": 5}, {"n": 10}),
        ("describe", {"n": 10}, "n=10"),
    ]
    assert results[2]["logs"] == "n is 10\n"
    assert all(r["duration_ms"] >= 0 and r["completed_at"] >= r["started_at"] for r in results)


async def test_failing_step_halts_the_run_and_frees_the_agent_queue(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url):
        agent = await db.apply(
            "fragile",
            [
                ADD_ONE,
                python_step(
                    "check", "if input['n'] > 3:\n    raise ValueError('n too big')\nreturn input"
                ),
                DOUBLE,
            ],
        )
        failing = await db.send(agent, {"n": 5})
        after = await db.send(agent, {"n": 1})
        failed = await wait_for(lambda: db.finished(failing), what="failing run")
        passed = await wait_for(lambda: db.finished(after), what="next run of the same agent")

    assert failed["status"] == "error"
    assert failed["error"].startswith('step 2 "check" (python) failed: ValueError: n too big')
    assert "line 2" in failed["error"]
    session = failed["session"]
    assert session["status"] == "error" and session["error"] == failed["error"]
    assert [(r["step_name"], r["status"]) for r in session["step_results"]] == [
        ("add-one", "success"),
        ("check", "error"),
    ]
    assert session["step_results"][1]["output"] is None
    assert passed["status"] == "complete" and passed["session"]["output"] == {"n": 4}


async def test_agent_without_steps_completes_with_its_payload(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url):
        agent = await db.apply("empty", [])
        signal_id = await db.send(agent, {"keep": ["me"]})
        report = await wait_for(lambda: db.finished(signal_id), what="run")
    assert report["status"] == "complete"
    assert report["session"]["output"] == {"keep": ["me"]}
    assert report["session"]["step_results"] == []


async def test_inactive_agent_signals_wait_in_order_and_run_when_active(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url) as running:
        agent = await db.apply("sleepy", [python_step("echo", "return input")], is_active=False)
        ids = [await db.send(agent, {"i": i}) for i in range(3)]
        other = await db.apply("awake", [python_step("echo", "return input")])
        control = await db.send(other, {})
        await wait_for(lambda: db.finished(control), what="another agent's run")
        await wait_for(
            lambda: asyncio.sleep(0, running.engine.worker.idle.is_set()), what="engine idle"
        )
        waiting = await db.rows("select status from public.signals where agent_id = %s", agent)
        assert [r["status"] for r in waiting] == ["pending"] * 3

        await db.conn.execute("update public.agents set is_active = true where id = %s", (agent,))
        reports = [await wait_for(lambda s=s: db.finished(s), what="queued run") for s in ids]

    assert [r["status"] for r in reports] == ["complete"] * 3
    starts = [r["session"]["started_at"] for r in reports]
    assert starts == sorted(starts)


async def test_sync_and_fyi_complete_without_an_agent(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url) as running:
        epoch_before = (await db.rows("select public.config_epoch() as e"))[0]["e"]
        sync = await db.send(None, {}, type="sync")
        fyi = await db.send(None, {"note": "deploy finished"}, type="fyi")
        sync_report = await wait_for(lambda: db.finished(sync), what="sync")
        fyi_report = await wait_for(lambda: db.finished(fyi), what="fyi")
        epoch_after = (await db.rows("select public.config_epoch() as e"))[0]["e"]
        counters = running.engine.runner.counters
    assert sync_report["status"] == fyi_report["status"] == "complete"
    assert sync_report["session"] is None and fyi_report["session"] is None
    assert epoch_after == epoch_before + 1
    assert counters.syncs == 1 and counters.fyi == 1


async def test_edited_agent_runs_its_new_steps(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url):
        agent = await db.apply("evolving", [python_step("v", "return 'v1'")])
        first = await db.send(agent)
        assert (await wait_for(lambda: db.finished(first)))["session"]["output"] == "v1"
        await db.apply("evolving", [python_step("v", "return 'v2'")])
        second = await db.send(agent)
        assert (await wait_for(lambda: db.finished(second)))["session"]["output"] == "v2"


class DeafTransport(PostgresTransport):
    """Drops every notification: only the periodic sweep can find work."""

    async def listen(self, on_wakeup: WakeupHandler) -> None:
        await asyncio.Event().wait()


async def test_without_notifications_the_sweep_still_claims(
    database_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr("engine.app.PostgresTransport", DeafTransport)
    async with Db(database_url) as db, running_engine(database_url, sweep_seconds=0.3):
        agent = await db.apply("quiet", [python_step("echo", "return input")])
        ids = [await db.send(agent, {"i": i}) for i in range(3)]
        reports = [await wait_for(lambda s=s: db.finished(s), timeout=10) for s in ids]
    assert [r["status"] for r in reports] == ["complete"] * 3


async def test_a_notification_wakes_the_engine_long_before_the_sweep(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url, sweep_seconds=60) as running:
        agent = await db.apply("prompt", [python_step("echo", "return input")])
        await wait_for(lambda: asyncio.sleep(0, running.engine.worker.idle.is_set()))
        signal_id = await db.send(agent, {})
        # Far below the 60 s sweep: only the NOTIFY can explain it.
        report = await wait_for(lambda: db.finished(signal_id), timeout=5, what="woken run")
    assert report["status"] == "complete"


async def test_bad_python_steps_fail_their_runs_and_the_engine_goes_on(database_url: str) -> None:
    cases = {
        "syntax": ("return (", "syntax error at line 1"),
        "forbidden": ("return input.__class__", "__class__"),
        "timeout": ("while True:\n    pass", "timed out after 300 ms"),
        "not-json": ("return {1, 2}", "output is not JSON"),
    }
    async with Db(database_url) as db, running_engine(database_url):
        sent = {}
        for name, (code, _) in cases.items():
            agent = await db.apply(name, [python_step("bad", code, timeout_ms=300)])
            sent[name] = await db.send(agent, {})
        healthy = await db.apply("healthy", [python_step("ok", "return 'fine'")])
        last = await db.send(healthy, {})
        reports = {n: await wait_for(lambda s=s: db.finished(s), what=n) for n, s in sent.items()}
        final = await wait_for(lambda: db.finished(last), what="healthy run")

    for name, (_, expected) in cases.items():
        assert reports[name]["status"] == "error", name
        assert expected in reports[name]["error"], (name, reports[name]["error"])
    assert final["status"] == "complete" and final["session"]["output"] == "fine"


async def test_every_log_line_of_a_run_carries_signal_agent_and_session(database_url: str) -> None:
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        async with Db(database_url) as db:
            agent = await db.apply("traced", [ADD_ONE, DOUBLE])
            async with running_engine(database_url):
                signal_id = await db.send(agent, {"n": 1})
                report = await wait_for(lambda: db.finished(signal_id))
    finally:
        structlog.reset_defaults()
    run_lines = [e for e in capture.entries if e.get("event") in {"step_finished", "run_succeeded"}]
    assert len(run_lines) == 3
    for line in run_lines:
        assert line["signal_id"] == str(signal_id)
        assert line["agent_id"] == str(agent)
        assert line["session_id"] == report["session"]["id"]


async def test_an_fyi_is_logged_with_its_payload_but_a_big_one_only_in_part(
    database_url: str,
) -> None:
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        async with Db(database_url) as db, running_engine(database_url):
            small = await db.send(None, {"event": "deployed"}, type="fyi")
            big = await db.send(None, {"blob": "x" * 50_000}, type="fyi")
            for signal_id in (small, big):
                await wait_for(lambda s=signal_id: db.finished(s), what="fyi")
    finally:
        structlog.reset_defaults()
    lines = {e["signal_id"]: e for e in capture.entries if e.get("event") == "fyi_received"}
    assert lines[str(small)]["payload"] == {"event": "deployed"}
    preview = lines[str(big)]["payload"]
    assert isinstance(preview, str) and len(preview) < 2100 and "characters in all" in preview
