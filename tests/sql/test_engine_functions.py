"""The engine's SQL functions, called as service_role: leases, sessions, step results,
reclaim and release, the config epoch, apply_agent, agent_definition, and wake-ups."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import errors
from psycopg.types.json import Jsonb

from tests.support.sql import (
    Conn,
    Engine,
    add_step,
    config_epoch,
    connect,
    create_agent,
    send_signal,
    signal_row,
)


@pytest.fixture
def agent_id(admin: Conn) -> uuid.UUID:
    agent = create_agent(admin, name="engine")
    add_step(admin, agent, 0)
    return agent


def _db_now(conn: Conn) -> datetime:
    row = conn.execute("select now() as t").fetchone()
    assert row is not None
    return row["t"]


def _session(admin: Conn, session_id: uuid.UUID) -> dict[str, Any]:
    row = admin.execute(
        "select * from public.runtime_sessions where id = %s", (session_id,)
    ).fetchone()
    assert row is not None
    return dict(row)


def _results(admin: Conn, session_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = admin.execute(
        "select * from public.step_results where session_id = %s order by position",
        (session_id,),
    ).fetchall()
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# Leases
# ---------------------------------------------------------------------------------------------


def test_renew_leases_extends_and_returns_only_the_leases_the_worker_holds(
    admin: Conn, engine: Engine
) -> None:
    mine = send_signal(admin, create_agent(admin))
    theirs = send_signal(admin, create_agent(admin))
    finished = send_signal(admin, create_agent(admin))
    engine.claim("w1", limit=1)
    engine.claim("w2", limit=1)
    engine.claim("w1", limit=1)
    engine.finish(finished, "w1")
    before = {s: signal_row(admin, s)["lease_expires_at"] for s in (mine, theirs)}

    held = engine.renew("w1", [mine, theirs, finished, uuid.uuid4()], lease_seconds=300)

    assert held == {mine}
    assert signal_row(admin, mine)["lease_expires_at"] > before[mine] + timedelta(seconds=200)
    assert signal_row(admin, theirs)["lease_expires_at"] == before[theirs]
    assert signal_row(admin, finished)["lease_expires_at"] is None


def _record(engine: Engine, signal_id: uuid.UUID, session_id: uuid.UUID) -> object:
    del signal_id
    return engine.record_step(session_id, "w1", 1, output=1)


def _finish(engine: Engine, signal_id: uuid.UUID, session_id: uuid.UUID) -> object:
    del session_id
    return engine.finish(signal_id, "w1")


ENGINE_WRITES: dict[str, Callable[[Engine, uuid.UUID, uuid.UUID], object]] = {
    "record_step_result": _record,
    "finish_signal": _finish,
}


@pytest.mark.parametrize("call", list(ENGINE_WRITES.values()), ids=list(ENGINE_WRITES))
@pytest.mark.parametrize("lost_by", ["reclaimed_and_claimed_by_another", "released", "finished"])
def test_worker_that_no_longer_holds_its_signal_gets_pt409(
    admin: Conn,
    engine: Engine,
    agent_id: uuid.UUID,
    call: Callable[[Engine, uuid.UUID, uuid.UUID], object],
    lost_by: str,
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    if lost_by == "reclaimed_and_claimed_by_another":
        engine.reclaim(now=_db_now(admin) + timedelta(minutes=5))
        engine.claim("w2")
    elif lost_by == "released":
        engine.release("w1", [signal_id])
    else:
        engine.finish(signal_id, "w1")
    status_before = signal_row(admin, signal_id)["status"]

    with pytest.raises(psycopg.Error) as exc:
        call(engine, signal_id, session["id"])

    assert exc.value.sqlstate == "PT409", str(exc.value)
    assert f"worker w1 no longer holds signal {signal_id}" in str(exc.value.diag.message_primary)
    assert "stop working on it" in str(exc.value.diag.message_hint)
    assert signal_row(admin, signal_id)["status"] == status_before


def test_engine_functions_name_a_missing_signal_or_session_with_pt404(engine: Engine) -> None:
    missing = uuid.uuid4()
    with pytest.raises(psycopg.Error) as exc:
        engine.finish(missing, "w1")
    assert exc.value.sqlstate == "PT404" and str(missing) in str(exc.value)
    with pytest.raises(psycopg.Error) as exc:
        engine.record_step(missing, "w1", 0)
    assert exc.value.sqlstate == "PT404" and str(missing) in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Sessions and step results
# ---------------------------------------------------------------------------------------------


def test_claiming_a_run_opens_its_running_session_and_links_it(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    [claimed] = engine.claim("w1")
    session = engine.session_of(signal_id)

    assert claimed["runtime_session_id"] == session["id"]
    assert session["status"] == "running" and session["completed_at"] is None
    assert (session["signal_id"], session["agent_id"]) == (signal_id, agent_id)
    assert (session["attempt"], session["worker_id"]) == (1, "w1")
    assert session["started_at"] == claimed["claimed_at"]


def test_claiming_sync_and_fyi_signals_opens_no_session(admin: Conn, engine: Engine) -> None:
    ids = {send_signal(admin, None, type=kind) for kind in ("sync", "fyi")}
    claimed = engine.claim("w1")

    assert {row["id"] for row in claimed} == ids
    assert all(row["runtime_session_id"] is None for row in claimed)
    assert admin.execute("select count(*) as n from public.runtime_sessions").fetchone() == {"n": 0}


def test_record_step_result_derives_status_and_duration(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    started = datetime.fromisoformat("2030-01-01T00:00:00+00:00")
    row = engine.conn.execute(
        "select * from public.record_step_result(p_session_id => %s, p_worker_id => 'w1',"
        " p_position => 0, p_step_id => null, p_step_name => 'parse', p_step_type => 'python',"
        " p_input => %s, p_output => %s, p_error => %s, p_started_at => %s,"
        " p_completed_at => %s, p_logs => 'printed', p_metadata => %s)",
        (
            session["id"],
            Jsonb({"in": 1}),
            Jsonb({"ignored": True}),
            "ValueError: bad",
            started,
            started + timedelta(milliseconds=1234),
            Jsonb({"k": "v"}),
        ),
    ).fetchone()

    assert row is not None
    assert (row["status"], row["error"], row["output"]) == ("error", "ValueError: bad", None)
    assert row["duration_ms"] == 1234
    assert (row["input"], row["logs"], row["metadata"]) == ({"in": 1}, "printed", {"k": "v"})


def test_finish_with_error_keeps_the_earlier_step_results(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id, payload=1)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 0, step_input=1, output=2)
    engine.record_step(session["id"], "w1", 1, step_input=2, output=3)
    engine.record_step(session["id"], "w1", 2, step_input=3, error="ZeroDivisionError")

    finished = engine.finish(signal_id, "w1", error='step "step-2" failed: ZeroDivisionError')

    assert finished["status"] == "error"
    ended = _session(admin, session["id"])
    assert (ended["status"], ended["output"]) == ("error", None)
    assert ended["error"] == 'step "step-2" failed: ZeroDivisionError'
    results = _results(admin, session["id"])
    assert [(r["status"], r["output"]) for r in results] == [
        ("success", 2),
        ("success", 3),
        ("error", None),
    ]


def test_the_last_step_result_can_end_the_run_in_the_same_transaction(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id, payload=1)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 0, step_input=1, output=2)
    assert signal_row(admin, signal_id)["status"] == "processing", "only finish ends the run"
    engine.record_step(session["id"], "w1", 1, step_input=2, output={"n": 3}, finish=True)

    row = signal_row(admin, signal_id)
    assert (row["status"], row["error"], row["lease_expires_at"]) == ("complete", None, None)
    ended = _session(admin, session["id"])
    assert (ended["status"], ended["output"], ended["error"]) == ("success", {"n": 3}, None)
    assert ended["completed_at"] == row["completed_at"]


def test_a_failing_step_result_ends_the_run_naming_the_step_by_its_number_in_the_run(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id, payload=1)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    # Positions need not be consecutive; the message counts steps as they ran.
    engine.record_step(session["id"], "w1", 10, step_input=1, output=2)
    engine.record_step(session["id"], "w1", 20, step_input=2, error="KeyError: 'sku'", finish=True)

    message = "step 2 \"step-20\" (python) failed: KeyError: 'sku'"
    row = signal_row(admin, signal_id)
    assert (row["status"], row["error"]) == ("error", message)
    ended = _session(admin, session["id"])
    assert (ended["status"], ended["error"], ended["output"]) == ("error", message, None)
    results = _results(admin, session["id"])
    assert [(r["status"], r["output"]) for r in results] == [("success", 2), ("error", None)]
    with pytest.raises(psycopg.Error) as exc:
        engine.record_step(session["id"], "w1", 30, output=3)
    assert exc.value.sqlstate == "PT409", "an ended run takes no more results"


def test_one_result_per_step_position_per_session(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 0, output=1)
    with pytest.raises(errors.UniqueViolation) as exc:
        engine.record_step(session["id"], "w1", 0, output=2)
    assert exc.value.diag.constraint_name == "step_results_one_per_position"


# ---------------------------------------------------------------------------------------------
# Reclaim and release
# ---------------------------------------------------------------------------------------------


def test_reclaim_leaves_unexpired_leases_alone(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1", lease_seconds=60)
    assert engine.reclaim(now=_db_now(admin) + timedelta(seconds=30)) == {}
    assert signal_row(admin, signal_id)["status"] == "processing"


def test_reclaim_requeues_an_expired_lease_and_counts_the_attempt(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    later = send_signal(admin, agent_id)
    engine.claim("w1", lease_seconds=30)
    session = engine.session_of(signal_id)

    assert engine.reclaim(now=_db_now(admin) + timedelta(seconds=31)) == {signal_id: "pending"}

    row = signal_row(admin, signal_id)
    assert (row["status"], row["attempts"], row["error"]) == ("pending", 1, None)
    ended = _session(admin, session["id"])
    assert ended["status"] == "error"
    assert "w1 stopped renewing its lease during attempt 1" in ended["error"]
    [again] = engine.claim("w2")
    assert (again["id"], again["attempts"]) == (signal_id, 2), "the queue head must run first"
    second = engine.session_of(signal_id)
    assert second["attempt"] == 2 and second["id"] != session["id"]
    assert later not in {r["id"] for r in engine.claim("w3")}


def test_reclaim_gives_up_after_max_attempts_saying_so(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    outcomes = []
    for attempt in range(1, 4):
        [claimed] = engine.claim(f"w{attempt}", lease_seconds=1)
        assert claimed["attempts"] == attempt
        engine.session_of(signal_id)
        outcomes.append(
            engine.reclaim(max_attempts=3, now=_db_now(admin) + timedelta(minutes=1))[signal_id]
        )

    assert outcomes == ["pending", "pending", "error"]
    row = signal_row(admin, signal_id)
    assert row["status"] == "error" and row["completed_at"] is not None
    assert "gave up after 3 attempts" in row["error"]
    assert "w3" in row["error"]
    assert engine.claim("w4") == []
    sessions = admin.execute(
        "select attempt, status from public.runtime_sessions where signal_id = %s order by 1",
        (signal_id,),
    ).fetchall()
    assert sessions == [{"attempt": n, "status": "error"} for n in (1, 2, 3)]


def test_release_requeues_at_once_and_refunds_the_attempt(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    other = send_signal(admin, create_agent(admin))
    engine.claim("w1", limit=1)
    engine.claim("w2", limit=1)
    session = engine.session_of(signal_id)

    assert engine.release("w1", [signal_id, other]) == [signal_id]

    row = signal_row(admin, signal_id)
    assert (row["status"], row["attempts"]) == ("pending", 0)
    assert signal_row(admin, other)["status"] == "processing"
    ended = _session(admin, session["id"])
    assert ended["status"] == "error" and "w1 stopped before this run finished" in ended["error"]
    [again] = engine.claim("w3")
    assert (again["id"], again["attempts"]) == (signal_id, 1)
    # The refunded attempt number is taken again, yet the released run keeps its session.
    rerun = engine.session_of(signal_id)
    assert rerun["id"] != session["id"] and rerun["status"] == "running"
    assert _session(admin, session["id"])["status"] == "error"


# ---------------------------------------------------------------------------------------------
# Config epoch
# ---------------------------------------------------------------------------------------------


def test_finished_sync_bumps_the_config_epoch_and_fyi_does_not(admin: Conn, engine: Engine) -> None:
    sync, fyi = send_signal(admin, None, type="sync"), send_signal(admin, None, type="fyi")
    engine.claim("w1")
    start = config_epoch(admin)
    engine.finish(fyi, "w1")
    assert config_epoch(admin) == start
    engine.finish(sync, "w1")
    assert config_epoch(admin) == start + 1
    row = engine.conn.execute("select public.config_epoch() as e").fetchone()
    assert row == {"e": start + 1}


def test_failed_sync_does_not_bump_the_config_epoch(admin: Conn, engine: Engine) -> None:
    sync = send_signal(admin, None, type="sync")
    engine.claim("w1")
    start = config_epoch(admin)
    engine.finish(sync, "w1", error="reload failed")
    assert config_epoch(admin) == start


def test_every_agent_and_step_edit_bumps_the_config_epoch(admin: Conn) -> None:
    edits: list[Callable[[], object]] = []
    state: dict[str, uuid.UUID] = {}
    edits.append(lambda: state.update(agent=create_agent(admin)))
    edits.append(
        lambda: admin.execute(
            "update public.agents set is_active = false where id = %s", (state["agent"],)
        )
    )
    edits.append(lambda: state.update(step=add_step(admin, state["agent"], 0)))
    edits.append(
        lambda: admin.execute(
            "update public.steps set name = 'renamed' where id = %s", (state["step"],)
        )
    )
    edits.append(lambda: admin.execute("delete from public.steps where id = %s", (state["step"],)))
    edits.append(
        lambda: admin.execute("delete from public.agents where id = %s", (state["agent"],))
    )

    epochs = [config_epoch(admin)]
    for edit in edits:
        edit()
        epochs.append(config_epoch(admin))
    assert all(b > a for a, b in itertools.pairwise(epochs)), epochs


# ---------------------------------------------------------------------------------------------
# apply_agent, agent_definition, signal_report
# ---------------------------------------------------------------------------------------------


def _apply(engine: Engine, definition: dict[str, Any]) -> uuid.UUID:
    row = engine.conn.execute(
        "select public.apply_agent(%s) as id", (Jsonb(definition),)
    ).fetchone()
    assert row is not None
    return row["id"]


def _definition(engine: Engine, agent: uuid.UUID) -> Any:
    row = engine.conn.execute("select public.agent_definition(%s) as d", (agent,)).fetchone()
    assert row is not None
    return row["d"]


def _py(name: str) -> dict[str, Any]:
    return {"name": name, "type": "python", "config": {"code": f"return '{name}'"}}


def test_apply_agent_upserts_by_name_and_replaces_the_steps(engine: Engine) -> None:
    first = _apply(engine, {"name": "triage", "description": "v1", "steps": [_py("a"), _py("b")]})
    second = _apply(
        engine, {"name": "triage", "description": "v2", "is_active": False, "steps": [_py("c")]}
    )

    assert second == first
    definition = _definition(engine, first)
    assert (definition["description"], definition["is_active"]) == ("v2", False)
    assert [(s["name"], s["position"]) for s in definition["steps"]] == [("c", 0)]
    row = engine.conn.execute("select count(*) as n from public.agents").fetchone()
    assert row == {"n": 1}


def test_apply_agent_keeps_owners_agents_apart_from_shared_ones(
    engine: Engine, user_a: uuid.UUID
) -> None:
    shared = _apply(engine, {"name": "triage", "steps": []})
    owned = _apply(engine, {"name": "triage", "owner_id": str(user_a), "steps": [_py("x")]})
    assert owned != shared
    assert _definition(engine, owned)["owner_id"] == str(user_a)
    assert _definition(engine, shared)["owner_id"] is None


def test_apply_agent_is_all_or_nothing(engine: Engine) -> None:
    agent = _apply(engine, {"name": "triage", "description": "v1", "steps": [_py("a")]})
    bad = {"name": "x", "type": "python", "config": {"code": ""}}
    with pytest.raises(errors.CheckViolation) as exc:
        _apply(engine, {"name": "triage", "description": "v2", "steps": [_py("b"), bad]})
    assert exc.value.diag.constraint_name == "steps_config_valid"
    definition = _definition(engine, agent)
    assert definition["description"] == "v1"
    assert [s["name"] for s in definition["steps"]] == ["a"]


def test_apply_agent_refuses_steps_that_are_not_a_list(engine: Engine) -> None:
    with pytest.raises(errors.InvalidParameterValue) as exc:
        _apply(engine, {"name": "triage", "steps": {"a": 1}})
    assert 'agent "triage": steps must be a list' in str(exc.value)


def test_agent_definition_lists_steps_in_position_order(admin: Conn, engine: Engine) -> None:
    agent = create_agent(admin, name="ordered", description="d")
    for position, name in [(2, "third"), (0, "first"), (1, "second")]:
        add_step(admin, agent, position, name=name)

    definition = _definition(engine, agent)

    assert (definition["id"], definition["name"]) == (str(agent), "ordered")
    assert [s["name"] for s in definition["steps"]] == ["first", "second", "third"]
    assert _definition(engine, uuid.uuid4()) is None


def test_signal_report_holds_the_session_and_its_results_in_order(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 1, output="b")
    engine.record_step(session["id"], "w1", 0, output="a")
    engine.finish(signal_id, "w1", output="b")

    row = engine.conn.execute("select public.signal_report(%s) as r", (signal_id,)).fetchone()

    assert row is not None
    report = row["r"]
    assert (report["status"], report["agent_name"]) == ("complete", "engine")
    assert report["session"]["status"] == "success"
    assert [r["output"] for r in report["session"]["step_results"]] == ["a", "b"]


def test_deleting_an_agent_removes_its_signals_and_runs(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 0, output=1)
    engine.finish(signal_id, "w1")
    send_signal(admin, agent_id)

    admin.execute("delete from public.agents where id = %s", (agent_id,))

    counts = admin.execute(
        "select (select count(*) from public.signals) as signals,"
        " (select count(*) from public.runtime_sessions) as sessions,"
        " (select count(*) from public.step_results) as results"
    ).fetchone()
    assert counts == {"signals": 0, "sessions": 0, "results": 0}


# ---------------------------------------------------------------------------------------------
# Wake-ups
# ---------------------------------------------------------------------------------------------


def test_inserting_a_signal_notifies_portico_signals_with_its_id(
    any_database_url: str, admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    with connect(any_database_url) as listener:
        listener.execute("listen portico_signals")
        signal_id = send_signal(admin, agent_id)
        inserted = list(listener.notifies(timeout=5, stop_after=1))
        engine.claim("w1")
        engine.finish(signal_id, "w1")
        finished = list(listener.notifies(timeout=5, stop_after=1))

    assert [(n.channel, n.payload) for n in inserted] == [("portico_signals", str(signal_id))]
    # Leaving processing frees the agent's queue, so it wakes the engines too.
    assert [n.payload for n in finished] == [str(signal_id)]


def test_a_claim_sends_no_wakeup(
    any_database_url: str, admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    send_signal(admin, agent_id)
    with connect(any_database_url) as listener:
        listener.execute("listen portico_signals")
        engine.claim("w1")
        marker = send_signal(admin, None, type="fyi")
        received = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert received == [str(marker)]
