"""Render a signal report (signal, session, step results) for people or as one JSON object."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import models

STATUS_STYLE = {
    "complete": "green",
    "success": "green",
    "error": "red",
    "processing": "yellow",
    "running": "yellow",
    "pending": "dim",
}


def as_json(report: models.SignalReport) -> str:
    return report.model_dump_json()


def _brief(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(report: models.SignalReport, console: Console) -> None:
    style = STATUS_STYLE.get(report.status, "")
    title = f"{report.type} signal {report.id}"
    if report.agent_name:
        title += f" → agent {report.agent_name}"
    console.print(f"[bold]{title}[/bold]: [{style}]{report.status}[/{style}]")
    if report.error:
        console.print(f"  [red]error:[/red] {escape(report.error)}")
    session = report.session
    if session is None:
        return
    table = Table(show_header=True, header_style="bold", pad_edge=False)
    for column in ("#", "step", "type", "status", "ms", "output / error"):
        table.add_column(column, overflow="fold")
    for result in session.step_results:
        ok = result.status == "success"
        table.add_row(
            str(result.position + 1),
            escape(result.step_name),
            result.step_type,
            f"[{STATUS_STYLE[result.status]}]{result.status}[/]",
            str(result.duration_ms),
            escape(_brief(result.output)) if ok else f"[red]{escape(result.error or '')}[/red]",
        )
    console.print(table)
    if session.status == "success":
        console.print(f"  output: {escape(_brief(session.output, 200))}")
