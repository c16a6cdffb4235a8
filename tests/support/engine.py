"""Engines for tests: in-process (an asyncio task) or as `python -m engine run` subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal as os_signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from engine import models
from engine.app import Engine, open_engine
from engine.config import Settings
from engine.sandbox.settings import SandboxSettings
from engine.steps.base import StepExecutor

REPO = Path(__file__).resolve().parents[2]
FAST = {"sweep_seconds": 0.2, "lease_seconds": 5, "shutdown_grace_seconds": 5.0}
SMALL_SANDBOX = SandboxSettings(pool_size=1)


def test_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": database_url, "sandbox": SMALL_SANDBOX, **FAST}
    values.update(overrides)
    return Settings(**values)


@dataclass
class RunningEngine:
    engine: Engine
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.engine.worker.stop()
        await asyncio.wait_for(self.task, timeout=30)


@contextlib.asynccontextmanager
async def running_engine(
    database_url: str, *, executors: Mapping[str, StepExecutor] | None = None, **overrides: Any
) -> AsyncIterator[RunningEngine]:
    settings = test_settings(database_url, **overrides)
    async with open_engine(settings, database_url=database_url, executors=executors) as engine:
        task = asyncio.create_task(engine.worker.run())
        running = RunningEngine(engine, task)
        try:
            yield running
        finally:
            if not task.done():
                await running.stop()
            else:
                task.result()  # surface a crash of the loop


@dataclass
class EngineProcess:
    """`python -m engine run` in its own process, logging JSON lines to a file."""

    database_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "PORTICO_SWEEP_SECONDS": "0.2",
            "PORTICO_LEASE_SECONDS": "2",
            "PORTICO_SANDBOX__POOL_SIZE": "1",
            "PORTICO_LOG_FORMAT": "json",
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "engine", "run"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        lines = (
            self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        )
        found = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                found.append(json.loads(line))
        return found

    def has_event(self, name: str) -> bool:
        return any(e.get("event") == name for e in self.events())

    def send(self, signum: int = os_signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Db:
    """Plain SQL access for tests (as the superuser that created the database)."""

    def __init__(self, url: str):
        self.url = url

    async def __aenter__(self) -> Db:
        self.conn = await psycopg.AsyncConnection.connect(
            self.url, autocommit=True, row_factory=dict_row
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def apply(self, name: str, steps: list[dict[str, Any]], **fields: Any) -> UUID:
        definition = models.AgentDefinition(name=name, steps=steps, **fields)
        row = await (
            await self.conn.execute(
                "select public.apply_agent(%s) as id", (Jsonb(definition.model_dump(mode="json")),)
            )
        ).fetchone()
        assert row is not None
        return UUID(str(row["id"]))

    async def send(self, agent_id: UUID | None, payload: Any = None, type: str = "run") -> UUID:
        row = await (
            await self.conn.execute(
                "insert into public.signals (type, agent_id, payload)"
                " values (%s, %s, %s) returning id",
                (type, agent_id, Jsonb(payload if payload is not None else {})),
            )
        ).fetchone()
        assert row is not None
        return UUID(str(row["id"]))

    async def signal(self, signal_id: UUID) -> dict[str, Any]:
        row = await (
            await self.conn.execute("select public.signal_report(%s) as r", (signal_id,))
        ).fetchone()
        assert row is not None
        report: dict[str, Any] = row["r"]
        return report

    async def finished(self, signal_id: UUID) -> dict[str, Any] | None:
        report = await self.signal(signal_id)
        return report if report["status"] in ("complete", "error") else None

    async def rows(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return await (await self.conn.execute(query, params)).fetchall()  # type: ignore[arg-type]


def python_step(name: str, code: str, **config: Any) -> dict[str, Any]:
    return {"name": name, "type": "python", "config": {"code": code, **config}}


# Busy for `input["seconds"]` of wall-clock time from its own start, whatever the CPU's
# speed: long enough to be caught mid-run, short enough to finish within a grace period.
SPIN = python_step(
    "spin",
    "import datetime\n"
    "now = datetime.datetime.now\n"
    "started = now()\n"
    "while (now() - started).total_seconds() < input.get('seconds', 0):\n"
    "    pass\n"
    "return input",
    timeout_ms=60_000,
)
