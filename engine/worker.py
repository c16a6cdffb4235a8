"""The engine loop: wait for a hint or the sweep, claim, dispatch; heartbeat; drain on stop.

Wake-ups are hints. Whatever arrives (or not), the loop claims every `sweep_seconds`, reclaims
expired leases and checks the agent config epoch, so a dropped connection loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from uuid import UUID

import structlog

from engine import errors, models
from engine.agents import AgentCache
from engine.config import Settings
from engine.runner import Runner, run_log_ids
from engine.store import Store
from engine.transports.base import CONFIG_CHANNEL, Transport

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class InFlight:
    """A claimed signal and the task processing it."""

    signal: models.Signal
    task: asyncio.Task[None]


class Worker:
    def __init__(
        self,
        settings: Settings,
        transport: Transport,
        store: Store,
        agents: AgentCache,
        runner: Runner,
    ):
        self._settings = settings
        self._transport = transport
        self._store = store
        self._agents = agents
        self._runner = runner
        self._in_flight: dict[UUID, InFlight] = {}
        self._wake = asyncio.Event()
        self._config_changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self.idle = asyncio.Event()
        """Set whenever a claim found nothing and nothing is in flight (tests and drain mode)."""

    def stop(self) -> None:
        """Stop claiming; in-flight runs get the grace period, then are released."""
        if not self._stopping.is_set():
            log.info("engine_stopping", in_flight=len(self._in_flight))
        self._stopping.set()
        self._wake.set()

    def _on_wakeup(self, channel: str, _payload: str) -> None:
        if channel == CONFIG_CHANNEL:
            self._config_changed.set()
        self._wake.set()

    async def run(self, *, drain: bool = False) -> None:
        """Process signals until stop() (or, with drain, until nothing is claimable)."""
        listen = asyncio.create_task(self._transport.listen(self._on_wakeup), name="listen")
        heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
        for task in (listen, heartbeat):
            task.add_done_callback(self._side_task_ended)
        log.info(
            "engine_started",
            worker_id=self._settings.worker_id,
            concurrency=self._settings.concurrency,
        )
        try:
            await self._loop(drain=drain)
        finally:
            listen.cancel()
            # The heartbeat outlives the loop: runs finishing within the grace period keep
            # their leases, or another engine would reclaim them and run them a second time.
            await self._drain_in_flight()
            heartbeat.cancel()
            await asyncio.gather(listen, heartbeat, return_exceptions=True)
            log.info("engine_stopped", **vars(self._runner.counters))

    def _side_task_ended(self, task: asyncio.Task[None]) -> None:
        # Both loop forever; ending any other way is a bug. An engine that cannot renew its
        # leases or hear wake-ups must not go on claiming: stop, and let the runs finish.
        if task.cancelled():
            return
        log.error("engine_side_task_crashed", task=task.get_name(), error=repr(task.exception()))
        self.stop()

    async def _loop(self, *, drain: bool) -> None:
        await self._agents.refresh_if_stale()
        next_sweep = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            # Cleared before looking, never after: a hint (or stop) that arrives while we
            # claim must end the wait below at once, not be wiped out by it.
            self._wake.clear()
            now = loop.time()
            if now >= next_sweep:
                next_sweep = now + self._settings.sweep_seconds
                await self._maintain()
            elif self._config_changed.is_set():
                self._config_changed.clear()
                await self._agents.refresh_if_stale()
            if await self._claim():
                continue  # there may be more: claim again before sleeping
            if not self._in_flight:
                self.idle.set()
                if drain:
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_sweep - loop.time()))

    async def _maintain(self) -> None:
        """The sweep's chores, each a hint-independent backstop."""
        try:
            await self._agents.refresh_if_stale()
            for signal_id, outcome in await self._store.reclaim_expired_leases():
                log.warning(
                    "lease_expired_signal_reclaimed",
                    reclaimed_signal_id=str(signal_id),
                    outcome=outcome,
                )
        except errors.DatabaseError as exc:
            log.error("sweep_failed", error=str(exc))

    async def _claim(self) -> bool:
        room = self._settings.concurrency - len(self._in_flight)
        if room <= 0:
            return False
        try:
            signals = await self._store.claim_signals(room)
        except errors.DatabaseError as exc:
            log.error("claim_failed", error=str(exc))
            return False
        for signal in signals:
            self.idle.clear()
            stale = self._in_flight.get(signal.id)
            if stale is not None:
                # Its lease expired before the heartbeat renewed it (a stalled loop, a lost
                # database), this engine's sweep reclaimed it and this claim took it again: the
                # old run's session is closed, so that run must stop and this one replace it.
                self._lease_lost(stale, noticed_by="reclaim")
            task = asyncio.create_task(self._process(signal), name=f"signal-{signal.id}")
            self._in_flight[signal.id] = InFlight(signal, task)
        return bool(signals)

    def _lease_lost(self, run: InFlight, *, noticed_by: str) -> None:
        log.warning("lease_lost", noticed_by=noticed_by, **run_log_ids(run.signal))
        run.task.cancel()

    async def _process(self, signal: models.Signal) -> None:
        # Bound here, not only in the runner: the lines below belong to the run too.
        with structlog.contextvars.bound_contextvars(**run_log_ids(signal)):
            try:
                await self._runner.run(signal)
            except errors.LeaseLost as exc:
                log.warning("lease_lost", noticed_by="write", error=str(exc))
            except errors.NotFound as exc:
                # Deleting an agent deletes its signals, this one included, mid-run.
                log.warning("signal_deleted_while_running", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception:
                # The lease runs out and the signal is reclaimed (counted as an attempt).
                log.exception("signal_processing_crashed")
            finally:
                current = self._in_flight.get(signal.id)
                if current is not None and current.task is asyncio.current_task():
                    del self._in_flight[signal.id]
                self._wake.set()  # the agent's next signal may be claimable now

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            held = dict(self._in_flight)
            if not held:
                continue
            try:
                still_held = await self._store.renew_leases(list(held))
            except errors.DatabaseError as exc:
                log.error("lease_renewal_failed", error=str(exc))
                continue
            for signal_id in held.keys() - still_held:
                # Only the run the renewal asked about: one that ended meanwhile is gone, and
                # one that replaced it (a new claim of the same signal) holds a fresh lease.
                if self._in_flight.get(signal_id) is held[signal_id]:
                    self._lease_lost(held[signal_id], noticed_by="heartbeat")

    async def _drain_in_flight(self) -> None:
        if not self._in_flight:
            return
        tasks = [run.task for run in self._in_flight.values()]
        _, pending = await asyncio.wait(tasks, timeout=self._settings.shutdown_grace_seconds)
        if not pending:
            return
        unfinished = [sid for sid, run in self._in_flight.items() if run.task in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            released = await self._store.release_signals(unfinished)
            log.info("signals_released", count=len(released), signal_ids=[str(s) for s in released])
        except errors.DatabaseError as exc:
            log.error("release_failed", error=str(exc), note="leases will expire and be reclaimed")
