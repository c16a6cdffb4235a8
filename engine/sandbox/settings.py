"""Sandbox settings: pool sizing, per-step limits and the worker's process limits."""

from __future__ import annotations

import math
import sys
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]


class SandboxSettings(BaseModel):
    """Every field has a default fit for a small server; the engine may override any."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pool_size: Annotated[int, Field(ge=0)] = 4
    """Pre-started workers kept warm and not yet bound to any tenant."""
    max_workers_per_tenant: PositiveInt = 2
    """Workers one tenant may hold at once; its further runs wait for one of them."""
    max_workers: PositiveInt = 64
    """All worker processes, idle and bound (about 12 MB PSS each); past it, the least recently
    used idle worker of another tenant is evicted. Size it above the tenants active at once."""
    max_runs_per_worker: PositiveInt = 500
    """Successful runs before a worker is recycled (any error recycles it at once)."""
    idle_worker_ttl_s: Annotated[float, Field(gt=0)] = 60.0
    """A bound worker unused this long is retired, returning its memory."""

    default_timeout_ms: PositiveInt = 5_000
    max_timeout_ms: PositiveInt = 60_000
    """Server maximum: a step's `timeout_ms` above it is lowered to it."""
    memory_mb: Annotated[int, Field(ge=64)] = 512
    """Address-space limit (RLIMIT_AS) of a worker; Python with RestrictedPython needs ~30."""
    cpu_seconds: PositiveInt = 60
    """CPU seconds one step may use (RLIMIT_CPU, a backstop behind the wall-clock kill)."""

    max_source_bytes: PositiveInt = 64 * 1024
    max_ast_nodes: PositiveInt = 50_000
    max_ast_depth: PositiveInt = 200
    max_input_bytes: PositiveInt = 4 * 1024 * 1024
    max_output_bytes: PositiveInt = 1024 * 1024
    max_output_depth: Annotated[int, Field(ge=1, le=200)] = 64
    max_log_bytes: PositiveInt = 64 * 1024
    compile_cache_size: PositiveInt = 128
    max_open_files: Annotated[int, Field(ge=8)] = 32

    sandbox_user: str | None = "nobody"
    """User the workers run as when the engine runs as root (required then; ignored when the
    engine runs as another user, whose workers keep that user)."""
    seccomp: bool = True
    """Install the syscall filter in workers (Linux x86_64/aarch64); workers refuse to start
    if it cannot be installed."""
    landlock: bool = True
    """Close off the filesystem in workers with Landlock (Linux 5.13+): they may read only
    the Python library, time zones and their own /proc entry. Where the kernel lacks it,
    workers start anyway and the pool logs `sandbox_landlock_unavailable`."""
    python_executable: str = sys.executable
    boot_timeout_ms: PositiveInt = 10_000
    recycle_rss_mb: PositiveInt = 256
    """A worker whose peak RSS passed this is recycled after its run."""

    @model_validator(mode="after")
    def _consistent(self) -> SandboxSettings:
        if self.default_timeout_ms > self.max_timeout_ms:
            raise ValueError("default_timeout_ms must not exceed max_timeout_ms")
        if self.max_workers < self.pool_size:
            raise ValueError("max_workers must be at least pool_size")
        if self.max_workers <= self.max_workers_per_tenant:
            # Otherwise one owner could hold every worker and starve all the others.
            raise ValueError("max_workers must be larger than max_workers_per_tenant")
        return self

    def timeout_ms(self, requested: int | None) -> int:
        """The deadline for a step: its own timeout, or the default, capped at the maximum."""
        if requested is None or requested <= 0:
            return self.default_timeout_ms
        return min(requested, self.max_timeout_ms)

    def job_cpu_seconds(self, timeout_ms: int) -> int:
        """CPU budget of one job: never below its wall-clock deadline, at most cpu_seconds."""
        return max(1, min(self.cpu_seconds, math.ceil(timeout_ms / 1000) + 1))

    @property
    def cpu_lifetime_seconds(self) -> int:
        """Hard RLIMIT_CPU of a worker; the pool recycles a worker at half of it."""
        return self.cpu_seconds * 4 + 10

    @property
    def max_job_bytes(self) -> int:
        # Code is JSON-escaped (at most 6 bytes a character) next to the input text.
        return self.max_source_bytes * 6 + self.max_input_bytes + 4096

    @property
    def max_reply_bytes(self) -> int:
        return self.max_output_bytes + self.max_log_bytes * 6 + 64 * 1024
