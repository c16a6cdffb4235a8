"""Composition root: Settings → Transport → Store → Runner → Worker. The only module that
names concrete classes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from engine import logs
from engine.agents import AgentCache
from engine.config import Settings
from engine.db import embedded, migrate
from engine.runner import Runner
from engine.sandbox.hardening import make_engine_non_dumpable
from engine.sandbox.pool import SandboxPool
from engine.steps.base import StepExecutor
from engine.steps.llm import LLMStep
from engine.steps.python import PythonStep
from engine.store import Store
from engine.transports.postgres import PostgresTransport
from engine.worker import Worker


def resolve_database_url(settings: Settings, *, migrate_embedded: bool = True) -> str:
    """The configured URL, or the embedded server's (started, and migrated, on demand)."""
    if settings.database_url:
        return settings.database_url
    url = embedded.start_embedded(settings.data_dir)
    if migrate_embedded:
        migrate.migrate(url)
    return url


@dataclass
class Engine:
    settings: Settings
    transport: PostgresTransport
    store: Store
    worker: Worker
    runner: Runner
    sandbox: SandboxPool


@contextlib.asynccontextmanager
async def open_engine(
    settings: Settings,
    *,
    database_url: str,
    executors: Mapping[str, StepExecutor] | None = None,
) -> AsyncIterator[Engine]:
    """An engine wired to `database_url`, its sandbox pool started; closes everything on exit.

    `executors` replaces step executors by type (tests inject a fake LLM client this way)."""
    make_engine_non_dumpable()
    transport = PostgresTransport(
        database_url, role=settings.db_role, pool_size=settings.concurrency + 4
    )
    store = Store(
        transport,
        worker_id=settings.worker_id,
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
    )
    sandbox = SandboxPool(settings.sandbox)
    await transport.open()
    try:
        await sandbox.start()
        llm = LLMStep(options=settings.llm)
        try:
            chosen: dict[str, StepExecutor] = {"python": PythonStep(sandbox), "llm": llm}
            chosen.update(executors or {})
            agents = AgentCache(store)
            runner = Runner(store, agents, chosen)
            worker = Worker(settings, transport, store, agents, runner)
            yield Engine(settings, transport, store, worker, runner, sandbox)
        finally:
            await llm.aclose()  # litellm's HTTP clients, if an LLM step ever ran
            await sandbox.close()
    finally:
        await transport.close()


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_format, settings.log_level)
