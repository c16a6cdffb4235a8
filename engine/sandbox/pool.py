"""The sandbox pool: pre-started idle workers, per-tenant binding and limits, deadlines,
and replacement of every worker that was killed, crashed or served its last run.

A worker, once given to a tenant, serves that tenant only until it is retired: after any
error, after `max_runs_per_worker` runs, past its CPU or RSS budget, or when evicted to make
room. One tenant holds at most `max_workers_per_tenant` workers; its further runs wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.sandbox import errors, protocol
from engine.sandbox.hardening import make_engine_non_dumpable, worker_identity
from engine.sandbox.process import Reply, WorkerProcess
from engine.sandbox.result import SandboxResult
from engine.sandbox.settings import SandboxSettings

log = structlog.get_logger(__name__)

REFILL_BACKOFF_MAX_S = 5.0


@dataclass
class _Tenant:
    busy: set[WorkerProcess] = field(default_factory=set)
    free: list[WorkerProcess] = field(default_factory=list)
    pending: int = 0

    @property
    def count(self) -> int:
        return len(self.busy) + len(self.free) + self.pending


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as `SandboxPool.workers()` reports it (for operators and tests)."""

    pid: int
    tenant: str | None
    busy: bool
    runs: int
    boot_ms: float
    peak_rss_kb: int


class _Spawn:
    """A reserved slot: the caller starts a worker for its tenant."""


_SPAWN = _Spawn()


