"""Rows and step configs as frozen pydantic models; value sets mirror the SQL checks.

Statuses are documented where the SQL declares them
(supabase/migrations/*_create_portico_tables.sql).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    model_validator,
)

JsonValue = Any
"""Any JSON value: dict, list, str, int, float, bool or None."""


class SignalType(StrEnum):
    RUN = "run"
    SYNC = "sync"
    FYI = "fyi"


class SignalStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETE = "complete"
    ERROR = "error"


class SessionStatus(StrEnum):
    RUNNING = "running"
    SUCCESS = "success"
    ERROR = "error"


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Signal(Row):
    """A row of public.signals."""

    id: UUID
    seq: int
    type: SignalType
    payload: JsonValue = None
    agent_id: UUID | None = None
    status: SignalStatus
    error: str | None = None
    runtime_session_id: UUID | None = None
    created_by: UUID | None = None
    attempts: int = 0
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    claimed_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


def _json_number(value: Any) -> Any:
    # The database checks JSON types: "10" and true are not numbers there, so not here either.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


JsonInt = Annotated[int, BeforeValidator(_json_number)]


class StepConfig(BaseModel):
    """What both step configs share with public.step_config_problems: unknown keys are refused,
    and a key is either absent or holds a value of its type, never null."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k, v in data.items() if v is None and k in cls.model_fields)
            if nulls:
                raise ValueError(
                    f"{', '.join(nulls)} cannot be null: leave the key out to use its default"
                )
        return data


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank (whitespace only)")
    return value


NonBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


class PythonConfig(StepConfig):
    """Config of a `python` step: the body of a function of `input`."""

    code: NonBlank
    timeout_ms: Annotated[JsonInt, Field(gt=0)] | None = None


class LLMConfig(StepConfig):
    """Config of an `llm` step: a `{{ path }}` template sent to a model through litellm.
    Accepts exactly what public.step_config_problems accepts (tests/llm checks both on one
    table of configs)."""

    prompt_template: NonBlank
    model: NonBlank
    temperature: Annotated[float, Field(strict=True, ge=0, le=1)] | None = None
    max_tokens: Annotated[JsonInt, Field(gt=0)] | None = None
    system: str | None = None
    response_format: Literal["text", "json"] = "text"
    timeout_ms: Annotated[JsonInt, Field(gt=0)] | None = None
    api_base: Annotated[str, Field(pattern=r"^https?://\S+$")] | None = None


class Step(Row):
    """A step as the engine runs it (a row of public.steps, without its timestamps)."""

    id: UUID
    agent_id: UUID
    name: str
    type: Literal["python", "llm"]
    config: dict[str, Any]
    position: int

    def python_config(self) -> PythonConfig:
        return PythonConfig.model_validate(self.config)

    def llm_config(self) -> LLMConfig:
        return LLMConfig.model_validate(self.config)


class Agent(Row):
    """An agent as the engine runs it, with its steps in position order
    (public.agent_definition)."""

    id: UUID
    name: str
    description: str = ""
    is_active: bool = True
    owner_id: UUID | None = None
    updated_at: datetime | None = None
    steps: tuple[Step, ...] = ()


class RuntimeSession(Row):
    """A row of public.runtime_sessions."""

    id: UUID
    signal_id: UUID
    agent_id: UUID
    started_at: datetime
    completed_at: datetime | None = None
    status: SessionStatus
    error: str | None = None
    attempt: int = 1
    worker_id: str | None = None
    output: JsonValue = None
    created_at: datetime
    updated_at: datetime


class StepResult(Row):
    """A row of public.step_results: one finished step of a session."""

    id: UUID
    session_id: UUID
    step_id: UUID | None
    position: int
    step_name: str
    step_type: Literal["python", "llm"]
    status: Literal["success", "error"]
    started_at: datetime
    completed_at: datetime
    input: JsonValue = None
    output: JsonValue = None
    error: str | None = None
    duration_ms: int
    logs: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime


class SessionReport(RuntimeSession):
    step_results: tuple[StepResult, ...] = ()


class SignalReport(Signal):
    """A signal with its agent's name and its latest session's step results, as
    public.signal_report returns it (what `portico signal send --wait` shows)."""

    agent_name: str | None = None
    session: SessionReport | None = None


class StepDefinition(BaseModel):
    """One step as an agent file declares it (`portico agents apply`)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    type: Literal["python", "llm"]
    config: dict[str, Any]

    def validated_config(self) -> PythonConfig | LLMConfig:
        return (PythonConfig if self.type == "python" else LLMConfig).model_validate(self.config)


class AgentDefinition(BaseModel):
    """An agent file: the seed's agent fields, with steps in order."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    description: str = ""
    is_active: bool = True
    owner_id: UUID | None = None
    steps: list[StepDefinition] = Field(default_factory=list)


json_adapter: TypeAdapter[JsonValue] = TypeAdapter(Any)
