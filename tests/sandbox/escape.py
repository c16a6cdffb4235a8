"""Escaped workers for tests of the process layer on its own.

An escaped worker is booted by the engine's own `WorkerProcess.spawn`, with the real boot
modules and the real confinement, and then runs each job's code as plain Python (see
escaped_worker.py): what a step could do if the language layer had failed. Tests assert that
even then the secrets, the engine and the other workers stay out of reach.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.sandbox import protocol
from engine.sandbox.hardening import make_engine_non_dumpable, worker_identity
from engine.sandbox.process import Reply, WorkerProcess
from engine.sandbox.settings import SandboxSettings

ESCAPED_WORKER = Path(__file__).with_name("escaped_worker.py")
SETTINGS = SandboxSettings(pool_size=1)


class Escapes:
    """Starts escaped workers (the engine's spawn, another boot script) and kills them all
    when the test ends."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self._workers: list[WorkerProcess] = []

    async def start(self, script: Path = ESCAPED_WORKER) -> WorkerProcess:
        """A booted worker (raises SandboxBootError as the engine would)."""
        identity = worker_identity(self.settings.sandbox_user)
        worker = await WorkerProcess.spawn(self.settings, identity, script)
        self._workers.append(worker)
        return worker

    async def run(
        self, worker: WorkerProcess, code: str, value: Any = None, timeout_ms: int = 5_000
    ) -> Reply:
        """Run plain Python in an escaped worker; its `result` comes back as the output."""
        job = protocol.encode_job(code, value, 5, self.settings.max_input_bytes)
        return await worker.run(job, timeout_ms)

    async def output(self, worker: WorkerProcess, code: str, value: Any = None) -> Any:
        """The `result` of plain Python that must not fail."""
        reply = await self.run(worker, code, value)
        assert reply.error is None, reply.error
        return reply.output

    async def close(self) -> None:
        for worker in self._workers:
            await worker.kill()


@contextlib.asynccontextmanager
async def escapes(settings: SandboxSettings = SETTINGS) -> AsyncIterator[Escapes]:
    make_engine_non_dumpable()  # as SandboxPool.start does before any worker exists
    started = Escapes(settings)
    try:
        yield started
    finally:
        await started.close()
