"""Logging: JSON lines off a terminal, and secrets never rendered."""

from __future__ import annotations

import io
import json

import pytest
import structlog

from engine import logs


@pytest.fixture(autouse=True)
def _reset() -> object:
    yield
    structlog.reset_defaults()


def test_json_lines_when_not_a_terminal_with_bound_context() -> None:
    stream = io.StringIO()
    logs.configure("auto", stream=stream)
    with structlog.contextvars.bound_contextvars(signal_id="s1", agent_id="a1", session_id="r1"):
        structlog.get_logger().info("step_finished", step="one")
    line = json.loads(stream.getvalue())
    assert line["event"] == "step_finished"
    assert (line["signal_id"], line["agent_id"], line["session_id"]) == ("s1", "a1", "r1")


def test_secret_fields_and_secret_env_values_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "srk-very-secret-value")
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    structlog.get_logger().info(
        "provider_failed", api_key="sk-123", error="bad auth with srk-very-secret-value"
    )
    text = stream.getvalue()
    assert "sk-123" not in text and "srk-very-secret-value" not in text
    line = json.loads(text)
    assert line["api_key"] == logs.REDACTED and logs.REDACTED in line["error"]


def test_token_counts_are_not_mistaken_for_tokens() -> None:
    stream = io.StringIO()
    logs.configure("json", stream=stream)
    structlog.get_logger().info("llm_call_finished", total_tokens=42, access_token="at-secret")
    line = json.loads(stream.getvalue())
    assert line["total_tokens"] == 42 and line["access_token"] == logs.REDACTED
