"""The engine's cache of agent definitions, dropped whenever the config epoch moves.

The epoch moves on any change to agents or steps and when a sync signal completes, so every
engine reloads within one sweep, and at once when the notification arrives.
"""

from __future__ import annotations

from uuid import UUID

import structlog

from engine import models
from engine.store import Store

log = structlog.get_logger(__name__)


class AgentCache:
    def __init__(self, store: Store):
        self._store = store
        self._agents: dict[UUID, models.Agent] = {}
        self._epoch: int | None = None
        self.reloads = 0

    async def get(self, agent_id: UUID) -> models.Agent | None:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = await self._store.agent_definition(agent_id)
            if agent is not None:
                self._agents[agent_id] = agent
        return agent

    async def refresh_if_stale(self) -> bool:
        """Compare the database's epoch with ours; drop the cache if it moved."""
        epoch = await self._store.config_epoch()
        if epoch == self._epoch:
            return False
        first_look = self._epoch is None
        self._epoch = epoch
        self._agents.clear()
        if not first_look:
            self.reloads += 1
            log.info("agent_config_reloaded", epoch=epoch)
        return True
