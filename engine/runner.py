"""Runs one claimed signal: a run through the agent's steps, or a sync / fyi."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from engine import models
from engine.agents import AgentCache
from engine.steps.base import StepContext, StepExecutor, StepOutcome
from engine.store import Store

log = structlog.get_logger(__name__)


@dataclass
class Counters:
    """What this engine processed since it started; logged on shutdown."""

    runs_succeeded: int = 0
    runs_failed: int = 0
    syncs: int = 0
    fyi: int = 0


FYI_LOG_CHARS = 2000


def run_log_ids(signal: models.Signal) -> dict[str, str]:
    """What every log line about `signal` is bound to: a run's carry signal_id, agent_id and
    session_id (its claim opened the session); a sync's or an fyi's, signal_id only."""
    ids = {"signal_id": str(signal.id)}
    if signal.agent_id is not None:
        ids["agent_id"] = str(signal.agent_id)
    if signal.runtime_session_id is not None:
        ids["session_id"] = str(signal.runtime_session_id)
    return ids


def _loggable(payload: models.JsonValue) -> models.JsonValue:
    """The payload itself when small; a payload may be up to 1 MiB, a log line should not."""
    text = json.dumps(payload, ensure_ascii=False)
    if len(text) <= FYI_LOG_CHARS:
        return payload
    return f"{text[:FYI_LOG_CHARS]}… ({len(text)} characters in all)"


class Runner:
    def __init__(self, store: Store, agents: AgentCache, executors: Mapping[str, StepExecutor]):
        self._store = store
        self._agents = agents
        self._executors = executors
        self.counters = Counters()

    async def run(self, signal: models.Signal) -> None:
        with structlog.contextvars.bound_contextvars(**run_log_ids(signal)):
            if signal.type is models.SignalType.SYNC:
                await self._sync(signal)
            elif signal.type is models.SignalType.FYI:
                await self._fyi(signal)
            else:
                await self._run_agent(signal)

    async def _sync(self, signal: models.Signal) -> None:
        # finish_signal bumps the config epoch: every engine (this one too) reloads.
        await self._store.finish_signal(signal.id)
        await self._agents.refresh_if_stale()
        self.counters.syncs += 1
        log.info("sync_completed")

    async def _fyi(self, signal: models.Signal) -> None:
        self.counters.fyi += 1
        log.info("fyi_received", payload=_loggable(signal.payload), fyi_count=self.counters.fyi)
        await self._store.finish_signal(signal.id)

    async def _run_agent(self, signal: models.Signal) -> None:
        assert signal.agent_id is not None  # the database refuses run signals without one
        agent = await self._agents.get(signal.agent_id)
        if agent is None:
            await self._store.finish_signal(
                signal.id,
                error=f"agent {signal.agent_id} no longer exists; send it to an existing agent",
            )
            return
        session_id = signal.runtime_session_id
        assert session_id is not None  # claim_signals opens the session of every run it claims
        log.info("run_started", agent=agent.name, steps=len(agent.steps), attempt=signal.attempts)
        context = StepContext(
            signal_id=signal.id,
            session_id=session_id,
            agent_id=agent.id,
            owner_id=agent.owner_id,
        )
        if not agent.steps:
            await self._store.finish_signal(signal.id, output=signal.payload)
            self._succeeded()
            return
        value = signal.payload
        last = len(agent.steps) - 1
        for number, step in enumerate(agent.steps):
            outcome = await self._run_step(step, value, context, last_step=number == last)
            if not outcome.ok:
                # The failing step's result ended the run: signal and session are `error`.
                self.counters.runs_failed += 1
                log.info("run_failed", step=step.name, error=outcome.error)
                return
            value = outcome.output
        self._succeeded()

    def _succeeded(self) -> None:
        self.counters.runs_succeeded += 1
        log.info("run_succeeded")

    async def _run_step(
        self,
        step: models.Step,
        step_input: models.JsonValue,
        context: StepContext,
        *,
        last_step: bool,
    ) -> StepOutcome:
        """Run one step and record its result; the result of the last step, or of a failing
        one, also ends the run (one transaction: the watcher never sees a half-ended run)."""
        started_at = datetime.now(UTC)
        executor = self._executors.get(step.type)
        if executor is None:
            outcome = StepOutcome(
                error=f"this engine cannot run {step.type} steps; start it with {step.type} support"
            )
        else:
            try:
                outcome = await executor.execute(step, step_input, context)
            except Exception as exc:  # an executor bug must not leave the signal hanging
                log.exception("step_executor_crashed", step=step.name)
                outcome = StepOutcome(
                    error=f"the {step.type} step executor crashed ({type(exc).__name__}: {exc}); "
                    "this is a Portico bug, please report it with the engine log"
                )
        completed_at = datetime.now(UTC)
        await self._store.record_step_result(
            session_id=context.session_id,
            step=step,
            step_input=step_input,
            output=outcome.output,
            error=outcome.error,
            logs=outcome.logs,
            metadata=outcome.metadata,
            started_at=started_at,
            completed_at=completed_at,
            finish=last_step or not outcome.ok,
        )
        log.info(
            "step_finished",
            step=step.name,
            position=step.position,
            ok=outcome.ok,
            duration_ms=round((completed_at - started_at).total_seconds() * 1000, 3),
        )
        return outcome
