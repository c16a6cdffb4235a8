"""OS signals (SIGINT, SIGTERM) → worker.stop(): stop claiming, finish or release, exit 0.

Named `shutdown` because "signal" is a domain word here.
"""

from __future__ import annotations

import asyncio
import signal as os_signal
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


def install(stop: Callable[[], None]) -> Callable[[], None]:
    """Route SIGINT and SIGTERM to `stop`; returns a function that removes the handlers."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        log.info("shutdown_requested", os_signal=os_signal.Signals(signum).name)
        stop()

    for signum in (os_signal.SIGINT, os_signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    def remove() -> None:
        for signum in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.remove_signal_handler(signum)

    return remove
