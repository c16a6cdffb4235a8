"""Engine-wide settings for LLM steps (the engine's Settings fill these in)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from engine.llm import retry, templates


class LLMOptions(BaseModel):
    """Defaults and limits applied to every LLM step.

    `default_max_tokens` is sent when a step sets none (Anthropic otherwise asks for the model's
    maximum, 64k tokens). Keys are never sent to a step's `api_base` unless it starts with one of
    `trusted_api_bases`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    default_timeout_ms: Annotated[int, Field(gt=0)] = 60_000
    max_timeout_ms: Annotated[int, Field(gt=0)] = 600_000
    default_max_tokens: Annotated[int, Field(gt=0)] = 1024
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    retry_base_delay_ms: Annotated[int, Field(ge=0)] = 500
    retry_max_delay_ms: Annotated[int, Field(ge=0)] = 8_000
    max_prompt_chars: Annotated[int, Field(gt=0)] = templates.DEFAULT_MAX_CHARS
    allow_api_base: bool = True
    trusted_api_bases: tuple[str, ...] = ()

    def retry_policy(self) -> retry.RetryPolicy:
        return retry.RetryPolicy(
            max_attempts=self.max_attempts,
            base_delay_s=self.retry_base_delay_ms / 1000,
            max_delay_s=self.retry_max_delay_ms / 1000,
        )

    def timeout_s(self, step_timeout_ms: int | None) -> float:
        """The step's timeout (or the default), never above the server maximum."""
        return min(step_timeout_ms or self.default_timeout_ms, self.max_timeout_ms) / 1000
