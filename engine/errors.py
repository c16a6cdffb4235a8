"""Portico's exceptions.

PorticoError
├── ConfigurationError      settings or files that cannot work; says which and how to fix
├── DatabaseUnavailable     the database cannot be reached; says where and what to check
└── DatabaseError           a database call failed for a reason other than those below
    ├── LeaseLost           the worker no longer holds the signal (SQLSTATE PT409)
    └── NotFound            the row a call names does not exist (SQLSTATE PT404)
"""

from __future__ import annotations


class PorticoError(Exception):
    """Base of every error Portico raises on purpose."""


class ConfigurationError(PorticoError):
    """A setting, file or environment that cannot work."""


class DatabaseUnavailable(PorticoError):
    """The database cannot be reached (refused, unknown host, bad credentials, timeout)."""


class DatabaseError(PorticoError):
    """A database call failed."""

    def __init__(self, message: str, *, sqlstate: str | None = None, hint: str | None = None):
        super().__init__(message if not hint else f"{message} (hint: {hint})")
        self.sqlstate = sqlstate
        self.hint = hint


class LeaseLost(DatabaseError):
    """This worker no longer holds the signal: it was reclaimed, released or finished."""


class NotFound(DatabaseError):
    """The row a call names does not exist."""
