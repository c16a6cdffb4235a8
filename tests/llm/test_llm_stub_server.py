"""LLM steps against a local OpenAI-compatible stub server on 127.0.0.1 through `api_base`:
real sockets through litellm's default transport, real timeouts, Retry-After, and key handling.
The stub server doubles the provider; FakeClock doubles the backoff sleep."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from llm_fakes import FakeClock, context, llm_step

from engine.llm import keys
from engine.llm.options import LLMOptions
from engine.steps.llm import LLMStep
from tests.support.servers import free_port

SECRET = "sk-engine-secret-0123456789"


@dataclass
class Reply:
    """What the stub does with one request: answer, fail with a status, or stall."""

    text: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False


class StubServer:
    """A minimal HTTP/1.1 server speaking OpenAI's chat completions, one request per connection."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        self._server: asyncio.Server | None = None

    @property
    def api_base(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        self.release.set()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *header_lines = head.strip().split("\r\n")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in header_lines)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(
                {"line": request_line, "headers": headers, "body": json.loads(body)}
            )
            reply = self.script.pop(0) if self.script else Reply()
            if reply.stall:
                await self.release.wait()
                return
            writer.write(_http_response(reply, model=json.loads(body)["model"]))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client gave up (a timeout test); nothing to answer
        finally:
            writer.close()


def _http_response(reply: Reply, model: str) -> bytes:
    if reply.status == 200:
        payload: dict[str, Any] = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 1,
            "model": f"{model}-stub",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
        }
    else:
        payload = {"error": {"message": f"stub says {reply.status}", "type": "stub"}}
    body = json.dumps(payload).encode()
    lines = [
        f"HTTP/1.1 {reply.status} STUB",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in reply.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def stub() -> AsyncIterator[StubServer]:
    server = StubServer()
    await server.start()
    yield server
    await server.stop()


def make_step(litellm_client, clock: FakeClock, **options: object) -> LLMStep:
    return LLMStep(
        litellm_client,
        options=LLMOptions.model_validate(options),
        environ={"OPENAI_API_KEY": SECRET},
        sleep=clock.sleep,
        jitter=lambda: 0.0,
    )


def config(stub: StubServer, **extra: object) -> dict[str, object]:
    return {
        "prompt_template": "Label this ticket: {{ body }}",
        "model": "openai/local-model",
        "api_base": stub.api_base,
        **extra,
    }


async def test_round_trip_over_real_sockets(litellm_client, stub: StubServer) -> None:
    """The stub server on 127.0.0.1 doubles the provider."""
    stub.script = [Reply(text='{"label": "bug"}')]
    step = make_step(litellm_client, FakeClock())
    outcome = await step.execute(
        llm_step(config(stub, temperature=0.1, max_tokens=20, response_format="json")),
        {"body": "It crashes"},
        context(),
    )
    assert outcome.ok, outcome.error
    assert outcome.output == {"label": "bug"}
    (seen,) = stub.requests
    assert seen["line"] == "POST /v1/chat/completions HTTP/1.1"
    assert seen["body"]["model"] == "local-model"
    assert seen["body"]["messages"] == [
        {"role": "user", "content": "Label this ticket: It crashes"}
    ]
    assert (seen["body"]["temperature"], seen["body"]["max_tokens"]) == (0.1, 20)
    # A step's own api_base never receives the engine's key.
    assert seen["headers"]["authorization"] == f"Bearer {keys.NO_KEY}"
    assert SECRET not in json.dumps(seen)
    assert outcome.metadata["model"] == "local-model-stub"
    assert outcome.metadata["usage"]["total_tokens"] == 13
    assert outcome.metadata["cost_usd"] is None


async def test_trusted_api_base_receives_the_key(litellm_client, stub: StubServer) -> None:
    """The stub server on 127.0.0.1 doubles the provider."""
    step = make_step(litellm_client, FakeClock(), trusted_api_bases=(stub.api_base,))
    outcome = await step.execute(llm_step(config(stub)), {"body": "x"}, context())
    assert outcome.ok, outcome.error
    assert stub.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"


async def test_timeout_over_real_sockets_is_retried_then_fails(
    litellm_client, stub: StubServer
) -> None:
    """The stub server on 127.0.0.1 doubles the provider."""
    stub.script = [Reply(stall=True), Reply(stall=True)]
    clock = FakeClock()
    step = make_step(litellm_client, clock, max_attempts=2)
    outcome = await step.execute(llm_step(config(stub, timeout_ms=300)), {"body": "x"}, context())
    assert outcome.error is not None
    assert outcome.error.startswith(
        "LLM call to openai/local-model failed after 2 attempts: status 408 (timed out): "
    )
    assert "no answer within 0.3 s; raise timeout_ms" in outcome.error
    # litellm's own timeout fired, not Portico's outer limit (the timeout plus a grace period).
    assert "outer limit" not in outcome.error
    assert len(stub.requests) == 2
    assert len(clock.sleeps) == 1


async def test_retry_after_from_a_real_server_is_honoured(litellm_client, stub: StubServer) -> None:
    """The stub server on 127.0.0.1 doubles the provider."""
    stub.script = [Reply(status=429, headers={"Retry-After": "1.5"}), Reply(text="fine")]
    clock = FakeClock()
    outcome = await make_step(litellm_client, clock).execute(
        llm_step(config(stub)), {"body": "x"}, context()
    )
    assert outcome.output == "fine"
    assert outcome.metadata["attempts"] == 2
    assert clock.sleeps == [1.5]
    assert "status 429 (rate limited): stub says 429" in outcome.logs


async def test_server_error_then_success(litellm_client, stub: StubServer) -> None:
    """The stub server on 127.0.0.1 doubles the provider."""
    stub.script = [Reply(status=503), Reply(text="recovered")]
    outcome = await make_step(litellm_client, FakeClock()).execute(
        llm_step(config(stub)), {"body": "x"}, context()
    )
    assert outcome.output == "recovered"
    assert len(stub.requests) == 2


async def test_refused_connection_is_retried_then_fails(litellm_client) -> None:
    """Nothing listens on the port (a real refused connection on 127.0.0.1); FakeClock doubles
    the backoff sleep."""
    port = free_port()  # bound and released: nothing listens there now
    clock = FakeClock()
    step = make_step(litellm_client, clock, max_attempts=3)
    step_config = {
        "prompt_template": "{{ body }}",
        "model": "openai/local-model",
        "api_base": f"http://127.0.0.1:{port}/v1",
        "timeout_ms": 5000,
    }
    outcome = await step.execute(llm_step(step_config), {"body": "x"}, context())
    assert outcome.error is not None
    assert outcome.error.startswith("LLM call to openai/local-model failed after 3 attempts: ")
    assert len(clock.sleeps) == 2
    assert outcome.metadata["attempts"] == 3
