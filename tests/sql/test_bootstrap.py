"""The Supabase bootstrap for plain PostgreSQL (engine/db/supabase_bootstrap.sql) and the
migration runner's decision to use it: roles and how PostgREST's authenticator reaches them,
auth.uid()/auth.role()/auth.jwt() on the claims PostgREST sets, running things twice, and
leaving a Supabase project's own objects alone.

Roles belong to the cluster, so they already exist on a blank database here; the schemas,
functions and publication belong to each database."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from engine.db import migrate
from tests.support.servers import Cluster
from tests.support.sql import API_ROLES, Conn, as_role, connect, create_user

REALTIME_TABLES = {"signals", "runtime_sessions", "step_results"}
NO_CLAIMS = {"uid": None, "role": None, "jwt": None}


@pytest.fixture(params=["embedded", "system-pg15"])
def cluster(request: pytest.FixtureRequest) -> Cluster:
    fixture = "embedded_cluster" if request.param == "embedded" else "system_pg15_cluster"
    found: Cluster = request.getfixturevalue(fixture)
    return found


@pytest.fixture
def blank_database_url(cluster: Cluster) -> Iterator[str]:
    """A new database with nothing applied: neither the bootstrap nor any migration."""
    name = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(cluster.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield cluster.url(name)
    finally:
        cluster.drop_database(name)


@pytest.fixture
def blank(blank_database_url: str) -> Iterator[Conn]:
    with connect(blank_database_url) as conn:
        yield conn


def _is_supabase_project(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        return migrate.is_supabase_project(conn)


def _one(conn: Conn, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return next(iter(row.values()))


def _published(conn: Conn) -> set[str]:
    rows = conn.execute(
        "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
    ).fetchall()
    return {r["tablename"] for r in rows}


def _versions(conn: Conn) -> list[str]:
    rows = conn.execute(
        "select version from supabase_migrations.schema_migrations order by version"
    ).fetchall()
    return [r["version"] for r in rows]


def _all_versions() -> list[str]:
    return [m.version for m in migrate.discover(migrate.default_migrations_dir())]


# ---------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------


def test_api_roles_cannot_log_in_and_the_authenticator_can_without_inheriting(
    module_admin: Conn,
) -> None:
    # service_role's BYPASSRLS is asserted in test_schema.py.
    rows = module_admin.execute(
        "select rolname, rolcanlogin, rolinherit from pg_roles where rolname = any(%s)",
        ([*API_ROLES, "authenticator"],),
    ).fetchall()
    assert {r["rolname"]: r["rolcanlogin"] for r in rows} == {
        "anon": False,
        "authenticated": False,
        "service_role": False,
        "authenticator": True,
    }
    assert {r["rolname"]: r["rolinherit"] for r in rows}["authenticator"] is False


@pytest.mark.parametrize("role", API_ROLES)
def test_authenticator_is_a_member_of_each_api_role_but_holds_none_of_its_rights(
    module_admin: Conn, role: str
) -> None:
    row = module_admin.execute(
        "select pg_has_role('authenticator', %s, 'MEMBER') as member,"
        " pg_has_role('authenticator', %s, 'USAGE') as usage",
        (role, role),
    ).fetchone()
    assert row == {"member": True, "usage": False}


def test_authenticator_logs_in_and_switches_to_each_api_role_like_postgrest(
    module_database_url: str,
) -> None:
    with connect(make_conninfo(module_database_url, user="authenticator")) as conn:
        assert _one(conn, "select current_user") == "authenticator"
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table"):
            conn.execute("select count(*) from public.agents")
        for role in API_ROLES:
            with conn.transaction(force_rollback=True):
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
                assert _one(conn, "select current_user") == role
        conn.execute("set role service_role")
        assert _one(conn, "select count(*) from public.agents") == 0
        conn.execute("reset role")
        with pytest.raises(errors.InsufficientPrivilege, match='set role "postgres"'):
            conn.execute("set role postgres")


# ---------------------------------------------------------------------------------------------
# auth.uid(), auth.role(), auth.jwt()
# ---------------------------------------------------------------------------------------------


def _auth(conn: Conn) -> dict[str, Any]:
    row = conn.execute(
        "select auth.uid() as uid, auth.role() as role, auth.jwt() as jwt"
    ).fetchone()
    assert row is not None
    return dict(row)


@pytest.mark.parametrize("role", API_ROLES)
def test_auth_functions_read_the_claims_postgrest_sets_for_each_role(
    module_admin: Conn, role: str
) -> None:
    user = uuid.uuid4() if role == "authenticated" else None
    claims: dict[str, Any] = {
        "role": role,
        "aud": "authenticated",
        "exp": 4102444800,
        "app_metadata": {"provider": "email", "providers": ["email"]},
    }
    if user is not None:
        claims |= {"sub": str(user), "email": "a@example.test"}
    with module_admin.transaction(force_rollback=True):
        module_admin.execute(sql.SQL("set local role {}").format(sql.Identifier(role)))
        module_admin.execute(
            "select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),)
        )
        seen = _auth(module_admin)
    assert seen == {"uid": user, "role": role, "jwt": claims}


def test_auth_uid_follows_the_claims_of_the_current_request_only(module_admin: Conn) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    with as_role(module_admin, "authenticated", first, rollback=True):
        in_first = _auth(module_admin)["uid"]
    with as_role(module_admin, "authenticated", second, rollback=True):
        in_second = _auth(module_admin)["uid"]
    assert (in_first, in_second) == (first, second)
    assert _auth(module_admin) == NO_CLAIMS


def test_auth_functions_return_null_when_no_claims_are_set(module_database_url: str) -> None:
    with connect(module_database_url) as conn:
        # Never set in this session: current_setting(..., true) is null.
        assert _one(conn, "select current_setting('request.jwt.claims', true)") is None
        assert _auth(conn) == NO_CLAIMS
        with conn.transaction():
            conn.execute("select set_config('request.jwt.claims', '{\"role\": \"anon\"}', true)")
        # After a request-local setting ends, the setting reads '' for the rest of the session.
        assert _one(conn, "select current_setting('request.jwt.claims', true)") == ""
        assert _auth(conn) == NO_CLAIMS


def test_auth_functions_read_the_one_claim_settings_of_older_postgrest(
    module_admin: Conn,
) -> None:
    user = uuid.uuid4()
    with module_admin.transaction(force_rollback=True):
        module_admin.execute("select set_config('request.jwt.claim.sub', %s, true)", (str(user),))
        module_admin.execute("select set_config('request.jwt.claim.role', 'authenticated', true)")
        seen = _auth(module_admin)
    assert seen == {"uid": user, "role": "authenticated", "jwt": None}


# ---------------------------------------------------------------------------------------------
# What the bootstrap creates in a database, and running it again
# ---------------------------------------------------------------------------------------------


def test_bootstrap_on_a_blank_database_provides_what_the_migrations_expect(
    blank_database_url: str, blank: Conn
) -> None:
    assert _is_supabase_project(blank_database_url) is False

    migrate.apply_bootstrap(blank)

    assert _is_supabase_project(blank_database_url) is True
    schemas = blank.execute(
        "select nspname from pg_namespace where nspname in ('extensions', 'auth')"
    ).fetchall()
    assert {r["nspname"] for r in schemas} == {"extensions", "auth"}
    publication = blank.execute(
        "select puballtables from pg_publication where pubname = 'supabase_realtime'"
    ).fetchall()
    assert publication == [{"puballtables": False}]
    assert _published(blank) == set()
    for role in API_ROLES:
        row = blank.execute(
            "select has_schema_privilege(%s, 'extensions', 'USAGE') as extensions,"
            " has_schema_privilege(%s, 'auth', 'USAGE') as auth,"
            " has_function_privilege(%s, 'auth.uid()', 'EXECUTE') as uid,"
            " has_function_privilege(%s, 'auth.role()', 'EXECUTE') as role,"
            " has_function_privilege(%s, 'auth.jwt()', 'EXECUTE') as jwt",
            (role,) * 5,
        ).fetchone()
        assert row == dict.fromkeys(["extensions", "auth", "uid", "role", "jwt"], True), role


def test_bootstrap_twice_on_a_blank_database_is_harmless(blank: Conn) -> None:
    migrate.apply_bootstrap(blank)
    user = create_user(blank, "kept@example.test")

    migrate.apply_bootstrap(blank)

    assert _one(blank, "select count(*) from auth.users") == 1
    assert _one(blank, "select email from auth.users where id = %s", user) == "kept@example.test"
    assert (
        _one(blank, "select count(*) from pg_publication where pubname = 'supabase_realtime'") == 1
    )


def test_bootstrap_again_on_a_migrated_database_keeps_its_data_and_publication(
    any_database_url: str, admin: Conn
) -> None:
    user = create_user(admin, "kept@example.test")

    migrate.apply_bootstrap(admin)
    applied = migrate.migrate(any_database_url, bootstrap=migrate.Bootstrap.ALWAYS)

    assert applied == []
    assert _one(admin, "select count(*) from auth.users") == 1
    assert _published(admin) == REALTIME_TABLES
    # The policies still resolve the user through the replaced auth.uid().
    with as_role(admin, "authenticated", user, rollback=True):
        admin.execute("insert into public.agents (name) values ('mine')")
        assert _one(admin, "select owner_id from public.agents where name = 'mine'") == user


# ---------------------------------------------------------------------------------------------
# The migration runner: each migration once, and the bootstrap only where it is needed
# ---------------------------------------------------------------------------------------------


def test_migrating_a_blank_database_bootstraps_it_and_applies_each_migration_once(
    blank_database_url: str, blank: Conn
) -> None:
    first = migrate.migrate(blank_database_url)
    second = migrate.migrate(blank_database_url)

    assert [m.version for m in first] == _all_versions()
    assert second == []
    assert _versions(blank) == _all_versions()
    assert _is_supabase_project(blank_database_url) is True
    assert _published(blank) == REALTIME_TABLES


def test_two_migrators_at_once_apply_each_migration_once(
    blank_database_url: str, blank: Conn
) -> None:
    start = threading.Barrier(2)
    applied: list[list[str]] = []
    failures: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            applied.append([m.version for m in migrate.migrate(blank_database_url)])
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sorted(applied, key=len) == [[], _all_versions()]
    assert _versions(blank) == _all_versions()


def test_supabase_project_is_recognised_only_with_auth_users_and_the_publication(
    blank_database_url: str, blank: Conn
) -> None:
    # service_role exists cluster-wide already; these two are per database.
    assert _is_supabase_project(blank_database_url) is False
    blank.execute("create schema auth")
    blank.execute("create table auth.users (id uuid primary key)")
    assert _is_supabase_project(blank_database_url) is False
    blank.execute("create publication supabase_realtime")
    assert _is_supabase_project(blank_database_url) is True
    blank.execute("drop table auth.users")
    assert _is_supabase_project(blank_database_url) is False


# What a Supabase project has before its first migration, reduced to what the migrations use;
# auth.uid() carries a marker so that a bootstrap run (which replaces it) would show.
SUPABASE_PROJECT = """
create schema extensions;
create schema auth;
create table auth.users (id uuid primary key, email varchar(255));
create function auth.uid() returns uuid language sql stable as $$
  -- the project's own
  select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid
