"""The `portico` CLI as a user runs it, as subprocesses against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import EngineProcess

REPO = Path(__file__).resolve().parents[2]


def portico(
    database_url: str, *args: str, timeout: float = 60, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORTICO_LOG_FORMAT": "json",
        **(extra_env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Any:
    proc = EngineProcess(database_url, tmp_path / "engine.log").start()
    yield proc
    proc.kill()


def test_migrate_is_idempotent(database_url: str) -> None:
    result = portico(database_url, "migrate")
    assert result.returncode == 0, result.stderr
    assert "0 migration(s) applied" in result.stdout


def test_apply_examples_then_send_and_wait(database_url: str, engine: EngineProcess) -> None:
    applied = portico(database_url, "agents", "apply", "examples/agents")
    assert applied.returncode == 0, applied.stderr
    assert "order-pricing" in applied.stdout and "feedback-insights" in applied.stdout

    payload = {"customer": "Ada", "items": [{"sku": "A", "qty": 2, "unit_price": 10}]}
    sent = portico(
        database_url,
        "signal",
        "send",
        "order-pricing",
        "--payload",
        json.dumps(payload),
        "--wait",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert report["status"] == "complete"
    steps = report["session"]["step_results"]
    assert [s["step_name"] for s in steps] == [
        "validate-order",
        "compute-totals",
        "invoice-summary",
    ]
    assert report["session"]["output"]["total"] == "24.00"

    bad = {"items": [{"sku": "B", "qty": 0, "unit_price": 1}]}
    failed = portico(
        database_url, "signal", "send", "order-pricing", "--payload", json.dumps(bad), "--wait"
    )
    assert failed.returncode == 1
    printed = " ".join(failed.stdout.split())  # rich wraps long lines at 80 columns off a terminal
    assert (
        'step 1 "validate-order" (python) failed: ValueError: item 1 (B): qty must be a ' in printed
    )


def test_send_refuses_bad_input_with_a_clear_message(database_url: str) -> None:
    no_agent = portico(database_url, "signal", "send", "--type", "run")
    assert no_agent.returncode == 2 and "needs an agent" in no_agent.stderr
    unknown = portico(database_url, "signal", "send", "nobody-here")
    assert unknown.returncode == 2 and "no agent named" in unknown.stderr
    bad_json = portico(database_url, "signal", "send", "--type", "fyi", "--payload", "{oops")
    assert bad_json.returncode == 2 and "--payload is not JSON" in bad_json.stderr


def test_fyi_without_wait_prints_the_signal_id(database_url: str) -> None:
    sent = portico(database_url, "signal", "send", "--type", "fyi", "--payload", '{"a": 1}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent fyi signal ")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command", [["run"], ["migrate"], ["agents", "list"], ["signal", "send", "--type", "fyi"]]
)
def test_an_unreachable_database_is_named_without_its_password(command: list[str]) -> None:
    url = f"postgresql://bob:hunter2@127.0.0.1:{_closed_port()}/shop"
    result = portico(url, *command)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "cannot connect to PostgreSQL at bob@127.0.0.1:" in said and "/shop" in said
    assert "Connection refused" in said and "DATABASE_URL" in said
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_role_the_engine_cannot_assume_is_a_clear_error(database_url: str) -> None:
    result = portico(database_url, "run", extra_env={"PORTICO_DB_ROLE": "no_such_role"})
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "cannot assume database role 'no_such_role'" in said and "PORTICO_DB_ROLE" in said
