"""The `portico` CLI as a user runs it, as subprocesses against a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.engine import EngineProcess

REPO = Path(__file__).resolve().parents[2]


def portico(database_url: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PORTICO_LOG_FORMAT": "json"}
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
