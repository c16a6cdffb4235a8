"""LLMStep through a FakeClient (doubles the LLM provider) and FakeClock (doubles sleep):
config, templates, keys, output formats, metadata, retries; litellm is never imported here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llm_fakes import FakeClient, FakeClock, answer, context, llm_step

from engine.llm import keys, protocol
from engine.llm.options import LLMOptions
from engine.steps.llm import LLMStep

ENV = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-test-0123"}
BASE = {"prompt_template": "Summarise: {{ ticket.body }}", "model": "gpt-4o-mini"}
REPO = Path(__file__).resolve().parents[2]


def make_step(client: FakeClient, clock: FakeClock | None = None, **options: object) -> LLMStep:
    return LLMStep(
        client,
        options=LLMOptions.model_validate(options),
        environ=ENV,
        sleep=(clock or FakeClock()).sleep,
        jitter=lambda: 0.0,
    )


async def run(step: LLMStep, config: dict[str, object], step_input: object = None):
    if step_input is None:
        step_input = {"ticket": {"body": "Printer on fire", "id": 7}}
    return await step.execute(llm_step(config), step_input, context())


async def test_text_output_and_metadata() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer("It burns.", cost_usd=0.0042, usage=(20, 5)))
    outcome = await run(make_step(client), {**BASE, "temperature": 0.2, "max_tokens": 50})
    assert outcome.ok, outcome.error
    assert outcome.output == "It burns."
    assert outcome.metadata == {
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        "model": "gpt-4o-mini-2024-07-18",
        "requested_model": "openai/gpt-4o-mini",
        "finish_reason": "stop",
        "cost_usd": 0.0042,
        "attempts": 1,
    }
    json.dumps(outcome.metadata)  # must fit step_results.metadata (jsonb)
    (request,) = client.requests
    assert request.model == "openai/gpt-4o-mini"
    assert request.messages == ({"role": "user", "content": "Summarise: Printer on fire"},)
    assert (request.temperature, request.max_tokens) == (0.2, 50)
    assert request.api_key == ENV["OPENAI_API_KEY"]


async def test_system_prompt_is_templated_and_sent_first() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer())
    config = {**BASE, "system": "You help ticket {{ ticket.id }}."}
    assert (await run(make_step(client), config)).ok
    assert client.requests[0].messages[0] == {"role": "system", "content": "You help ticket 7."}


async def test_defaults_for_max_tokens_and_timeout_and_clamped_timeout() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer(), answer())
    step = make_step(client, default_max_tokens=333, default_timeout_ms=4000, max_timeout_ms=9000)
    await run(step, BASE)
    await run(step, {**BASE, "timeout_ms": 60_000})
    first, second = client.requests
    assert (first.max_tokens, first.temperature, first.timeout_s) == (333, None, 4.0)
    assert second.timeout_s == 9.0


async def test_json_output_is_parsed() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer('{"priority": "high", "tags": ["fire"]}'))
    outcome = await run(make_step(client), {**BASE, "response_format": "json"})
    assert outcome.output == {"priority": "high", "tags": ["fire"]}


async def test_json_in_one_code_fence_is_accepted() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer('```json\n{"ok": true}\n```\n'))
    outcome = await run(make_step(client), {**BASE, "response_format": "json"})
    assert outcome.output == {"ok": True}


async def test_invalid_json_fails_showing_the_start_of_the_reply() -> None:
    """FakeClient doubles the LLM provider."""
    reply = "Sure! Here is the JSON you asked for: {priority: high}" + " padding" * 100
    client = FakeClient(answer(reply, usage=(30, 40)))
    outcome = await run(make_step(client), {**BASE, "response_format": "json"})
    assert not outcome.ok
    assert "not JSON" in outcome.error
    assert "Sure! Here is the JSON you asked for" in outcome.error
    assert len(outcome.error) < 600
    # The call happened and cost money: usage is kept even though the step failed.
    assert outcome.metadata["usage"]["total_tokens"] == 70


async def test_truncated_json_says_to_raise_max_tokens() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer('{"a": [1, 2', finish_reason="length"))
    outcome = await run(make_step(client), {**BASE, "response_format": "json"})
    assert "raise max_tokens" in outcome.error


async def test_nan_is_not_json() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer("NaN"))
    outcome = await run(make_step(client), {**BASE, "response_format": "json"})
    assert "not JSON" in outcome.error


async def test_missing_key_fails_naming_the_variable_without_calling() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient()
    step = LLMStep(client, environ={"OPENAI_API_KEY": "sk-x"})
    outcome = await run(step, {**BASE, "model": "claude-3"})
    assert "ANTHROPIC_API_KEY" in outcome.error
    assert client.requests == []


async def test_unknown_model_fails_saying_how_to_name_one() -> None:
    """FakeClient doubles the LLM provider."""
    outcome = await run(make_step(FakeClient()), {**BASE, "model": "claude-3-opus"})
    assert "unknown model name 'claude-3-opus'" in outcome.error
    assert "provider/model-id" in outcome.error


async def test_unknown_config_key_is_named_with_the_accepted_keys() -> None:
    """FakeClient doubles the LLM provider."""
    outcome = await run(make_step(FakeClient()), {**BASE, "api_key": "sk-nope", "top_p": 1})
    assert "unknown config key 'api_key'" in outcome.error
    assert "unknown config key 'top_p'" in outcome.error
    assert "prompt_template, model, temperature" in outcome.error
    assert "sk-nope" not in outcome.error


async def test_out_of_range_temperature_is_a_config_error() -> None:
    """FakeClient doubles the LLM provider."""
    outcome = await run(make_step(FakeClient()), {**BASE, "temperature": 1.5})
    assert "config.temperature" in outcome.error


async def test_template_error_fails_the_step_before_calling() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient()
    outcome = await run(make_step(client), {**BASE, "prompt_template": "{{ ticket.title }}"})
    assert "{{ ticket.title }}" in outcome.error
    assert "'body', 'id'" in outcome.error
    assert client.requests == []


async def test_prompt_cap_comes_from_options() -> None:
    """FakeClient doubles the LLM provider."""
    outcome = await run(
        make_step(FakeClient(), max_prompt_chars=10), BASE, {"ticket": {"body": "x" * 100}}
    )
    assert "more than 10 characters" in outcome.error


async def test_retries_then_succeeds_and_logs_each_retry() -> None:
    """FakeClient doubles the LLM provider; FakeClock doubles sleep."""
    clock = FakeClock()
    client = FakeClient(
        protocol.LLMCallError("Rate limit reached", status=429, retryable=True),
        protocol.LLMCallError("upstream broke", status=502, retryable=True),
        answer("done"),
    )
    outcome = await run(make_step(client, clock, retry_base_delay_ms=1000), BASE)
    assert outcome.output == "done"
    assert outcome.metadata["attempts"] == 3
    assert clock.sleeps == [0.5, 1.0]
    assert "attempt 1 failed (status 429 (rate limited): Rate limit reached)" in outcome.logs
    assert "attempt 2 failed (status 502 (bad gateway): upstream broke)" in outcome.logs


async def test_final_error_names_message_status_and_attempts() -> None:
    """FakeClient doubles the LLM provider; FakeClock doubles sleep."""
    client = FakeClient(
        *[protocol.LLMCallError("The server had an error", status=500, retryable=True)] * 3
    )
    outcome = await run(make_step(client, max_attempts=3), BASE)
    assert outcome.error == (
        "LLM call to openai/gpt-4o-mini failed after 3 attempts: status 500 (server error): "
        "The server had an error"
    )
    assert outcome.metadata == {"requested_model": "openai/gpt-4o-mini", "attempts": 3}


async def test_client_error_is_not_retried_and_hints_at_the_key() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(protocol.LLMCallError("Incorrect API key provided", status=401))
    outcome = await run(make_step(client), BASE)
    assert outcome.error.startswith("LLM call to openai/gpt-4o-mini failed after 1 attempt: ")
    assert "status 401 (unauthorized)" in outcome.error
    assert "check the API key in OPENAI_API_KEY" in outcome.error
    assert len(client.requests) == 1


async def test_unsupported_params_message_is_passed_through() -> None:
    """FakeClient doubles the LLM provider."""
    message = "model openai/o3 does not accept the step's parameters: ... temperature ..."
    client = FakeClient(protocol.LLMCallError(message, status=400, kind="unsupported_params"))
    outcome = await run(make_step(client), {**BASE, "model": "openai/o3", "temperature": 0.3})
    assert outcome.error == message


async def test_api_base_never_receives_the_engines_key() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer())
    config = {**BASE, "model": "openai/local", "api_base": "http://127.0.0.1:9/v1"}
    assert (await run(make_step(client), config)).ok
    assert client.requests[0].api_key == keys.NO_KEY
    assert client.requests[0].api_base == "http://127.0.0.1:9/v1"


async def test_trusted_api_base_gets_the_key_but_a_lookalike_does_not() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer(), answer())
    step = make_step(client, trusted_api_bases=("https://llm.internal",))
    await run(step, {**BASE, "api_base": "https://llm.internal/v1"})
    await run(step, {**BASE, "api_base": "https://llm.internal.evil.example/v1"})
    assert [r.api_key for r in client.requests] == [ENV["OPENAI_API_KEY"], keys.NO_KEY]


async def test_api_base_can_be_disallowed() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient()
    outcome = await run(
        make_step(client, allow_api_base=False), {**BASE, "api_base": "http://10.0.0.1/v1"}
    )
    assert "api_base is not allowed" in outcome.error
    assert client.requests == []


async def test_key_never_appears_in_outcome() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer("fine"))
    outcome = await run(make_step(client), BASE)
    rendered = json.dumps([outcome.output, outcome.error, outcome.logs, outcome.metadata])
    assert ENV["OPENAI_API_KEY"] not in rendered
    assert ENV["OPENAI_API_KEY"] not in repr(client.requests[0])


async def test_aclose_closes_the_client() -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient()
    await make_step(client).aclose()
    assert client.closed


def test_running_an_llm_step_with_a_fake_client_does_not_import_litellm() -> None:
    """Runs in a fresh interpreter, since other tests in this session do import litellm."""
    script = """
