"""Portico's retries for LLM calls: rate limits, timeouts, connection errors and 5xx are retried
with exponential backoff and jitter, up to a set number of attempts; everything else fails at once.

litellm's own retries are switched off on every call (engine.llm.client), so this is the only layer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog

from engine.llm import protocol

log = structlog.get_logger(__name__)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Jitter = Callable[[], float]
OnRetry = Callable[[int, protocol.LLMCallError, float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try. Delays double from `base_delay_s`, are capped at
    `max_delay_s`, and are scaled by a random factor in [0.5, 1) so callers do not stampede."""

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_s(self, attempt: int, jitter: float, retry_after_s: float | None = None) -> float:
        """The wait after failed attempt number `attempt` (1-based); `jitter` is in [0, 1)."""
        backoff = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        delay = backoff * (0.5 + jitter / 2)
        if retry_after_s is not None and retry_after_s > 0:
            # A provider's Retry-After is honoured, but never beyond our own cap.
            delay = max(delay, min(retry_after_s, self.max_delay_s))
        return delay


class CallFailed(Exception):
    """The last error of a call that will not be tried again, with how many attempts were made."""

    def __init__(self, error: protocol.LLMCallError, attempts: int) -> None:
        super().__init__(error.message)
        self.error = error
        self.attempts = attempts


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Sleep = asyncio.sleep,
    jitter: Jitter = random.random,
    on_retry: OnRetry | None = None,
) -> tuple[T, int]:
    """Run `call` until it succeeds; returns (result, attempts made).

    `on_retry(attempt, error, delay_s)` hears of each failed attempt that will be retried.
    Raises CallFailed after a non-retryable LLMCallError or the last allowed attempt.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call(), attempt
        except protocol.LLMCallError as error:
            if not error.retryable or attempt >= policy.max_attempts:
                raise CallFailed(error, attempt) from error
            delay = policy.delay_s(attempt, jitter(), error.retry_after_s)
            log.info(
                "llm_call_retrying",
                attempt=attempt,
                status=error.status,
                kind=error.kind,
                delay_s=round(delay, 3),
            )
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await sleep(delay)
