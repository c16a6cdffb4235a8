"""The engine loop never loses a wake-up or a stop that arrives while it is claiming.

Real PostgreSQL, real NOTIFY, real sandbox; the only interference is a wrapper around the
store's claim that holds the race window open until the event has landed, so the race that
would otherwise happen once in a while happens every time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from engine import models
from engine.transports.base import WakeupHandler
from engine.transports.postgres import PostgresTransport
from tests.support.engine import Db, python_step, running_engine
from tests.support.waiting import wait_for

Claim = Callable[[int], Awaitable[list[models.Signal]]]


def _interfere_once(store: Any, during_claim: Callable[[], Awaitable[None]]) -> None:
    """Make the next empty claim run `during_claim` before it returns."""
    real: Claim = store.claim_signals
    armed = True

    async def claim(limit: int) -> list[models.Signal]:
        nonlocal armed
        claimed = await real(limit)
        if armed and not claimed:
            armed = False
            await during_claim()
        return claimed

    store.claim_signals = claim


async def test_a_notification_during_an_empty_claim_is_not_lost(database_url: str) -> None:
    async with Db(database_url) as db, running_engine(database_url, sweep_seconds=60) as running:
        worker = running.engine.worker
        agent = await db.apply("racy", [python_step("echo", "return input")])
        await wait_for(lambda: asyncio.sleep(0, worker.idle.is_set()), what="idle engine")
        sent: list[Any] = []

        async def insert_and_await_its_notification() -> None:
            worker._wake.clear()  # drop the poke that started this claim: only the NOTIFY counts
            sent.append(await db.send(agent, {"late": True}))
            await wait_for(lambda: asyncio.sleep(0, worker._wake.is_set()), what="the NOTIFY")

        _interfere_once(running.engine.store, insert_and_await_its_notification)
        worker._on_wakeup("test", "")  # start a claim now, which the wrapper then holds open
        await wait_for(lambda: asyncio.sleep(0, bool(sent)), what="the signal inside the claim")
        # The sweep is 60 s away: only the kept wake-up can start this run in time.
        report = await wait_for(lambda: db.finished(sent[0]), timeout=5, what="the late signal")
    assert report["status"] == "complete"


async def test_stop_during_a_claim_stops_the_engine_at_once(database_url: str) -> None:
    async with running_engine(database_url, sweep_seconds=60) as running:
        worker = running.engine.worker
        await wait_for(lambda: asyncio.sleep(0, worker.idle.is_set()), what="idle engine")

        async def stop() -> None:
            worker.stop()

        _interfere_once(running.engine.store, stop)
        worker._on_wakeup("test", "")
        # The sweep is 60 s away: the loop must notice the stop without waiting for it.
        await asyncio.wait_for(asyncio.shield(running.task), timeout=5)


class BrokenListener(PostgresTransport):
    """Its listener dies of a bug (not a lost connection, which it would survive)."""

    async def listen(self, on_wakeup: WakeupHandler) -> None:
        raise RuntimeError("listener bug")


async def test_an_engine_whose_listener_dies_stops_instead_of_limping_on(
    database_url: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr("engine.app.PostgresTransport", BrokenListener)
    capture = structlog.testing.LogCapture()
    structlog.configure(processors=[capture])
    try:
        async with running_engine(database_url, sweep_seconds=60) as running:
            await asyncio.wait_for(asyncio.shield(running.task), timeout=10)
    finally:
        structlog.reset_defaults()
    crashed = [e for e in capture.entries if e["event"] == "engine_side_task_crashed"]
    assert crashed and crashed[0]["task"] == "listen" and "listener bug" in crashed[0]["error"]
