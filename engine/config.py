"""Settings: one frozen object, read from the environment and CLI flags, validated at start-up.

Nothing else in Portico reads the environment (except the LLM client, for provider keys).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import errors
from engine.llm.options import LLMOptions
from engine.sandbox.settings import SandboxSettings


def load(**values: Any) -> Settings:
    """Settings from the environment, with `values` (CLI flags) winning. Raises
    ConfigurationError naming each bad setting by its environment variable."""
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_variable(issue['loc'])}: {issue['msg']} (got {issue.get('input')!r})"
            for issue in exc.errors()
        )
        raise errors.ConfigurationError(
            f"invalid settings: {problems}. Fix them in the environment (or the matching "
            "`portico run` flags); `portico run --help` lists the flags"
        ) from None


def _variable(loc: tuple[int | str, ...]) -> str:
    if loc == ("database_url",):
        return "DATABASE_URL"
    return "PORTICO_" + "__".join(str(part).upper() for part in loc)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    """Engine settings. Environment: PORTICO_<NAME> (nested: PORTICO_SANDBOX__<NAME>,
    PORTICO_LLM__<NAME>), and DATABASE_URL for the database."""

    model_config = SettingsConfigDict(
        env_prefix="PORTICO_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "PORTICO_DATABASE_URL")
    )
    """PostgreSQL URL. None: the embedded server under `data_dir`."""
    data_dir: Path = Path(".portico")
    db_role: str | None = "service_role"
    """Role the engine assumes after connecting (`set role`), so it acts with exactly the
    rights service_role has over PostgREST. Empty: keep the login role."""

    worker_id: str = Field(default_factory=default_worker_id)
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    """Signals processed at once by this engine: different agents, each one at a time."""
    lease_seconds: Annotated[int, Field(ge=1)] = 30
    sweep_seconds: Annotated[float, Field(gt=0)] = 1.0
    """How often the engine claims without a wake-up; bounds the delay of a lost notification."""
    max_attempts: Annotated[int, Field(ge=1)] = 3
    shutdown_grace_seconds: Annotated[float, Field(ge=0)] = 10.0
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    llm: LLMOptions = Field(default_factory=LLMOptions)

    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)

    @property
    def heartbeat_seconds(self) -> float:
        # Three renewals per lease: one lost round trip never costs the lease.
        return self.lease_seconds / 3

    @model_validator(mode="after")
    def _empty_role_means_none(self) -> Settings:
        if self.db_role == "":
            object.__setattr__(self, "db_role", None)
        return self
