"""The direct transport: engine functions over psycopg, wake-ups over LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from engine import errors
from engine.db import target
from engine.transports.base import CONFIG_CHANNEL, WAKEUP_CHANNEL, Json, Row, WakeupHandler

log = structlog.get_logger(__name__)

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


def translate(exc: psycopg.Error) -> errors.DatabaseError:
    diag = exc.diag
    message = diag.message_primary or str(exc)
    kind: type[errors.DatabaseError] = {
        "PT409": errors.LeaseLost,
        "PT404": errors.NotFound,
    }.get(exc.sqlstate or "", errors.DatabaseError)
    return kind(message, sqlstate=exc.sqlstate, hint=diag.message_hint)


async def assume_role(conn: psycopg.AsyncConnection[Any], role: str | None) -> None:
    """`set role`, so the connection has exactly the rights `role` has over the API."""
    if not role:
        return
    try:
        await conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    except psycopg.Error as exc:
        raise errors.ConfigurationError(
            f"cannot assume database role {role!r}: {exc.diag.message_primary}. "
            "Connect as a role that is a member of it (on Supabase: postgres), "
            "or set PORTICO_DB_ROLE='' to keep the login role"
        ) from exc


class PostgresTransport:
    def __init__(self, database_url: str, *, role: str | None, pool_size: int = 10):
        self._url = database_url
        self._role = role
        self._pool = AsyncConnectionPool(
            database_url,
            min_size=min(2, pool_size),
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=self._configure,
            open=False,
        )
        self._queries: dict[tuple[str, tuple[str, ...]], bytes] = {}

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await assume_role(conn, self._role)

    async def open(self) -> None:
        """Connect, or raise DatabaseUnavailable / ConfigurationError saying why.

        One direct connection first: the pool would retry a refused connection or a role it
        cannot assume until its timeout and then report only that it timed out."""
        try:
            probe = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=10
            )
        except psycopg.OperationalError as exc:
            raise target.unreachable(self._url, exc) from exc
        async with probe:
            await self._configure(probe)
        await self._pool.open(wait=True, timeout=15)

    async def close(self) -> None:
        await self._pool.close()

    def _query(self, function: str, names: tuple[str, ...]) -> bytes:
        # Composed once and kept as bytes: composing on every call cost more than the call.
        key = (function, names)
        query = self._queries.get(key)
        if query is None:
            arguments = sql.SQL(", ").join(
                sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                for name in names
            )
            query = (
                sql.SQL("select * from public.{}({})")
                .format(sql.Identifier(function), arguments)
                .as_bytes()
            )
            self._queries[key] = query
        return query

    async def call(self, function: str, args: Mapping[str, Any]) -> list[Row]:
        params = {
            name: Jsonb(value.value) if isinstance(value, Json) else value
            for name, value in args.items()
        }
        query = self._query(function, tuple(params))
        try:
            async with self._pool.connection() as conn, conn.cursor() as cur:
                await cur.execute(query, params)
                # `select * from f()` always yields a result set, possibly empty.
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def listen(self, on_wakeup: WakeupHandler) -> None:
        failures = 0
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(WAKEUP_CHANNEL)))
                    await conn.execute(sql.SQL("listen {}").format(sql.Identifier(CONFIG_CHANNEL)))
                    failures = 0
                    log.debug("listening", channels=[WAKEUP_CHANNEL, CONFIG_CHANNEL])
                    on_wakeup("reconnected", "")
                    async for notify in conn.notifies():
                        on_wakeup(notify.channel, notify.payload)
            except psycopg.Error as exc:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                failures += 1
                log.warning("listen_connection_lost", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