class SandboxPool:
    """Runs step code in sandbox workers. Use from one event loop; `run` may be called by
    many coroutines at once."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        self._idle: deque[WorkerProcess] = deque()
        self._tenants: dict[str, _Tenant] = {}
        self._refilling = 0
        self._refill_failures = 0
        self._refill_blocked_until = 0.0
        self._cond = asyncio.Condition()
        self._background: set[asyncio.Task[Any]] = set()
        self._identity: tuple[int, int] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._stats: Counter[str] = Counter()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Pre-start `pool_size` workers (at least one, as a probe). Raises SandboxBootError
        with the worker's own explanation when a worker cannot boot."""
        if self._closed:
            raise errors.SandboxClosedError("the sandbox pool is closed")
        if self._started:
            return
        make_engine_non_dumpable()
        try:
            self._identity = worker_identity(self.settings.sandbox_user)
        except (LookupError, ValueError) as error:
            raise errors.SandboxBootError(str(error)) from None
        count = max(1, self.settings.pool_size)
        spawned = await asyncio.gather(
            *(self._spawn() for _ in range(count)), return_exceptions=True
        )
        workers = [w for w in spawned if isinstance(w, WorkerProcess)]
        failures = [f for f in spawned if isinstance(f, BaseException)]
        if failures:
            await asyncio.gather(*(w.kill() for w in workers))
            raise failures[0]
        keep = workers[: self.settings.pool_size]
        await asyncio.gather(*(w.kill() for w in workers[len(keep) :]))
        self._idle.extend(keep)
        self._started = True
        self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
        log.info(
            "sandbox_pool_started",
            workers=len(keep),
            uid=self._identity[0] if self._identity else os.geteuid(),
            landlock=workers[0].landlock,
            boot_ms=round(max(w.boot_ms for w in workers), 1),
        )
        if self.settings.landlock and not workers[0].landlock:
            log.warning(
                "sandbox_landlock_unavailable",
                reason="the kernel has no Landlock (Linux 5.13+) or it is disabled",
                effect="an escaped step could read files the sandbox user may read",
            )

    async def close(self) -> None:
        """Kill and reap every worker. Idempotent; `run` raises SandboxClosedError after."""
        if self._closed:
            await self._drain_background()
            return
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        async with self._cond:
            self._cond.notify_all()
        workers = list(self._idle)
        self._idle.clear()
        for slot in self._tenants.values():
            workers += [*slot.free, *slot.busy]
            slot.free.clear()
        await asyncio.gather(*(w.kill() for w in workers))
        await self._drain_background()
        log.info("sandbox_pool_closed", workers_killed=len(workers))

    async def _drain_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- running ---------------------------------------------------------------------------

    async def run(
        self, code: str, step_input: Any, *, tenant: str, timeout_ms: int | None = None
    ) -> SandboxResult:
        """Run step code for `tenant`. Problems of the step come back as `error`; this raises
        only SandboxClosedError."""
        self._check_open()
        deadline_ms = self.settings.timeout_ms(timeout_ms)
        job = self._prepare(code, step_input, deadline_ms)
        if isinstance(job, SandboxResult):
            return job
        try:
            worker = await self._acquire(tenant)
        except errors.SandboxBootError as error:
            return SandboxResult(error=errors.could_not_start(str(error)))
        reply: Reply | None = None
        try:
            reply = await worker.run(job, deadline_ms)
        finally:
            await self._release(tenant, worker, reply)
        if reply.worker_died and self._closed:
            raise errors.SandboxClosedError("the sandbox pool closed while the step ran")
        return SandboxResult(reply.output, reply.error, reply.logs, reply.duration_ms)

    def _check_open(self) -> None:
        if self._closed:
            raise errors.SandboxClosedError("the sandbox pool is closed")
        if not self._started:
            raise errors.SandboxError("the sandbox pool is not started; await pool.start() first")

    def _prepare(self, code: str, step_input: Any, deadline_ms: int) -> bytes | SandboxResult:
        if type(code) is not str:
            return SandboxResult(error="code must be a string of Python")
        # A cheap first check on characters; the worker counts bytes.
        if len(code) > self.settings.max_source_bytes:
            return SandboxResult(
                error=f"code is too long: {len(code)} characters, limit "
                f"{self.settings.max_source_bytes} bytes; move data into the input"
            )
        try:
            return protocol.encode_job(
                code,
                step_input,
                self.settings.job_cpu_seconds(deadline_ms),
                self.settings.max_input_bytes,
            )
        except protocol.InputError as error:
            return SandboxResult(error=str(error))

    # -- acquiring and releasing workers ---------------------------------------------------

    async def _acquire(self, tenant: str) -> WorkerProcess:
        async with self._cond:
            while True:
                self._check_open()
                choice = self._choose(tenant)
                if choice is not None:
                    break
                self._stats["waits"] += 1
                await self._cond.wait()
        if isinstance(choice, WorkerProcess):
            return choice
        return await self._spawn_for(tenant)

    def _choose(self, tenant: str) -> WorkerProcess | _Spawn | None:
        """A worker for `tenant` now, a reserved slot to start one, or None (wait)."""
        slot = self._tenants.get(tenant) or _Tenant()
        if slot.free:
            worker = slot.free.pop()  # the most recently used: warmest caches
            slot.busy.add(worker)
            return worker
        if slot.count >= self.settings.max_workers_per_tenant:
            return None
        if self._idle:
            worker = self._idle.popleft()
            worker.tenant = tenant
            slot.busy.add(worker)
            self._tenants[tenant] = slot
            self._schedule_refill()
            return worker
        if self._total() >= self.settings.max_workers and not self._evict_one(tenant):
            return None
        slot.pending += 1
        self._tenants[tenant] = slot
        return _SPAWN

    async def _spawn_for(self, tenant: str) -> WorkerProcess:
        worker: WorkerProcess | None = None
        try:
            worker = await self._spawn()
            self._stats["cold_starts"] += 1
        finally:
            async with self._cond:
                slot = self._tenants[tenant]
                slot.pending -= 1
                if worker is not None and not self._closed:
                    worker.tenant = tenant
                    slot.busy.add(worker)
                self._forget_if_empty(tenant)
                self._cond.notify_all()
        assert worker is not None
        if self._closed:
            await worker.kill()
            raise errors.SandboxClosedError("the sandbox pool is closed")
        return worker

    async def _release(self, tenant: str, worker: WorkerProcess, reply: Reply | None) -> None:
        reason = self._retire_reason(worker, reply)
        async with self._cond:
            slot = self._tenants[tenant]
            slot.busy.discard(worker)
            if reason is None:
                slot.free.append(worker)
            self._forget_if_empty(tenant)
            if reason is not None:
                self._schedule_refill()
            self._cond.notify_all()
        if reason is None:
            return
        self._stats[f"retired_{reason}"] += 1
        if reply is not None and reply.worker_died:
            log.warning("sandbox_worker_killed", pid=worker.pid, tenant=tenant, reason=reply.kind)
        if self._closed:
            await worker.kill()
        else:
            self._in_background(worker.kill())

    def _retire_reason(self, worker: WorkerProcess, reply: Reply | None) -> str | None:
        settings = self.settings
        if reply is None:
            return "cancelled"
        self._stats["runs"] += 1
        self._stats["compile_cache_hits" if reply.cached else "compiles"] += 1
        if self._closed or not worker.alive or reply.worker_died:
            return reply.kind or "died"
        if reply.error is not None:
            return "error"
        if worker.runs >= settings.max_runs_per_worker:
            return "max_runs"
        if worker.cpu_seconds * 2 >= settings.cpu_lifetime_seconds:
            return "cpu_budget"
        if worker.peak_rss_kb >= settings.recycle_rss_mb * 1024:
            return "rss"
        return None

    def _forget_if_empty(self, tenant: str) -> None:
        slot = self._tenants.get(tenant)
        if slot is not None and slot.count == 0:
            del self._tenants[tenant]

    def _evict_one(self, tenant: str) -> bool:
        """Retire the least recently used idle worker of another tenant to make room."""
        candidates = [
            (worker.last_used, name, worker)
            for name, slot in self._tenants.items()
            if name != tenant
            for worker in slot.free
        ]
        if not candidates:
            return False
        _, name, victim = min(candidates, key=lambda c: c[0])
        self._tenants[name].free.remove(victim)
        self._forget_if_empty(name)
        self._stats["evictions"] += 1
        self._in_background(victim.kill())
        return True

    async def _reap_idle(self) -> None:
        """Retire bound workers left unused for `idle_worker_ttl_s` (a periodic timer)."""
        ttl = self.settings.idle_worker_ttl_s
        while True:
            await asyncio.sleep(min(ttl / 2, 30.0))
            cutoff = time.monotonic() - ttl
            async with self._cond:
                for name, slot in list(self._tenants.items()):
                    expired = [w for w in slot.free if w.last_used < cutoff]
                    for worker in expired:
                        slot.free.remove(worker)
                        self._stats["retired_idle"] += 1
                        self._in_background(worker.kill())
                    self._forget_if_empty(name)
                self._cond.notify_all()

    def _total(self) -> int:
        return len(self._idle) + self._refilling + sum(s.count for s in self._tenants.values())

    # -- starting workers ------------------------------------------------------------------

    async def _spawn(self) -> WorkerProcess:
        worker = await WorkerProcess.spawn(self.settings, self._identity)
        self._stats["spawned"] += 1
        return worker

    def _schedule_refill(self) -> None:
        """Top the idle pool back up to `pool_size`, in the background."""
        if self._closed or not self._started or time.monotonic() < self._refill_blocked_until:
            return
        deficit = self.settings.pool_size - len(self._idle) - self._refilling
        room = self.settings.max_workers - self._total()
        for _ in range(max(0, min(deficit, room))):
            self._refilling += 1
            self._in_background(self._refill_one())

    async def _refill_one(self) -> None:
        worker: WorkerProcess | None = None
        try:
            worker = await self._spawn()
            self._refill_failures = 0
        except errors.SandboxBootError as error:
            self._refill_failures += 1
            backoff = min(REFILL_BACKOFF_MAX_S, 0.1 * 2**self._refill_failures)
            self._refill_blocked_until = time.monotonic() + backoff
            log.error("sandbox_worker_boot_failed", error=str(error), retry_in_s=backoff)
        finally:
            async with self._cond:
                self._refilling -= 1
                if worker is not None and not self._closed:
                    self._idle.append(worker)
                    worker = None
                self._cond.notify_all()
        if worker is not None:  # the pool closed while it booted
            await worker.kill()

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- introspection ---------------------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """Counters since start (runs, compiles, cache hits, cold starts, retirements by
        reason, evictions, waits) and the current worker counts."""
        current = {
            "idle": len(self._idle),
            "bound": sum(len(s.busy) + len(s.free) for s in self._tenants.values()),
            "busy": sum(len(s.busy) for s in self._tenants.values()),
            "tenants": len(self._tenants),
        }
        return {**self._stats, **current}

    def workers(self) -> list[WorkerInfo]:
        """Every live worker: idle ones (tenant None) and bound ones."""

        def info(worker: WorkerProcess, busy: bool) -> WorkerInfo:
            return WorkerInfo(
                worker.pid, worker.tenant, busy, worker.runs, worker.boot_ms, worker.peak_rss_kb
            )

        listed = [info(w, False) for w in self._idle]
        for slot in self._tenants.values():
            listed += [info(w, False) for w in slot.free] + [info(w, True) for w in slot.busy]
        return listed
