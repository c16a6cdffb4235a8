"""Render a signal report (signal, session, step results) for people or as one JSON object."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {
    "complete": "green",
    "success": "green",
    "error": "red",
    "processing": "yellow",
    "running": "yellow",
    "pending": "dim",
}


def as_json(report: dict[str, Any]) -> str:
    return json.dumps(report, default=str, ensure_ascii=False)


def _brief(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(report: dict[str, Any], console: Console) -> None:
    status = report["status"]
    style = STATUS_STYLE.get(status, "")
    title = f"{report['type']} signal {report['id']}"
    if report.get("agent_name"):
        title += f" → agent {report['agent_name']}"
    console.print(f"[bold]{title}[/bold]: [{style}]{status}[/{style}]")
    if report.get("error"):
        console.print(f"  [red]error:[/red] {report['error']}")
    session = report.get("session")
    if not session:
        return
    table = Table(show_header=True, header_style="bold", pad_edge=False)
    for column in ("#", "step", "type", "status", "ms", "output / error"):
        table.add_column(column, overflow="fold")
    for result in session.get("step_results", []):
        ok = result["status"] == "success"
        table.add_row(
            str(result["position"] + 1),
            result["step_name"],
            result["step_type"],
            f"[{STATUS_STYLE[result['status']]}]{result['status']}[/]",
            str(result["duration_ms"]),
            _brief(result["output"]) if ok else f"[red]{result['error']}[/red]",
        )
    console.print(table)
    if session["status"] == "success":
        console.print(f"  output: {_brief(session.get('output'), 200)}")
