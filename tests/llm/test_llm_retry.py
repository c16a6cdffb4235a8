"""Portico's retry policy; FakeClock doubles asyncio.sleep so the tests take no real time."""

from __future__ import annotations

import pytest
from llm_fakes import FakeClock

from engine.llm import protocol, retry

POLICY = retry.RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=3.0)


def failing(*errors: protocol.LLMCallError, result: str = "ok"):
    """A call double that raises the given errors in turn, then returns `result`."""
    calls: list[int] = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return call, calls


def rate_limited(retry_after_s: float | None = None) -> protocol.LLMCallError:
    return protocol.LLMCallError(
        "slow down", status=429, retryable=True, retry_after_s=retry_after_s
    )


def server_error() -> protocol.LLMCallError:
    return protocol.LLMCallError("oops", status=500, retryable=True)


async def test_retryable_errors_back_off_exponentially_with_jitter() -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    clock = FakeClock()
    call, calls = failing(server_error(), server_error(), server_error())
    result, attempts = await retry.call_with_retries(
        call, POLICY, sleep=clock.sleep, jitter=lambda: 0.0
    )
    assert (result, attempts, len(calls)) == ("ok", 4, 4)
    # jitter 0 gives half of each backoff step: 0.5, 1, 2 → 0.25, 0.5, 1.0.
    assert clock.sleeps == [0.25, 0.5, 1.0]
    assert clock.now == pytest.approx(1.75)


def test_delay_is_capped_and_jitter_stays_within_the_step() -> None:
    assert POLICY.delay_s(10, jitter=0.999) <= 3.0
    assert POLICY.delay_s(2, jitter=0.0) == 0.5
    assert 0.5 <= POLICY.delay_s(2, jitter=0.7) < 1.0


async def test_retry_after_is_honoured_up_to_the_cap() -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    clock = FakeClock()
    call, _ = failing(rate_limited(retry_after_s=2.0), rate_limited(retry_after_s=60.0))
    await retry.call_with_retries(call, POLICY, sleep=clock.sleep, jitter=lambda: 0.0)
    assert clock.sleeps == [2.0, 3.0]


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    clock = FakeClock()
    call, calls = failing(*[rate_limited() for _ in range(10)])
    with pytest.raises(retry.CallFailed) as caught:
        await retry.call_with_retries(call, POLICY, sleep=clock.sleep, jitter=lambda: 0.5)
    assert caught.value.attempts == 4
    assert caught.value.error.status == 429
    assert len(calls) == 4
    assert len(clock.sleeps) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    clock = FakeClock()
    call, calls = failing(protocol.LLMCallError("no", status=status, retryable=False))
    with pytest.raises(retry.CallFailed) as caught:
        await retry.call_with_retries(call, POLICY, sleep=clock.sleep)
    assert (caught.value.attempts, len(calls), clock.sleeps) == (1, 1, [])


async def test_one_attempt_policy_never_sleeps() -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    clock = FakeClock()
    call, _ = failing(server_error())
    with pytest.raises(retry.CallFailed):
        await retry.call_with_retries(call, retry.RetryPolicy(max_attempts=1), sleep=clock.sleep)
    assert clock.sleeps == []


async def test_on_retry_hears_each_retried_failure() -> None:
    """A scripted call doubles the LLM client; FakeClock doubles sleep."""
    heard: list[tuple[int, int | None, float]] = []
    call, _ = failing(server_error(), rate_limited())
    await retry.call_with_retries(
        call,
        POLICY,
        sleep=FakeClock().sleep,
        jitter=lambda: 0.0,
        on_retry=lambda attempt, error, delay: heard.append((attempt, error.status, delay)),
    )
    assert heard == [(1, 500, 0.25), (2, 429, 0.5)]