import asyncio, sys
sys.path.insert(0, "tests/llm")
from llm_fakes import FakeClient, answer, context, llm_step
from engine.steps.llm import LLMStep
step = LLMStep(FakeClient(answer("hi")), environ={"OPENAI_API_KEY": "sk-x"})
config = {"prompt_template": "{{ input }}", "model": "gpt-4"}
outcome = asyncio.run(step.execute(llm_step(config), "hello", context()))
assert outcome.output == "hi", outcome
print("litellm" in sys.modules)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_only_the_client_module_imports_litellm() -> None:
    imports_litellm = re.compile(r"^\s*(?:import|from)\s+litellm\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "engine").rglob("*.py")
        if imports_litellm.search(path.read_text())
    ]
    assert offenders == ["engine/llm/client.py"]


@pytest.mark.parametrize("bad", [{}, {"prompt_template": "x"}, {"model": "gpt-4"}])
async def test_missing_required_fields_are_named(bad: dict[str, object]) -> None:
    """FakeClient doubles the LLM provider."""
    outcome = await run(make_step(FakeClient()), bad)
    assert "invalid llm step config" in outcome.error
    for field in ("prompt_template", "model"):
        if field not in bad:
            assert f"config.{field}" in outcome.error


def test_settings_can_be_given_as_keywords_over_options() -> None:
    step = LLMStep(options=LLMOptions(max_attempts=5), max_attempts=2, default_timeout_ms=1234)
    assert step.options.max_attempts == 2
    assert step.options.default_timeout_ms == 1234


def test_misspelt_setting_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="max_attempt"):
        LLMStep(max_attempt=2)
