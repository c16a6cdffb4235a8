"""Apply supabase/migrations in order, once each, recorded where the Supabase CLI records them.

On plain PostgreSQL the Supabase bootstrap (roles, `auth`, the realtime publication) runs
first, so the migrations apply unchanged here and on a Supabase project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

import psycopg
import structlog

from engine.db import target

log = structlog.get_logger(__name__)

MIGRATION_NAME = re.compile(r"^(?P<version>[0-9]{14})_(?P<name>.+)\.sql$")
# One migrator at a time per database; the key is arbitrary but fixed.
MIGRATION_LOCK_KEY = 7_041_930_518


class Bootstrap(StrEnum):
    AUTO = "auto"  # only when the database is not a Supabase project
    ALWAYS = "always"
    NEVER = "never"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")


def default_migrations_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def discover(directory: Path) -> list[Migration]:
    """Migrations in version order. Files not named like the Supabase CLI's are an error,
    not a silent skip: a misnamed migration would otherwise never run."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"migrations directory {directory} does not exist; pass --migrations-dir or run "
            "from a Portico checkout"
        )
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(
                f"migration file {path.name} is not named <14-digit UTC timestamp>_<name>.sql; "
                "rename it (e.g. with `supabase migration new <name>`)"
            )
        found.append(Migration(match["version"], match["name"], path))
    return found


def is_supabase_project(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "select to_regclass('auth.users') is not null"
        " and exists (select 1 from pg_roles where rolname = 'service_role')"
        " and exists (select 1 from pg_publication where pubname = 'supabase_realtime')"
    ).fetchone()
    return bool(row and row[0])


def apply_bootstrap(conn: psycopg.Connection) -> None:
    sql = resources.files("engine.db").joinpath("supabase_bootstrap.sql").read_text("utf-8")
    conn.execute(sql)  # type: ignore[arg-type]  # trusted file shipped with the package


def ensure_history_table(conn: psycopg.Connection) -> None:
    # The same table and columns the Supabase CLI uses, so `supabase db push` and Portico agree.
    conn.execute("create schema if not exists supabase_migrations")
    conn.execute(
        "create table if not exists supabase_migrations.schema_migrations"
        " (version text not null primary key, statements text[], name text)"
    )


def migrate(
    database_url: str,
    *,
    migrations_dir: Path | None = None,
    bootstrap: Bootstrap = Bootstrap.AUTO,
) -> list[Migration]:
    """Apply pending migrations; returns those applied now. Each migration is one transaction."""
    migrations = discover(migrations_dir or default_migrations_dir())
    applied_now: list[Migration] = []
    try:
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise target.unreachable(database_url, exc) from exc
    with conn:
        conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            if bootstrap is Bootstrap.ALWAYS or (
                bootstrap is Bootstrap.AUTO and not is_supabase_project(conn)
            ):
                with conn.transaction():
                    apply_bootstrap(conn)
                log.info("supabase_bootstrap_applied")
            ensure_history_table(conn)
            done = {
                row[0]
                for row in conn.execute("select version from supabase_migrations.schema_migrations")
            }
            for migration in migrations:
                if migration.version in done:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql)  # type: ignore[arg-type]  # trusted repo file
                    conn.execute(
                        "insert into supabase_migrations.schema_migrations"
                        " (version, name, statements) values (%s, %s, %s)",
                        (migration.version, migration.name, [migration.sql]),
                    )
                log.info("migration_applied", version=migration.version, name=migration.name)
                applied_now.append(migration)
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now
