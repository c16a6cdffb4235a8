"""Provider contracts through the real litellm client, with respx doubling the OpenAI chat
completions and Anthropic messages endpoints (`using="httpx"`, since litellm's default aiohttp
transport is invisible to respx's default mode). The network guard fails any request that escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import respx
import structlog
from llm_fakes import FakeClock, context, llm_step
from llm_network_guard import NetworkGuard

from engine.llm import protocol
from engine.llm.options import LLMOptions
from engine.steps.llm import LLMStep

OPENAI_URL = "https://api.openai.com/v1/chat/completions"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_KEY = "sk-test-openai-abcdef123456"
ANTHROPIC_KEY = "sk-ant-test-abcdef123456"
MESSAGES = (
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Colour of the sky?"},
)


def openai_reply(model: str = "gpt-4o-mini-2024-07-18", usage: tuple[int, int] = (11, 7)):
    prompt, completion = usage
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Blue"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
    )


def anthropic_reply(stop_reason: str = "end_turn") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "Blue"}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 5},
        },
    )


def openai_error(status: int, message: str, headers: dict[str, str] | None = None):
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return httpx.Response(status, json=body, headers=headers or {})


def anthropic_error(status: int, kind: str, message: str) -> httpx.Response:
    return httpx.Response(
        status, json={"type": "error", "error": {"type": kind, "message": message}}
    )


def request(model: str, **overrides: object) -> protocol.LLMRequest:
    fields: dict[str, object] = {
        "model": model,
        "messages": MESSAGES,
        "timeout_s": 5.0,
        "temperature": 0.2,
        "max_tokens": 10,
        "api_key": ANTHROPIC_KEY if model.startswith("anthropic/") else OPENAI_KEY,
    }
    fields.update(overrides)
    return protocol.LLMRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def mock_router() -> Iterator[respx.MockRouter]:
    with respx.mock(using="httpx", assert_all_called=False, assert_all_mocked=True) as router:
        yield router


async def test_openai_request_body_usage_and_cost(litellm_client, mock_router) -> None:
    """respx doubles OpenAI's chat completions endpoint."""
    route = mock_router.post(OPENAI_URL).mock(return_value=openai_reply())
    response = await litellm_client.complete(request("openai/gpt-4o-mini"))
    assert route.call_count == 1
    sent = route.calls[0].request
    assert json.loads(sent.content) == {
        "model": "gpt-4o-mini",
        "messages": [dict(message) for message in MESSAGES],
        "temperature": 0.2,
        "max_tokens": 10,
    }
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert response.text == "Blue"
    assert response.model == "gpt-4o-mini-2024-07-18"
    assert response.finish_reason == "stop"
    assert response.usage == protocol.Usage(11, 7, 18)
    # litellm's bundled 1.110.2 prices: $0.15 / $0.60 per million tokens.
    assert response.cost_usd == pytest.approx(11 * 0.15e-6 + 7 * 0.60e-6)


async def test_anthropic_request_body_usage_and_cost(litellm_client, mock_router) -> None:
    """respx doubles Anthropic's messages endpoint."""
    route = mock_router.post(ANTHROPIC_URL).mock(return_value=anthropic_reply())
    response = await litellm_client.complete(
        request("anthropic/claude-sonnet-4-5", temperature=0.3)
    )
    sent = route.calls[0].request
    body = json.loads(sent.content)
    assert set(body) == {"model", "messages", "system", "temperature", "max_tokens"}
    assert body["model"] == "claude-sonnet-4-5"
    assert (body["temperature"], body["max_tokens"]) == (0.3, 10)
    assert body["system"] == [{"type": "text", "text": "Answer in one word."}]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Colour of the sky?"}]}
    ]
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert response.text == "Blue"
    assert response.model == "claude-sonnet-4-5-20250929"
    assert response.finish_reason == "stop"  # litellm maps end_turn to OpenAI's word
    assert response.usage == protocol.Usage(12, 5, 17)
    # litellm's bundled prices: $3 / $15 per million tokens.
    assert response.cost_usd == pytest.approx(12 * 3e-6 + 5 * 15e-6)


async def test_anthropic_max_tokens_stop_is_length(litellm_client, mock_router) -> None:
    """respx doubles Anthropic's messages endpoint."""
    mock_router.post(ANTHROPIC_URL).mock(return_value=anthropic_reply(stop_reason="max_tokens"))
    response = await litellm_client.complete(request("anthropic/claude-haiku-4-5"))
    assert response.finish_reason == "length"


async def test_unpriced_model_has_no_cost(litellm_client, mock_router) -> None:
    """respx doubles OpenAI's chat completions endpoint."""
    mock_router.post(OPENAI_URL).mock(return_value=openai_reply(model="my-finetune"))
    response = await litellm_client.complete(request("openai/my-finetune-not-in-price-map"))
    assert response.cost_usd is None
    assert response.usage.total_tokens == 18


