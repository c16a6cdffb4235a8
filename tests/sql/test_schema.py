"""The schema as a whole: migration history, the realtime publication, the foreign key that
PostgREST embedding relies on, indexes, RLS switched on, and function volatility."""

from __future__ import annotations

import re

import pytest

from engine import models
from engine.db import migrate
from tests.support.sql import Conn

PORTICO_TABLES = {"agents", "steps", "signals", "runtime_sessions", "step_results", "engine_config"}
REALTIME_TABLES = {"signals", "runtime_sessions", "step_results"}


def _published(conn: Conn) -> set[str]:
    rows = conn.execute(
        "select tablename from pg_publication_tables"
        " where pubname = 'supabase_realtime' and schemaname = 'public'"
    ).fetchall()
    return {r["tablename"] for r in rows}


def _realtime_do_block() -> str:
    path = next(migrate.default_migrations_dir().glob("*_signal_wakeups_and_realtime.sql"))
    match = re.search(r"^do \$\$.*?^\$\$;", path.read_text(encoding="utf-8"), re.S | re.M)
    assert match is not None, f"no DO block in {path.name}"
    assert "supabase_realtime" in match.group(0)
    return match.group(0)


def test_realtime_publication_carries_signals_sessions_and_step_results(module_admin: Conn) -> None:
    assert _published(module_admin) == REALTIME_TABLES


def test_running_the_realtime_block_twice_is_harmless(admin: Conn) -> None:
    block = _realtime_do_block()
    admin.execute(block)  # type: ignore[arg-type]
    admin.execute(block)  # type: ignore[arg-type]
    assert _published(admin) == REALTIME_TABLES


def test_realtime_block_adds_back_a_table_missing_from_the_publication(admin: Conn) -> None:
    admin.execute("alter publication supabase_realtime drop table public.step_results")
    admin.execute(_realtime_do_block())  # type: ignore[arg-type]
    assert _published(admin) == REALTIME_TABLES


def test_migrations_are_recorded_where_the_supabase_cli_records_them(module_admin: Conn) -> None:
    files = migrate.discover(migrate.default_migrations_dir())
    rows = module_admin.execute(
        "select version, name, statements from supabase_migrations.schema_migrations"
        " order by version"
    ).fetchall()
    assert [(r["version"], r["name"]) for r in rows] == [(m.version, m.name) for m in files]
    assert len(files) == 5
    assert all(r["statements"] == [m.sql] for r, m in zip(rows, files, strict=True))


def test_migrating_again_applies_nothing(any_database_url: str, admin: Conn) -> None:
    before = admin.execute("select count(*) as n from supabase_migrations.schema_migrations")
    assert migrate.migrate(any_database_url) == []
    after = admin.execute("select count(*) as n from supabase_migrations.schema_migrations")
    assert after.fetchone() == before.fetchone() == {"n": 5}


def test_step_results_embed_under_runtime_sessions_through_one_foreign_key(
    module_admin: Conn,
) -> None:
    rows = module_admin.execute(
        "select c.conname, c.conrelid::regclass::text as child,"
        " c.confrelid::regclass::text as parent,"
        " (select array_agg(a.attname::text order by a.attnum) from pg_attribute a"
        "   where a.attrelid = c.conrelid and a.attnum = any (c.conkey)) as columns"
        " from pg_constraint c"
        " where c.contype = 'f'"
        "   and array[c.conrelid, c.confrelid] <@"
        "       array['public.step_results'::regclass, 'public.runtime_sessions'::regclass]::oid[]"
    ).fetchall()
    assert [(r["child"], r["parent"], r["columns"]) for r in rows] == [
        ("step_results", "runtime_sessions", ["session_id"])
    ]


def test_every_foreign_key_leads_an_index(module_admin: Conn) -> None:
    rows = module_admin.execute(
        "select c.conrelid::regclass::text as tbl, c.conname from pg_constraint c"
        " where c.contype = 'f' and c.connamespace = 'public'::regnamespace"
        "   and not exists (select 1 from pg_index i where i.indrelid = c.conrelid"
        "                    and (i.indkey::int2[])[0:cardinality(c.conkey) - 1] = c.conkey)"
    ).fetchall()
    assert rows == [], "foreign keys without an index: " + ", ".join(
        f"{r['tbl']}.{r['conname']}" for r in rows
    )


def test_every_status_column_is_indexed(module_admin: Conn) -> None:
    rows = module_admin.execute(
        "select a.attrelid::regclass::text as tbl from pg_attribute a"
        " join pg_class k on k.oid = a.attrelid"
        " where a.attname = 'status' and k.relkind = 'r'"
        "   and k.relnamespace = 'public'::regnamespace"
        "   and not exists (select 1 from pg_index i where i.indrelid = a.attrelid"
        "                    and i.indkey[0] = a.attnum and i.indpred is null)"
    ).fetchall()
    assert rows == []


def test_row_level_security_is_on_for_every_table(module_admin: Conn) -> None:
    rows = module_admin.execute(
        "select relname, relrowsecurity from pg_class"
        " where relnamespace = 'public'::regnamespace and relkind = 'r'"
    ).fetchall()
    assert {r["relname"]: r["relrowsecurity"] for r in rows} == dict.fromkeys(PORTICO_TABLES, True)


VOLATILITY = {
    **dict.fromkeys(
        [
            "claim_signals",
            "renew_leases",
            "record_step_result",
            "finish_signal",
            "release_signals",
            "reclaim_expired_leases",
            "apply_agent",
        ],
        "v",
    ),
    **dict.fromkeys(["config_epoch", "agent_definition", "signal_report"], "s"),
}


def test_engine_functions_that_write_are_volatile(module_admin: Conn) -> None:
    # PostgREST runs STABLE functions in read-only transactions, so a writer must be VOLATILE.
    rows = module_admin.execute(
        "select proname, provolatile from pg_proc"
        " where pronamespace = 'public'::regnamespace and proname = any(%s)",
        (list(VOLATILITY),),
    ).fetchall()
    assert {r["proname"]: r["provolatile"] for r in rows} == VOLATILITY


def test_service_role_bypasses_rls_and_api_roles_do_not(module_admin: Conn) -> None:
    rows = module_admin.execute(
        "select rolname, rolbypassrls from pg_roles"
        " where rolname in ('anon', 'authenticated', 'service_role')"
    ).fetchall()
    assert {r["rolname"]: r["rolbypassrls"] for r in rows} == {
        "anon": False,
        "authenticated": False,
        "service_role": True,
    }


ROW_MODELS = {
    "signals": models.Signal,
    "runtime_sessions": models.RuntimeSession,
    "step_results": models.StepResult,
}


@pytest.mark.parametrize("table", list(ROW_MODELS))
def test_row_models_mirror_their_tables_column_for_column(module_admin: Conn, table: str) -> None:
    rows = module_admin.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'public' and table_name = %s",
        (table,),
    ).fetchall()
    assert set(ROW_MODELS[table].model_fields) == {r["column_name"] for r in rows}
