"""The engine end to end, in process, on the real PostgreSQL with the real sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any
from uuid import UUID

import structlog

from engine import models
from engine.steps.base import StepContext, StepOutcome
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


class MisbehavingStep:
    """A double for the `llm` step executor that breaks the executor contract on purpose, so
    the engine's own failure paths log: with input {"mode": "raise"} it raises; otherwise it
    returns an output that is not JSON, which the engine then cannot record."""

    async def execute(
        self, step: models.Step, step_input: models.JsonValue, context: StepContext
    ) -> StepOutcome:
        if isinstance(step_input, dict) and step_input.get("mode") == "raise":
            raise RuntimeError("executor bug")
        return StepOutcome(output={"not": {"json"}})  # type: ignore[dict-item]


MISBEHAVING = {
    "name": "misbehave",
    "type": "llm",
    "config": {"prompt_template": "{{ input }}", "model": "openai/gpt-4o-mini"},
}


def _tag_task(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Record which asyncio task logged the line: the engine runs each signal in a task of its
    own, so a line from that task belongs to that run whatever fields it has."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    event_dict["_task"] = task.get_name() if task is not None else None
    return event_dict


async def test_every_log_line_of_a_run_carries_signal_agent_and_session(database_url: str) -> None:
    """Runs that succeed, fail in a step, crash in their step executor and crash the engine's
    processing (a result it cannot record) run at once; every line logged by a run's task, or
    naming its signal, carries that run's three ids and no other run's. The `llm` executor is
    a double (MisbehavingStep); the python steps run in the real sandbox."""
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, _tag_task, capture])
    expected = {
        "succeeds": (
            {"n": 1},
            [ADD_ONE, DOUBLE],
            {"run_started", "step_finished", "run_succeeded"},
        ),
        "fails": (
            {"n": 1},
            [python_step("boom", "raise ValueError('no')")],
            {"run_started", "step_finished", "run_failed"},
        ),
        "executor-raises": (
            {"mode": "raise"},
            [MISBEHAVING],
            {"run_started", "step_executor_crashed", "step_finished", "run_failed"},
        ),
        "cannot-record": (
            {"mode": "not-json"},
            [MISBEHAVING],
            {"run_started", "signal_processing_crashed"},
        ),
    }
    runs: dict[str, tuple[UUID, UUID, str]] = {}
    try:
        async with Db(database_url) as db:
            agents = {name: await db.apply(name, steps) for name, (_, steps, _) in expected.items()}
            # A long lease: the crashed run must not be reclaimed and retried during the test.
            async with running_engine(
                database_url, executors={"llm": MisbehavingStep()}, lease_seconds=120
            ):
                sent = {
                    name: await db.send(agents[name], payload)
                    for name, (payload, _, _) in expected.items()
                }
                for name, signal_id in sent.items():
                    if name != "cannot-record":
                        await wait_for(lambda s=signal_id: db.finished(s), what=name)
                crashed = str(sent["cannot-record"])
                await wait_for(
                    lambda: asyncio.sleep(
                        0,
                        any(
                            e["event"] == "signal_processing_crashed"
                            and e.get("signal_id") == crashed
                            for e in capture.entries
                        ),
                    ),
                    what="the crash",
                )
            for name, signal_id in sent.items():
                session = (await db.signal(signal_id))["runtime_session_id"]
                runs[name] = (signal_id, agents[name], session)
    finally:
        structlog.reset_defaults()

    for name, (signal_id, agent_id, session_id) in runs.items():
        lines = [
            e
            for e in capture.entries
            if e["_task"] == f"signal-{signal_id}" or e.get("signal_id") == str(signal_id)
        ]
        events = {e["event"] for e in lines}
        assert events >= expected[name][2], (name, events)
        for line in lines:
            ids = (line.get("signal_id"), line.get("agent_id"), line.get("session_id"))
            assert ids == (str(signal_id), str(agent_id), session_id), (name, line)
    step_lines = [e for e in capture.entries if e["event"] == "step_finished"]
    assert len(step_lines) == 4  # two, one, one; the unrecordable step never finished


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