@pytest.mark.parametrize("model", ["openai/gpt-5", "openai/gpt-5-mini", "openai/o3-mini"])
@pytest.mark.parametrize("temperature", [None, 1])
async def test_reasoning_model_gets_max_completion_tokens(
    litellm_client, mock_router, model: str, temperature: float | None
) -> None:
    """respx doubles OpenAI's chat completions endpoint."""
    route = mock_router.post(OPENAI_URL).mock(return_value=openai_reply(model=model))
    await litellm_client.complete(request(model, temperature=temperature))
    body = json.loads(route.calls[0].request.content)
    assert body["max_completion_tokens"] == 10
    assert "max_tokens" not in body
    assert body.get("temperature") == temperature  # temperature 1 is the one they accept


@pytest.mark.parametrize("model", ["openai/gpt-5", "openai/gpt-5-mini", "openai/o1", "openai/o3"])
async def test_reasoning_model_refuses_temperature_clearly(
    litellm_client, mock_router, model: str
) -> None:
    """respx doubles OpenAI's chat completions endpoint (it must not be called)."""
    route = mock_router.post(OPENAI_URL).mock(return_value=openai_reply())
    with pytest.raises(protocol.LLMCallError) as caught:
        await litellm_client.complete(request(model, temperature=0.2))
    error = caught.value
    assert route.call_count == 0
    assert (error.kind, error.retryable) == ("unsupported_params", False)
    assert error.message.startswith(f"model {model} does not accept the step's parameters: ")
    assert "Only temperature=1 is supported." in error.message
    assert error.message.endswith("accept only temperature 1, so set it to 1 or leave it out.")
    # litellm's advice names switches a step cannot set.
    for foreign in ("drop_params", "reasoning_effort", "litellm", "Traceback"):
        assert foreign not in error.message


GPT = "openai/gpt-4o-mini"
CLAUDE = "anthropic/claude-sonnet-4-5"
CASES = [
    (GPT, openai_error(401, f"Incorrect API key: {OPENAI_KEY}"), 401),
    (GPT, openai_error(404, "The model does not exist"), 404),
    (GPT, openai_error(429, "Rate limit reached", {"retry-after": "2"}), 429),
    (GPT, openai_error(500, "The server had an error"), 500),
    (GPT, openai_error(503, "Overloaded"), 503),
    (CLAUDE, anthropic_error(401, "authentication_error", "invalid x-api-key"), 401),
    ("anthropic/claude-3", anthropic_error(404, "not_found_error", "model: claude-3"), 404),
    (CLAUDE, anthropic_error(429, "rate_limit_error", "Rate limit exceeded"), 429),
    (CLAUDE, anthropic_error(500, "api_error", "Internal server error"), 500),
    (CLAUDE, anthropic_error(529, "overloaded_error", "Overloaded"), 500),
]


def url_for(model: str) -> str:
    return ANTHROPIC_URL if model.startswith("anthropic/") else OPENAI_URL


@pytest.mark.parametrize(("model", "reply", "status"), CASES)
async def test_provider_errors_map_to_status_and_retryability(
    litellm_client, mock_router, model: str, reply: httpx.Response, status: int
) -> None:
    """respx doubles the provider endpoint with the provider's own error body."""
    route = mock_router.post(url_for(model)).mock(return_value=reply)
    with pytest.raises(protocol.LLMCallError) as caught:
        await litellm_client.complete(request(model))
    error = caught.value
    assert route.call_count == 1  # no hidden SDK or litellm retries
    assert error.status == status
    assert error.retryable is (status == 429 or status >= 500)
    provider_message = json.loads(reply.content)["error"]["message"]
    assert error.message == provider_message.replace(OPENAI_KEY, "[redacted]")
    assert "litellm" not in error.message
    if status == 429 and model.startswith("openai/"):
        assert error.retry_after_s == 2.0


@pytest.mark.parametrize("model", [GPT, CLAUDE])
async def test_timeout_is_retryable_408(litellm_client, mock_router, model: str) -> None:
    """respx doubles the provider endpoint and raises a read timeout."""
    mock_router.post(url_for(model)).mock(side_effect=httpx.ReadTimeout("read timed out"))
    with pytest.raises(protocol.LLMCallError) as caught:
        await litellm_client.complete(request(model))
    assert (caught.value.status, caught.value.retryable, caught.value.kind) == (
        408,
        True,
        "timeout",
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("connection refused"), httpx.RemoteProtocolError("peer closed")]
)
async def test_connection_errors_are_retryable_and_not_called_server_errors(
    litellm_client, mock_router, model: str, failure: Exception
) -> None:
    """respx doubles the provider endpoint and fails the connection."""
    mock_router.post(url_for(model)).mock(side_effect=failure)
    with pytest.raises(protocol.LLMCallError) as caught:
        await litellm_client.complete(request(model))
    error = caught.value
    assert (error.kind, error.retryable, error.status) == ("connection_error", True, None)
    assert error.message.startswith(f"no response from {model.partition('/')[0]} (")


