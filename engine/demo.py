"""`portico demo`: the embedded database, the example agents and signals, one engine, end to end."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.markup import escape

from engine import agent_files, client, errors, models, report, shutdown
from engine.app import open_engine, resolve_database_url
from engine.config import Settings
from engine.db import target
from engine.steps.llm import key_variables_needed

# Example agents that call a model live here; the demo runs one only when the engine has the
# provider keys it needs, so the demo works without any key.
LLM_AGENTS_DIR = "agents_llm"


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
    return [d for d in (examples / "agents", examples / LLM_AGENTS_DIR) if d.is_dir()]


def signal_files(examples: Path) -> list[Path]:
    extra = examples / LLM_AGENTS_DIR / "signals" / "signals.yaml"
    return [examples / "signals.yaml", *([extra] if extra.is_file() else [])]


def missing_keys(
    definitions: list[models.AgentDefinition], environ: Mapping[str, str]
) -> dict[str, list[str]]:
    """Agent name → the provider key variables its LLM steps need and `environ` lacks."""
    missing = {}
    for definition in definitions:
        unset = sorted(v for v in key_variables_needed(definition.steps) if not environ.get(v))
        if unset:
            missing[definition.name] = unset
    return missing


async def run_demo(settings: Settings, examples: Path, console: Console, *, serve: bool) -> None:
    url = resolve_database_url(settings)
    console.print(f"[bold]database[/bold] {target.describe(url)}")
    definitions = [d for f in agent_files.expand(agent_dirs(examples)) for d in agent_files.load(f)]
    signals = [s for path in signal_files(examples) for s in load_signals(path)]
    skipped = missing_keys(definitions, os.environ)
    async with open_engine(settings, database_url=url) as engine:
        for definition in definitions:
            name = escape(definition.name)
            if definition.name in skipped:
                console.print(
                    f"[dim]skipped agent {name}: it calls a model; set "
                    f"{' and '.join(skipped[definition.name])} to see it run[/dim]"
                )
                continue
            await engine.store.apply_agent(definition)
            console.print(f"applied agent [bold]{name}[/bold] ({len(definition.steps)} steps)")
        engine_task = asyncio.create_task(engine.worker.run())
        remove = shutdown.install(engine.worker.stop)
        try:
            runnable = [s for s in signals if s.agent not in skipped]
            await _send_and_show(url, settings, runnable, console)
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
