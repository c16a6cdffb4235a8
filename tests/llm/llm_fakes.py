"""Test doubles for LLM tests: a scripted LLMClient and an instant sleep with a fake clock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from engine import models
from engine.llm import protocol
from engine.steps.base import StepContext


@dataclass
class FakeClock:
    """A clock that only moves when FakeClock.sleep is awaited, so backoff costs no real time."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeClient:
    """An LLMClient that answers from a script: each item is an LLMResponse to return or an
    LLMCallError to raise, in order. Records every request it receives."""

    def __init__(self, *script: protocol.LLMResponse | protocol.LLMCallError) -> None:
        self.script = list(script)
        self.requests: list[protocol.LLMRequest] = []
        self.closed = False

    async def complete(self, request: protocol.LLMRequest) -> protocol.LLMResponse:
        self.requests.append(request)
        if not self.script:
            raise AssertionError("FakeClient was called more often than scripted")
        item = self.script.pop(0)
        if isinstance(item, protocol.LLMCallError):
            raise item
        return item

    async def aclose(self) -> None:
        self.closed = True


def answer(
    text: str = "hello",
    *,
    model: str = "gpt-4o-mini-2024-07-18",
    finish_reason: str = "stop",
    cost_usd: float | None = 0.000123,
    usage: tuple[int, int] = (11, 7),
) -> protocol.LLMResponse:
    prompt, completion = usage
    return protocol.LLMResponse(
        text=text,
        model=model,
        usage=protocol.Usage(prompt, completion, prompt + completion),
        finish_reason=finish_reason,
        cost_usd=cost_usd,
    )


def llm_step(config: dict[str, Any], *, name: str = "ask") -> models.Step:
    return models.Step(
        id=uuid.uuid4(),
        agent_id=uuid.uuid4(),
        name=name,
        type="llm",
        config=config,
        position=1,
    )


def context() -> StepContext:
    return StepContext(
        signal_id=uuid.uuid4(), session_id=uuid.uuid4(), agent_id=uuid.uuid4(), owner_id=None
    )
