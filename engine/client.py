"""What a front end does, for the CLI: find an agent, insert a signal, wait for its outcome.

A front end inserts into `signals` with supabase-js; this does the same insert over psycopg.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine import errors, models
from engine.db import target
from engine.transports.postgres import assume_role, translate

FIND_AGENT = """
select id, name, owner_id, is_active from public.agents
 where name = %(ref)s or id::text = %(ref)s
 order by owner_id nulls first
"""
INSERT_SIGNAL = """
insert into public.signals (type, agent_id, payload)
values (%(type)s, %(agent_id)s, %(payload)s)
returning id
"""
SIGNAL_REPORT = "select public.signal_report(%(id)s) as report"
TERMINAL = {models.SignalStatus.COMPLETE, models.SignalStatus.ERROR}


async def connect(database_url: str, role: str | None) -> psycopg.AsyncConnection[Any]:
    try:
        conn = await psycopg.AsyncConnection.connect(
            database_url, autocommit=True, row_factory=dict_row, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise target.unreachable(database_url, exc) from exc
    await assume_role(conn, role)
    return conn


async def find_agent(conn: psycopg.AsyncConnection[Any], ref: str) -> UUID:
    rows = await (await conn.execute(FIND_AGENT, {"ref": ref})).fetchall()
    if not rows:
        raise errors.ConfigurationError(
            f"no agent named or with id {ref!r}; list them with `portico agents list` "
            "or create one with `portico agents apply FILE`"
        )
    if len(rows) > 1 and rows[1]["owner_id"] is not None and rows[0]["owner_id"] is not None:
        owners = ", ".join(str(r["owner_id"]) for r in rows)
        raise errors.ConfigurationError(
            f"several agents are named {ref!r} (owners: {owners}); pass the agent's id instead"
        )
    return UUID(str(rows[0]["id"]))


async def send_signal(
    conn: psycopg.AsyncConnection[Any],
    *,
    signal_type: models.SignalType,
    agent_id: UUID | None,
    payload: models.JsonValue,
) -> UUID:
    try:
        cursor = await conn.execute(
            INSERT_SIGNAL,
            {"type": signal_type.value, "agent_id": agent_id, "payload": Jsonb(payload)},
        )
    except psycopg.Error as exc:
        raise translate(exc) from exc
    row = await cursor.fetchone()
    assert row is not None
    return UUID(str(row["id"]))


async def report(conn: psycopg.AsyncConnection[Any], signal_id: UUID) -> models.SignalReport:
    row = await (await conn.execute(SIGNAL_REPORT, {"id": signal_id})).fetchone()
    if row is None or row["report"] is None:
        raise errors.NotFound(f"signal {signal_id} does not exist")
    return models.SignalReport.model_validate(row["report"])


async def wait_for_outcome(
    conn: psycopg.AsyncConnection[Any], signal_id: UUID, *, timeout_s: float
) -> models.SignalReport:
    """Poll until the signal is complete or error; raises TimeoutError after timeout_s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.02
    while True:
        current = await report(conn, signal_id)
        if current.status in TERMINAL:
            return current
        if loop.time() >= deadline:
            raise TimeoutError(
                f"signal {signal_id} is still {current.status} after {timeout_s:g} s; "
                "is an engine running (`portico run`) and is the agent active?"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def parse_payload(text: str) -> models.JsonValue:
    """JSON text, or @path to read it from a file."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise errors.ConfigurationError(f"cannot read payload file {text[1:]}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.ConfigurationError(
            f"--payload is not JSON ({exc.msg} at position {exc.pos}); "
            """quote it for the shell, e.g. --payload '{"order_id": 42}'"""
        ) from exc
