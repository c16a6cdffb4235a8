"""Signal and session lifecycles: the engine's functions move rows along the seed's lifecycle,
direct UPDATEs outside it are refused, and updated_at is kept by a trigger."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.support.sql import (
    Conn,
    Engine,
    add_step,
    create_agent,
    send_signal,
    signal_row,
)


@pytest.fixture
def agent_id(admin: Conn) -> uuid.UUID:
    agent = create_agent(admin, name="lifecycle")
    add_step(admin, agent, 0)
    return agent


def _set_status(admin: Conn, signal_id: uuid.UUID, status: str) -> None:
    admin.execute("update public.signals set status = %s where id = %s", (status, signal_id))


def test_signal_goes_pending_processing_complete_through_the_engine(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id, payload={"n": 1})
    assert signal_row(admin, signal_id)["status"] == "pending"

    [claimed] = engine.claim("w1")
    assert (claimed["id"], claimed["status"]) == (signal_id, "processing")
    session = engine.session_of(signal_id)
    engine.record_step(session["id"], "w1", 0, step_input={"n": 1}, output={"n": 2})
    finished = engine.finish(signal_id, "w1", output={"n": 2})

    assert finished["status"] == "complete"
    assert finished["error"] is None and finished["completed_at"] is not None
    assert finished["lease_expires_at"] is None
    assert finished["runtime_session_id"] == session["id"]
    row = admin.execute(
        "select status, output, completed_at from public.runtime_sessions where id = %s",
        (session["id"],),
    ).fetchone()
    assert row is not None
    assert (row["status"], row["output"]) == ("success", {"n": 2})
    assert row["completed_at"] is not None


def test_signal_goes_pending_processing_error_through_the_engine(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    finished = engine.finish(signal_id, "w1", error='step "step-0" failed: ValueError: bad')

    assert (finished["status"], finished["error"]) == (
        "error",
        'step "step-0" failed: ValueError: bad',
    )
    row = admin.execute(
        "select status, error from public.runtime_sessions where id = %s", (session["id"],)
    ).fetchone()
    assert row == {"status": "error", "error": 'step "step-0" failed: ValueError: bad'}


TERMINAL_CHANGES = [
    (terminal, target)
    for terminal in ("complete", "error")
    for target in ("pending", "processing", "complete", "error")
    if target != terminal
]


@pytest.mark.parametrize(("terminal", "target"), TERMINAL_CHANGES)
def test_terminal_signal_never_changes_status(
    admin: Conn, engine: Engine, agent_id: uuid.UUID, terminal: str, target: str
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    engine.finish(signal_id, "w1", error="boom" if terminal == "error" else None)

    with pytest.raises(errors.CheckViolation) as exc:
        _set_status(admin, signal_id, target)
    assert exc.value.diag.constraint_name == "signals_status_lifecycle"
    assert f"cannot go from {terminal} to {target}" in str(exc.value.diag.message_primary)
    assert "final" in str(exc.value.diag.message_hint)
    assert signal_row(admin, signal_id)["status"] == terminal


@pytest.mark.parametrize("target", ["complete", "error"])
def test_pending_signal_cannot_skip_processing(
    admin: Conn, agent_id: uuid.UUID, target: str
) -> None:
    signal_id = send_signal(admin, agent_id)
    with pytest.raises(errors.CheckViolation) as exc:
        admin.execute(
            "update public.signals set status = %s, completed_at = now(), error = %s where id = %s",
            (target, "x" if target == "error" else None, signal_id),
        )
    assert exc.value.diag.constraint_name == "signals_status_lifecycle"
    assert f"cannot go from pending to {target}" in str(exc.value.diag.message_primary)
    assert "pending → processing → complete | error" in str(exc.value.diag.message_hint)


def test_processing_signal_cannot_go_back_to_pending_by_direct_update(
    admin: Conn, engine: Engine, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    with pytest.raises(errors.CheckViolation) as exc:
        admin.execute(
            "update public.signals set status = 'pending', lease_expires_at = null where id = %s",
            (signal_id,),
        )
    assert exc.value.diag.constraint_name == "signals_status_lifecycle"
    assert "cannot go from processing to pending" in str(exc.value.diag.message_primary)
    assert "reclaim_expired_leases" in str(exc.value.diag.message_hint)
    assert signal_row(admin, signal_id)["status"] == "processing"


def test_status_outside_the_value_set_is_refused_on_update(
    admin: Conn, agent_id: uuid.UUID
) -> None:
    signal_id = send_signal(admin, agent_id)
    with pytest.raises(errors.CheckViolation) as exc:
        _set_status(admin, signal_id, "done")
    assert exc.value.diag.constraint_name == "signals_status_lifecycle"
    assert "cannot go from pending to done" in str(exc.value.diag.message_primary)


def _return_by_reclaim(engine: Engine, signal_id: uuid.UUID) -> None:
    far_future = engine.conn.execute("select now() + interval '1 hour' as t").fetchone()
    assert far_future is not None
    assert engine.reclaim(now=far_future["t"]) == {signal_id: "pending"}


def _return_by_release(engine: Engine, signal_id: uuid.UUID) -> None:
    assert engine.release("w1", [signal_id]) == [signal_id]


@pytest.mark.parametrize(
    "give_back", [_return_by_reclaim, _return_by_release], ids=["reclaim", "release"]
)
def test_processing_signal_returns_to_pending_through_the_engine(
    admin: Conn, engine: Engine, agent_id: uuid.UUID, give_back: Any
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    give_back(engine, signal_id)

    row = signal_row(admin, signal_id)
    assert row["status"] == "pending"
    assert row["lease_expires_at"] is None and row["claimed_at"] is None
    # The flag that allowed it is transaction-local: a direct update right after is refused.
    engine.claim("w2")
    with pytest.raises(errors.CheckViolation):
        _set_status(admin, signal_id, "pending")


@pytest.mark.parametrize(
    ("terminal", "target"),
    [
        ("success", "error"),
        ("success", "running"),
        ("error", "success"),
        ("error", "running"),
    ],
)
def test_ended_session_never_changes_status(
    admin: Conn, engine: Engine, agent_id: uuid.UUID, terminal: str, target: str
) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    engine.finish(signal_id, "w1", error="boom" if terminal == "error" else None)

    with pytest.raises(errors.CheckViolation) as exc:
        admin.execute(
            "update public.runtime_sessions set status = %s where id = %s", (target, session["id"])
        )
    assert exc.value.diag.constraint_name == "runtime_sessions_status_lifecycle"
    message = str(exc.value.diag.message_primary)
    assert f"is {terminal} and final" in message and f"cannot become {target}" in message


def test_running_session_may_end_once(admin: Conn, engine: Engine, agent_id: uuid.UUID) -> None:
    signal_id = send_signal(admin, agent_id)
    engine.claim("w1")
    session = engine.session_of(signal_id)
    admin.execute(
        "update public.runtime_sessions set status = 'success', completed_at = now() where id = %s",
        (session["id"],),
    )
    row = admin.execute(
        "select status from public.runtime_sessions where id = %s", (session["id"],)
    ).fetchone()
    assert row == {"status": "success"}


# A real edit per table; the test also writes updated_at itself, which the trigger overrides.
EDITS = {
    "agents": "description = 'edited'",
    "steps": "name = 'renamed'",
    "signals": "payload = '[1]'",
    "runtime_sessions": "worker_id = 'w9'",
    "engine_config": "epoch = epoch + 1",
}


@pytest.mark.parametrize("table", list(EDITS))
def test_updated_at_is_kept_by_trigger(
    admin: Conn, engine: Engine, agent_id: uuid.UUID, table: str
) -> None:
    send_signal(admin, agent_id)
    engine.claim("w1")  # opens a session too, so every table has a row to edit
    name = sql.Identifier("public", table)
    latest = sql.SQL("select max(updated_at) as t from {}").format(name)
    before = admin.execute(latest).fetchone()
    with admin.transaction():
        admin.execute(
            sql.SQL("update {} set updated_at = '2000-01-01', {}").format(
                name,
                sql.SQL(EDITS[table]),  # type: ignore[arg-type]
            )
        )
        now = admin.execute("select now() as t").fetchone()
    after = admin.execute(latest).fetchone()
    assert before is not None and now is not None and after is not None
    assert after["t"] == now["t"] and after["t"] > before["t"]


def test_signal_lease_fields_must_agree_with_status(admin: Conn, agent_id: uuid.UUID) -> None:
    signal_id = send_signal(admin, agent_id)
    with pytest.raises(psycopg.errors.CheckViolation) as exc:
        _set_status(admin, signal_id, "processing")
    assert exc.value.diag.constraint_name == "signals_lease_iff_processing"
