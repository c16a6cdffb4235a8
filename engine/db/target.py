"""Naming a database for people: where it is, never its password; and the error raised when
it cannot be reached."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict

from engine import errors


def describe(database_url: str) -> str:
    """`user@host:port/dbname` from a URL or conninfo string, without the password."""
    try:
        parts = conninfo_to_dict(database_url)
    except psycopg.ProgrammingError:
        return "the database named by DATABASE_URL (it does not parse as a PostgreSQL URL)"
    host = str(parts.get("host") or "localhost")
    where = f"{host}:{parts['port']}" if parts.get("port") else host
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{where}/{parts.get('dbname') or ''}"


def unreachable(database_url: str, exc: psycopg.Error) -> errors.DatabaseUnavailable:
    # libpq's first line says what failed; the lines after it repeat our own advice.
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return errors.DatabaseUnavailable(
        f"cannot connect to PostgreSQL at {describe(database_url)}: {reason}. Start the server "
        "or fix DATABASE_URL (or --database-url); leave both unset to use the embedded server"
    )
