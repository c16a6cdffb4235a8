"""`portico` commands: argument parsing only; the work happens in the modules they call."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from engine import agent_files, client, config, errors, models, report
from engine.app import configure_logging, open_engine, resolve_database_url
from engine.config import Settings
from engine.db import migrate as migrations

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Portico: event-driven agent runtime for Supabase.",
)
agents_app = typer.Typer(no_args_is_help=True, help="Manage agents.")
signal_app = typer.Typer(no_args_is_help=True, help="Send signals.")
app.add_typer(agents_app, name="agents")
app.add_typer(signal_app, name="signal")

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        help="PostgreSQL URL; default: the embedded server under PORTICO_DATA_DIR (.portico/)",
    ),
]
out = Console()
T = TypeVar("T")


def settings_for(database_url: str | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if database_url:
        values["database_url"] = database_url
    try:
        settings = config.load(**values)
    except errors.PorticoError as exc:
        raise fail(str(exc)) from exc
    configure_logging(settings)
    return settings


def fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=2)


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; Portico's own errors end it with their message, exit 2."""
    try:
        return asyncio.run(main)
    except (errors.PorticoError, TimeoutError) as exc:
        raise fail(str(exc)) from exc


@app.command()
def run(
    database_url: DatabaseUrl = None,
    concurrency: Annotated[int | None, typer.Option(help="Signals processed at once.")] = None,
    worker_id: Annotated[str | None, typer.Option(help="Name of this engine in leases.")] = None,
    drain: Annotated[bool, typer.Option(help="Exit when nothing is left to claim.")] = False,
) -> None:
    """Run the engine: claim signals, run agents, record sessions. Ctrl-C stops gracefully."""
    from engine import shutdown

    settings = settings_for(database_url, concurrency=concurrency, worker_id=worker_id)

    async def main() -> None:
        url = resolve_database_url(settings)
        async with open_engine(settings, database_url=url) as engine:
            remove = shutdown.install(engine.worker.stop)
            try:
                await engine.worker.run(drain=drain)
            finally:
                remove()

    run_async(main())


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    bootstrap: Annotated[
        migrations.Bootstrap,
        typer.Option(
            help="Recreate what a Supabase project provides: auto = only on plain PostgreSQL."
        ),
    ] = migrations.Bootstrap.AUTO,
    migrations_dir: Annotated[
        Path | None, typer.Option(help="Default: supabase/migrations")
    ] = None,
) -> None:
    """Apply supabase/migrations (once each, recorded like the Supabase CLI does)."""
    settings = settings_for(database_url)
    try:
        url = resolve_database_url(settings, migrate_embedded=False)
        applied = migrations.migrate(url, migrations_dir=migrations_dir, bootstrap=bootstrap)
    except (errors.PorticoError, OSError, ValueError) as exc:
        raise fail(str(exc)) from exc
    out.print(
        f"{len(applied)} migration(s) applied"
        + "".join(f"\n  {m.version} {m.name}" for m in applied)
    )


@agents_app.command("apply")
def agents_apply(
    paths: Annotated[list[Path], typer.Argument(help="YAML/JSON agent files or directories.")],
    database_url: DatabaseUrl = None,
) -> None:
    """Create or update agents by name; each file's steps replace the agent's old steps."""
    settings = settings_for(database_url)

    async def main() -> None:
        definitions = [d for f in agent_files.expand(paths) for d in agent_files.load(f)]
        url = resolve_database_url(settings)
        from engine.store import Store
        from engine.transports.postgres import PostgresTransport

        transport = PostgresTransport(url, role=settings.db_role, pool_size=2)
        await transport.open()
        try:
            store = Store(transport, worker_id="cli", lease_seconds=1, max_attempts=1)
            for definition in definitions:
                agent_id = await store.apply_agent(definition)
                out.print(
                    f"applied agent [bold]{escape(definition.name)}[/bold] "
                    f"({len(definition.steps)} steps) id={agent_id}"
                )
        finally:
            await transport.close()

    run_async(main())


@agents_app.command("list")
def agents_list(database_url: DatabaseUrl = None) -> None:
    """List agents with their step counts."""
    settings = settings_for(database_url)

    async def main() -> None:
        conn = await client.connect(resolve_database_url(settings), settings.db_role)
        async with conn:
            rows = await (
                await conn.execute(
                    "select a.name, a.id, a.is_active, a.owner_id, count(s.id) as steps"
                    " from public.agents a left join public.steps s on s.agent_id = a.id"
                    " group by a.id order by a.name"
                )
            ).fetchall()
        for row in rows:
            state = "active" if row["is_active"] else "inactive"
            owner = row["owner_id"] or "shared"
            name = escape(row["name"])
            out.print(f"{name:<28} {row['id']}  {row['steps']} steps  {state}  {owner}")

    run_async(main())


@signal_app.command("send")
def signal_send(
    agent: Annotated[
        str | None, typer.Argument(help="Agent name or id (required for run).")
    ] = None,
    signal_type: Annotated[models.SignalType, typer.Option("--type")] = models.SignalType.RUN,
    payload: Annotated[str, typer.Option(help="JSON payload.")] = "{}",
    wait: Annotated[bool, typer.Option(help="Wait for the outcome and print the session.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 60.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Insert a signal as a front end would; with --wait, print how it ended."""
    settings = settings_for(database_url)

    async def main() -> int:
        value = client.parse_payload(payload)
        if signal_type is models.SignalType.RUN and not agent:
            raise errors.ConfigurationError(
                "a run signal needs an agent: portico signal send AGENT"
            )
        conn = await client.connect(resolve_database_url(settings), settings.db_role)
        async with conn:
            agent_id = await client.find_agent(conn, agent) if agent else None
            signal_id = await client.send_signal(
                conn, signal_type=signal_type, agent_id=agent_id, payload=value
            )
            result = (
                await client.wait_for_outcome(conn, signal_id, timeout_s=timeout)
                if wait
                else await client.report(conn, signal_id)
            )
        if as_json:
            sys.stdout.write(report.as_json(result) + "\n")
        elif wait:
            report.render(result, out)
        else:
            out.print(f"sent {signal_type.value} signal {signal_id}")
        return 1 if wait and result.status is models.SignalStatus.ERROR else 0

    raise typer.Exit(code=run_async(main()))


@app.command()
def demo(
    serve: Annotated[
        bool, typer.Option(help="Keep the engine running after the examples.")
    ] = False,
    examples_dir: Annotated[Path, typer.Option(help="Folder with agents/ and signals.yaml")] = Path(
        "examples"
    ),
    database_url: DatabaseUrl = None,
) -> None:
    """Example agents and signals, end to end, on the embedded PostgreSQL (or --database-url)."""
    from engine import demo as demo_module

    settings = settings_for(database_url)
    run_async(demo_module.run_demo(settings, examples_dir, out, serve=serve))


def main() -> None:
    app()