$$;
create publication supabase_realtime;
"""


def _uid_source(conn: Conn) -> str:
    return str(_one(conn, "select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure"))


def test_auto_leaves_a_supabase_project_alone_and_only_migrates_it(
    blank_database_url: str, blank: Conn
) -> None:
    blank.execute(SUPABASE_PROJECT)  # type: ignore[arg-type]
    assert _is_supabase_project(blank_database_url) is True

    applied = migrate.migrate(blank_database_url, bootstrap=migrate.Bootstrap.AUTO)

    assert [m.version for m in applied] == _all_versions()
    assert "project's own" in _uid_source(blank)
    assert _one(blank, "select to_regprocedure('auth.jwt()')") is None
    columns = blank.execute(
        "select column_name from information_schema.columns"
        " where table_schema = 'auth' and table_name = 'users'"
    ).fetchall()
    assert {r["column_name"] for r in columns} == {"id", "email"}
    assert _published(blank) == REALTIME_TABLES

    # The markers would show a bootstrap run: ALWAYS replaces auth.uid() and adds auth.jwt().
    assert migrate.migrate(blank_database_url, bootstrap=migrate.Bootstrap.ALWAYS) == []
    assert "project's own" not in _uid_source(blank)
    assert _one(blank, "select to_regprocedure('auth.jwt()')") == "auth.jwt()"


def test_never_skips_the_bootstrap_even_on_a_blank_database(
    blank_database_url: str, blank: Conn
) -> None:
    with pytest.raises(psycopg.errors.InvalidSchemaName, match='schema "extensions"'):
        migrate.migrate(blank_database_url, bootstrap=migrate.Bootstrap.NEVER)
    assert _one(blank, "select to_regclass('auth.users')") is None
    assert _versions(blank) == []
