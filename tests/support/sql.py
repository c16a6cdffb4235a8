"""Helpers for tests on the real database: act as a PostgREST role inside one transaction,
build users, agents, steps and signals, and call the engine's SQL functions by name."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

Conn = psycopg.Connection[DictRow]

API_ROLES = ("anon", "authenticated", "service_role")


def connect(url: str, *, role: str | None = None) -> Conn:
    """An autocommit connection returning dict rows; with `role`, every statement runs as it."""
    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    if role is not None:
        conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    return conn


@contextmanager
def as_role(
    conn: Conn, role: str, user_id: uuid.UUID | None = None, *, rollback: bool = False
) -> Iterator[Conn]:
    """One transaction the way PostgREST runs a request: `set local role` plus the JWT claims.

    Put `pytest.raises` outside this block: an error rolls the transaction back on the way out.
    With `rollback`, the transaction is rolled back even when it succeeds.
    """
    if role not in API_ROLES:
        raise ValueError(f"role {role!r} is not one of the API roles {API_ROLES}")
    claims: dict[str, str] = {"role": role}
    if user_id is not None:
        claims["sub"] = str(user_id)
    with conn.transaction(force_rollback=rollback):
        conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield conn


# ---------------------------------------------------------------------------------------------
# Factories (run them on a superuser connection unless a test is about who may do it)
# ---------------------------------------------------------------------------------------------


def create_user(conn: Conn, email: str | None = None) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        "insert into auth.users (id, email, role, aud) values (%s, %s, 'authenticated', "
        "'authenticated')",
        (user_id, email or f"{user_id.hex[:8]}@example.test"),
    )
    return user_id


def create_agent(
    conn: Conn,
    *,
    owner_id: uuid.UUID | None = None,
    name: str | None = None,
    is_active: bool = True,
    description: str = "",
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.agents (name, description, is_active, owner_id)"
        " values (%s, %s, %s, %s) returning id",
        (
            f"agent-{uuid.uuid4().hex[:8]}" if name is None else name,
            description,
            is_active,
            owner_id,
        ),
    ).fetchone()
    assert row is not None
    return row["id"]


def python_config(code: str = "return input", **extra: Any) -> dict[str, Any]:
    return {"code": code, **extra}


def llm_config(**extra: Any) -> dict[str, Any]:
    return {"prompt_template": "Summarise {{input}}", "model": "openai/gpt-4o-mini", **extra}


def add_step(
    conn: Conn,
    agent_id: uuid.UUID,
    position: int,
    *,
    type: str = "python",
    config: dict[str, Any] | None = None,
    name: str | None = None,
) -> uuid.UUID:
    if config is None:
        config = python_config() if type == "python" else llm_config()
    row = conn.execute(
        "insert into public.steps (agent_id, name, type, config, position)"
        " values (%s, %s, %s, %s, %s) returning id",
        (agent_id, f"step-{position}" if name is None else name, type, Jsonb(config), position),
    ).fetchone()
    assert row is not None
    return row["id"]


def send_signal(
    conn: Conn,
    agent_id: uuid.UUID | None = None,
    *,
    type: str = "run",
    payload: Any = None,
) -> uuid.UUID:
    row = conn.execute(
        "insert into public.signals (type, payload, agent_id) values (%s, %s, %s) returning id",
        (type, Jsonb({} if payload is None else payload), agent_id),
    ).fetchone()
    assert row is not None
    return row["id"]


def signal_row(conn: Conn, signal_id: uuid.UUID) -> dict[str, Any]:
    row = conn.execute("select * from public.signals where id = %s", (signal_id,)).fetchone()
    assert row is not None, f"signal {signal_id} does not exist"
    return dict(row)


def jsonb_or_null(value: Any) -> Jsonb | None:
    """Python None becomes SQL NULL (not the JSON value null)."""
    return None if value is None else Jsonb(value)


def config_epoch(conn: Conn) -> int:
    row = conn.execute("select epoch from public.engine_config").fetchone()
    assert row is not None
    return int(row["epoch"])


# ---------------------------------------------------------------------------------------------
# The engine's functions, called by name with named arguments as the transports do
# ---------------------------------------------------------------------------------------------


@dataclass
class Engine:
    """Calls the engine's SQL functions on a connection that runs as service_role."""

    conn: Conn

    def claim(
        self,
        worker: str,
        limit: int = 10,
        lease_seconds: int = 30,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "select * from public.claim_signals(p_worker_id => %s, p_limit => %s,"
            " p_lease_seconds => %s, p_now => %s)",
            (worker, limit, lease_seconds, now),
        ).fetchall()
        return [dict(r) for r in rows]

    def renew(
        self, worker: str, signal_ids: list[uuid.UUID], lease_seconds: int = 30
    ) -> set[uuid.UUID]:
        rows = self.conn.execute(
            "select * from public.renew_leases(p_worker_id => %s, p_signal_ids => %s,"
            " p_lease_seconds => %s) as id",
            (worker, signal_ids, lease_seconds),
        ).fetchall()
        return {r["id"] for r in rows}

    def session_of(self, signal_id: uuid.UUID) -> dict[str, Any]:
        """The session the claim opened for a run signal (its runtime_session_id)."""
        row = self.conn.execute(
            "select r.* from public.runtime_sessions r"
            " join public.signals s on s.runtime_session_id = r.id where s.id = %s",
            (signal_id,),
        ).fetchone()
        assert row is not None, f"signal {signal_id} has no session"
        return dict(row)

    def record_step(
        self,
        session_id: uuid.UUID,
        worker: str,
        position: int,
        *,
        output: Any = None,
        error: str | None = None,
        step_input: Any = None,
        step_id: uuid.UUID | None = None,
        finish: bool = False,
    ) -> dict[str, Any]:
        row = self.conn.execute(
            "select * from public.record_step_result(p_session_id => %s, p_worker_id => %s,"
            " p_position => %s, p_step_id => %s, p_step_name => %s, p_step_type => 'python',"
            " p_input => %s, p_output => %s, p_error => %s,"
            " p_started_at => clock_timestamp(), p_completed_at => clock_timestamp(),"
            " p_finish => %s)",
            (
                session_id,
                worker,
                position,
                step_id,
                f"step-{position}",
                jsonb_or_null(step_input),
                jsonb_or_null(output),
                error,
                finish,
            ),
        ).fetchone()
        assert row is not None
        return dict(row)

    def finish(
        self,
        signal_id: uuid.UUID,
        worker: str,
        *,
        error: str | None = None,
        output: Any = None,
    ) -> dict[str, Any]:
        row = self.conn.execute(
            "select * from public.finish_signal(p_signal_id => %s, p_worker_id => %s,"
            " p_error => %s, p_output => %s)",
            (signal_id, worker, error, jsonb_or_null(output)),
        ).fetchone()
        assert row is not None
        return dict(row)

    def release(self, worker: str, signal_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        rows = self.conn.execute(
            "select * from public.release_signals(p_worker_id => %s, p_signal_ids => %s) as id",
            (worker, signal_ids),
        ).fetchall()
        return [r["id"] for r in rows]

    def reclaim(self, max_attempts: int = 3, now: datetime | None = None) -> dict[uuid.UUID, str]:
        rows = self.conn.execute(
            "select * from public.reclaim_expired_leases(p_max_attempts => %s, p_now => %s)",
            (max_attempts, now),
        ).fetchall()
        return {r["signal_id"]: r["outcome"] for r in rows}
