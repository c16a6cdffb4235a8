"""structlog, configured once: JSON lines when not on a terminal, readable on one.

Every line of a run carries signal_id, agent_id and session_id through contextvars. A redaction
processor removes secret-looking fields and any value of the engine's secret environment
variables before rendering.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

# "token" but not "tokens": token counts (total_tokens, usage) are not secrets.
SECRET_FIELD = re.compile(r"(key|token(?!s\b)|secret|password|authorization|credential)", re.I)
SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)", re.I)
REDACTED = "[redacted]"


def _secret_values() -> list[str]:
    # Values long enough that replacing them cannot mangle ordinary text.
    return [v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= 8]


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    secrets = _secret_values()
    for field, value in list(event_dict.items()):
        if SECRET_FIELD.search(field) and field not in {"event"}:
            event_dict[field] = REDACTED
        elif isinstance(value, str) and secrets:
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            event_dict[field] = value
    return event_dict


def configure(
    log_format: Literal["auto", "json", "console"] = "auto",
    level: str = "info",
    stream: Any = None,
) -> None:
    stream = stream or sys.stderr
    as_json = log_format == "json" or (log_format == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info,
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
