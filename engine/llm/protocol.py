"""The LLM client seam: what a step sends, what comes back, and the one error a client raises.

Nothing here imports litellm, so the engine and its tests can use a fake `LLMClient`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion. `model` is a provider-prefixed id (`openai/gpt-4o-mini`).
    `api_key` is excluded from repr so a logged or printed request never shows it."""

    model: str
    messages: tuple[dict[str, str], ...]
    timeout_s: float
    temperature: float | None = None
    max_tokens: int | None = None
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Usage:
    """Token counts as the provider reported them (None when it reported none)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True)
class LLMResponse:
    """A model's answer. `cost_usd` is None when the price of the model is unknown."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    cost_usd: float | None = None


class LLMCallError(Exception):
    """A call that did not produce an answer.

    `retryable` is True for rate limits, timeouts, connection errors and 5xx; `status` is the
    HTTP-like status (408 for timeouts, None when there was no response at all);
    `retry_after_s` is the provider's Retry-After hint, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        kind: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.kind = kind


class LLMClient(Protocol):
    """Sends one request, once. Retries are the caller's (engine.llm.retry).

    Raises LLMCallError for every provider or transport problem; anything else is a bug.
    """

    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None: ...


def describe_status(status: int | None) -> str:
    """A short phrase for a status, used in final error messages."""
    names: dict[int | None, str] = {
        None: "no response",
        400: "bad request",
        401: "unauthorized",
        403: "forbidden",
        404: "not found",
        408: "timed out",
        409: "conflict",
        422: "unprocessable",
        429: "rate limited",
        500: "server error",
        502: "bad gateway",
        503: "unavailable",
        504: "gateway timeout",
        529: "overloaded",
    }
    return names.get(status, "error")
