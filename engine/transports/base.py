"""The transport seam: call a named SQL function with named arguments; deliver wake-up hints.

Both transports (psycopg here, PostgREST RPC + Realtime for Supabase) speak only this, so the
store above them is written once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

WAKEUP_CHANNEL = "portico_signals"
CONFIG_CHANNEL = "portico_config"

Row = dict[str, Any]
WakeupHandler = Callable[[str, str], None]
"""Called with (channel, payload). Must not block or raise: it only sets events."""


@dataclass(frozen=True)
class Json:
    """Marks an argument to be sent as jsonb (a bare string would otherwise be text)."""

    value: Any


class Transport(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def call(self, function: str, args: Mapping[str, Any]) -> list[Row]:
        """Run `public.<function>(p_name => value, ...)` in its own transaction; returns rows.

        Raises errors.LeaseLost (PT409), errors.NotFound (PT404) or errors.DatabaseError."""
        ...

    async def listen(self, on_wakeup: WakeupHandler) -> None:
        """Deliver wake-up hints until cancelled, reconnecting as needed. After each
        (re)connect it calls on_wakeup("reconnected", "") since hints may have been missed."""
        ...
