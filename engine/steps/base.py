"""The step seam: what every step type receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from engine import models


@dataclass(frozen=True)
class StepContext:
    """Who a step runs for. `tenant` keys sandbox isolation: one owner's runs never share a
    worker process with another owner's."""

    signal_id: UUID
    session_id: UUID
    agent_id: UUID
    owner_id: UUID | None

    @property
    def tenant(self) -> str:
        # Shared agents (no owner) all belong to the operator: one trust domain.
        return f"owner:{self.owner_id}" if self.owner_id else "shared"


@dataclass(frozen=True)
class StepOutcome:
    """A finished step: `error` is None on success, else a message a person can act on."""

    output: models.JsonValue = None
    error: str | None = None
    logs: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


class StepExecutor(Protocol):
    """Runs one step type. Must never raise for a problem of the step itself (bad code, bad
    config, provider error): those are StepOutcome errors. Raising means the engine failed."""

    async def execute(
        self, step: models.Step, step_input: models.JsonValue, context: StepContext
    ) -> StepOutcome: ...