async def test_every_call_sets_a_timeout_and_switches_litellm_retries_off(
    litellm_client, mock_router, monkeypatch: pytest.MonkeyPatch
) -> None:
    """respx doubles OpenAI's endpoint; a spy wraps litellm.acompletion (calling the real one)
    to see the arguments of each attempt, the retried one included."""
    import litellm

    seen: list[dict[str, object]] = []
    real = litellm.acompletion

    async def spy(**kwargs: object) -> object:
        seen.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", spy)
    mock_router.post(OPENAI_URL).mock(
        side_effect=[openai_error(500, "The server had an error"), openai_reply()]
    )
    step = step_with(litellm_client, FakeClock())
    config = {"prompt_template": "hi", "model": "gpt-4o-mini", "timeout_ms": 4500}
    outcome = await step.execute(llm_step(config), {}, context())
    assert outcome.ok, outcome.error
    assert len(seen) == 2
    for kwargs in seen:
        assert (kwargs["timeout"], kwargs["num_retries"], kwargs["max_retries"]) == (4.5, 0, 0)


async def test_reply_without_choices_is_a_step_error(litellm_client, mock_router) -> None:
    """respx doubles OpenAI's endpoint with a 200 that carries no choices."""
    reply = openai_reply()
    body = json.loads(reply.content)
    mock_router.post(OPENAI_URL).mock(
        return_value=httpx.Response(200, json={**body, "choices": []})
    )
    with pytest.raises(protocol.LLMCallError) as caught:
        await litellm_client.complete(request(GPT))
    assert (caught.value.kind, caught.value.retryable) == ("bad_response", False)
    assert "without any choices" in caught.value.message


def step_with(litellm_client, clock: FakeClock, **options: object) -> LLMStep:
    return LLMStep(
        litellm_client,
        options=LLMOptions.model_validate(options),
        environ={"OPENAI_API_KEY": OPENAI_KEY, "ANTHROPIC_API_KEY": ANTHROPIC_KEY},
        sleep=clock.sleep,
        jitter=lambda: 0.0,
    )


async def test_step_retries_429_then_succeeds(litellm_client, mock_router) -> None:
    """respx doubles OpenAI (a 429, then an answer); FakeClock doubles the backoff sleep."""
    route = mock_router.post(OPENAI_URL).mock(
        side_effect=[openai_error(429, "Rate limit reached", {"retry-after": "1"}), openai_reply()]
    )
    clock = FakeClock()
    config = {"prompt_template": "Colour of {{ thing }}?", "model": "gpt-4o-mini"}
    outcome = await step_with(litellm_client, clock).execute(
        llm_step(config), {"thing": "the sky"}, context()
    )
    assert outcome.ok, outcome.error
    assert outcome.output == "Blue"
    assert route.call_count == 2
    assert clock.sleeps == [1.0]  # Retry-After beats the 0.25 s backoff
    assert outcome.metadata["attempts"] == 2
    assert outcome.metadata["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
    }
    assert outcome.metadata["cost_usd"] == pytest.approx(5.85e-6)


async def test_step_gives_up_on_500_after_max_attempts(litellm_client, mock_router) -> None:
    """respx doubles Anthropic, always failing with 500; FakeClock doubles the backoff sleep."""
    route = mock_router.post(ANTHROPIC_URL).mock(
        return_value=anthropic_error(500, "api_error", "Internal server error")
    )
    clock = FakeClock()
    config = {"prompt_template": "hi", "model": "claude-3"}
    outcome = await step_with(litellm_client, clock, max_attempts=4).execute(
        llm_step(config), {}, context()
    )
    assert route.call_count == 4
    assert len(clock.sleeps) == 3
    assert outcome.error == (
        "LLM call to anthropic/claude-sonnet-4-5 failed after 4 attempts: "
        "status 500 (server error): Internal server error"
    )


async def test_step_does_not_retry_401_and_hides_the_key(litellm_client, mock_router) -> None:
    """respx doubles OpenAI with a 401 that echoes the key, as OpenAI does (masked)."""
    route = mock_router.post(OPENAI_URL).mock(
        return_value=openai_error(401, "Incorrect API key provided: sk-test-***********3456.")
    )
    with structlog.testing.capture_logs() as events:
        outcome = await step_with(litellm_client, FakeClock()).execute(
            llm_step({"prompt_template": "hi", "model": "gpt-4"}), {}, context()
        )
    assert route.call_count == 1
    assert "status 401 (unauthorized)" in outcome.error
    assert "OPENAI_API_KEY" in outcome.error
    # capture_logs sees events before the log redactor runs: the key must not be in them at all.
    everything = json.dumps([outcome.error, outcome.logs, outcome.metadata, events], default=str)
    assert [entry["event"] for entry in events] == ["llm_call_failed"]
    assert "sk-test" not in everything


async def test_unmocked_call_is_caught_by_the_network_guard(
    litellm_client, network_guard: NetworkGuard
) -> None:
    """No respx here on purpose: the guard (doubling socket connect and DNS) must see litellm's
    aiohttp transport try to leave, proving that a forgotten mock fails instead of escaping."""
    with pytest.raises(protocol.LLMCallError):
        await litellm_client.complete(request("openai/gpt-4o-mini", timeout_s=2.0))
    assert any("api.openai.com" in escape for escape in network_guard.escapes)
    network_guard.escapes.clear()  # expected here; any other escape fails the test
