"""What a sandbox run returns to the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """One run: `error` is None on success, else a message a person can act on.

    `output` is the step's JSON value (None on error), `logs` its captured print output,
    `duration_ms` the wall time from handing the job to a worker to its reply.
    """

    output: Any = None
    error: str | None = None
    logs: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
