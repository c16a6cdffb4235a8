"""`portico demo`: the embedded database, the example agents and signals, one engine, end to end."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.markup import escape

from engine import agent_files, client, errors, models, report, shutdown
from engine.app import open_engine, resolve_database_url
from engine.config import Settings

# LLM example agents live here and are applied only when a provider key is set.
LLM_AGENTS_DIR = "agents_llm"
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")


class ExampleSignal(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str
    type: models.SignalType
    agent: str | None = None
    payload: models.JsonValue = None


def load_signals(path: Path) -> list[ExampleSignal]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigurationError(f"cannot read example signals {path}: {exc}") from exc
    return [ExampleSignal.model_validate(item) for item in document]


def agent_dirs(examples: Path) -> list[Path]:
    dirs = [examples / "agents"]
    llm_dir = examples / LLM_AGENTS_DIR
    if llm_dir.is_dir() and any(os.environ.get(key) for key in PROVIDER_KEYS):
        dirs.append(llm_dir)
    return dirs


async def run_demo(settings: Settings, examples: Path, console: Console, *, serve: bool) -> None:
    url = resolve_database_url(settings)
    console.print(f"[bold]database[/bold] {url}")
    definitions = [d for f in agent_files.expand(agent_dirs(examples)) for d in agent_files.load(f)]
    signals = load_signals(examples / "signals.yaml")
    async with open_engine(settings, database_url=url) as engine:
        for definition in definitions:
            await engine.store.apply_agent(definition)
            name, count = escape(definition.name), len(definition.steps)
            console.print(f"applied agent [bold]{name}[/bold] ({count} steps)")
        engine_task = asyncio.create_task(engine.worker.run())
        remove = shutdown.install(engine.worker.stop)
        try:
            await _send_and_show(url, settings, signals, console)
            if serve:
                console.print(
                    "\n[bold]engine running[/bold]; send more with "
                    "`.venv/bin/portico signal send order-pricing --payload '{...}' --wait` "
                    "from another terminal. Ctrl-C stops it."
                )
                await engine_task
        finally:
            engine.worker.stop()
            await engine_task
            remove()
        counters = engine.runner.counters
        console.print(
            f"\n[bold]engine stopped[/bold]: {counters.runs_succeeded} runs succeeded, "
            f"{counters.runs_failed} failed, {counters.syncs} sync, {counters.fyi} fyi"
        )


async def _send_and_show(
    url: str, settings: Settings, signals: list[ExampleSignal], console: Console
) -> None:
    conn = await client.connect(url, settings.db_role)
    async with conn:
        for example in signals:
            console.rule(example.note)
            agent_id = await client.find_agent(conn, example.agent) if example.agent else None
            signal_id = await client.send_signal(
                conn, signal_type=example.type, agent_id=agent_id, payload=example.payload
            )
            outcome = await client.wait_for_outcome(conn, signal_id, timeout_s=60)
            report.render(outcome, console)
