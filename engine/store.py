"""Typed domain calls, each exactly one engine SQL function through the transport."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from engine import models
from engine.transports.base import Json, Transport


class Store:
    def __init__(
        self, transport: Transport, *, worker_id: str, lease_seconds: int, max_attempts: int
    ):
        self.transport = transport
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts

    async def claim_signals(self, limit: int) -> list[models.Signal]:
        """Claimed signals; each run signal comes with its session already open."""
        rows = await self.transport.call(
            "claim_signals",
            {
                "p_worker_id": self.worker_id,
                "p_limit": limit,
                "p_lease_seconds": self.lease_seconds,
            },
        )
        return [models.Signal.model_validate(row) for row in rows]

    async def renew_leases(self, signal_ids: list[UUID]) -> set[UUID]:
        rows = await self.transport.call(
            "renew_leases",
            {
                "p_worker_id": self.worker_id,
                "p_signal_ids": signal_ids,
                "p_lease_seconds": self.lease_seconds,
            },
        )
        return {row["renew_leases"] for row in rows}

    async def record_step_result(
        self,
        *,
        session_id: UUID,
        step: models.Step,
        step_input: models.JsonValue,
        output: models.JsonValue,
        error: str | None,
        logs: str,
        metadata: dict[str, Any],
        started_at: datetime,
        completed_at: datetime,
        finish: bool = False,
    ) -> None:
        """Write a finished step; with `finish`, also end the run (see the SQL function)."""
        await self.transport.call(
            "record_step_result",
            {
                "p_session_id": session_id,
                "p_worker_id": self.worker_id,
                "p_position": step.position,
                "p_step_id": step.id,
                "p_step_name": step.name,
                "p_step_type": step.type,
                "p_input": Json(step_input),
                "p_output": Json(output) if error is None else None,
                "p_error": error,
                "p_started_at": started_at,
                "p_completed_at": completed_at,
                "p_logs": logs,
                "p_metadata": Json(metadata),
                "p_finish": finish,
            },
        )

    async def finish_signal(
        self, signal_id: UUID, *, error: str | None = None, output: models.JsonValue = None
    ) -> None:
        await self.transport.call(
            "finish_signal",
            {
                "p_signal_id": signal_id,
                "p_worker_id": self.worker_id,
                "p_error": error,
                "p_output": Json(output) if error is None else None,
            },
        )

    async def release_signals(self, signal_ids: list[UUID]) -> set[UUID]:
        rows = await self.transport.call(
            "release_signals", {"p_worker_id": self.worker_id, "p_signal_ids": signal_ids}
        )
        return {row["release_signals"] for row in rows}

    async def reclaim_expired_leases(self) -> list[tuple[UUID, str]]:
        rows = await self.transport.call(
            "reclaim_expired_leases", {"p_max_attempts": self.max_attempts}
        )
        return [(row["signal_id"], row["outcome"]) for row in rows]

    async def config_epoch(self) -> int:
        rows = await self.transport.call("config_epoch", {})
        return int(rows[0]["config_epoch"])

    async def agent_definition(self, agent_id: UUID) -> models.Agent | None:
        rows = await self.transport.call("agent_definition", {"p_agent_id": agent_id})
        document = rows[0]["agent_definition"] if rows else None
        return models.Agent.model_validate(document) if document else None

    async def signal_report(self, signal_id: UUID) -> dict[str, Any] | None:
        rows = await self.transport.call("signal_report", {"p_signal_id": signal_id})
        report: dict[str, Any] | None = rows[0]["signal_report"] if rows else None
        return report

    async def apply_agent(self, definition: models.AgentDefinition) -> UUID:
        rows = await self.transport.call(
            "apply_agent", {"p_definition": Json(definition.model_dump(mode="json"))}
        )
        return UUID(str(rows[0]["apply_agent"]))
