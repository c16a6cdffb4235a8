"""The `python` step: runs `config.code` in the sandbox for the step's tenant."""

from __future__ import annotations

from pydantic import ValidationError

from engine import models
from engine.sandbox.pool import SandboxPool
from engine.steps.base import StepContext, StepOutcome


def _config_error(step: models.Step, error: ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'config'}: {issue['msg']}"
        for issue in error.errors()
    )
    return f"python step {step.name!r} has an invalid config ({problems}); fix the step's config"


class PythonStep:
    """StepExecutor for `python` steps. Problems of the step are StepOutcome errors; only a
    closed sandbox pool raises (an engine failure)."""

    def __init__(self, pool: SandboxPool) -> None:
        self._pool = pool

    async def execute(
        self, step: models.Step, step_input: models.JsonValue, context: StepContext
    ) -> StepOutcome:
        try:
            config = step.python_config()
        except ValidationError as error:
            return StepOutcome(error=_config_error(step, error))
        result = await self._pool.run(
            config.code, step_input, tenant=context.tenant, timeout_ms=config.timeout_ms
        )
        metadata = {"sandbox_ms": round(result.duration_ms, 3)}
        if result.error is not None:
            return StepOutcome(error=result.error, logs=result.logs, metadata=metadata)
        return StepOutcome(output=result.output, logs=result.logs, metadata=metadata)
