"""Row-level security and grants, the way PostgREST runs requests: anon, user A, user B and
service_role, each in a transaction with `set local role` and `request.jwt.claims`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from tests.support.sql import (
    Conn,
    Engine,
    add_step,
    as_role,
    connect,
    create_agent,
    create_user,
    python_config,
    send_signal,
    signal_row,
)

TABLES = ["agents", "steps", "signals", "runtime_sessions", "step_results", "engine_config"]


@dataclass
class World:
    """Two users, an agent each, a shared agent, and finished runs of signals sent by each."""

    users: dict[str, uuid.UUID]
    agents: dict[str, uuid.UUID]
    signals: dict[str, uuid.UUID] = field(default_factory=dict)

    def user(self, who: str) -> uuid.UUID | None:
        return self.users.get(who)

    def names(self, ids: set[uuid.UUID], of: str) -> set[str]:
        table = self.agents if of == "agents" else self.signals
        return {name for name, i in table.items() if i in ids}


def _send_as(conn: Conn, user: uuid.UUID, agent: uuid.UUID | None, type_: str = "run") -> uuid.UUID:
    with as_role(conn, "authenticated", user):
        return send_signal(conn, agent, type=type_)


def _run_everything(engine: Engine) -> None:
    """Claim and finish every signal, one step result per run, as the engine would."""
    while rows := engine.claim("w1", limit=10):
        for row in rows:
            if row["type"] == "run":
                session_id = row["runtime_session_id"]
                engine.record_step(session_id, "w1", 0, step_input={}, output="done")
            engine.finish(row["id"], "w1", output="done")


def build_world(admin: Conn, engine: Engine) -> World:
    users = {"a": create_user(admin), "b": create_user(admin)}
    agents = {
        "agent_a": create_agent(admin, owner_id=users["a"], name="mine"),
        "agent_b": create_agent(admin, owner_id=users["b"], name="mine"),
        "shared": create_agent(admin, name="shared"),
    }
    for agent in agents.values():
        add_step(admin, agent, 0)
    w = World(users, agents)
    w.signals = {
        "a_to_agent_a": _send_as(admin, users["a"], agents["agent_a"]),
        "a_to_shared": _send_as(admin, users["a"], agents["shared"]),
        "b_to_shared": _send_as(admin, users["b"], agents["shared"]),
        "b_to_agent_b": _send_as(admin, users["b"], agents["agent_b"]),
        "service_to_agent_a": send_signal(admin, agents["agent_a"]),
        "a_sync": _send_as(admin, users["a"], None, "sync"),
    }
    _run_everything(engine)
    return w


@pytest.fixture
def world(admin: Conn, engine: Engine) -> World:
    """A world of its own, on a fresh database, for tests whose writes succeed."""
    return build_world(admin, engine)


@pytest.fixture(scope="module")
def shared_world(module_admin: Conn, module_database_url: str) -> World:
    """One world per server for reads and refusals; tests roll back whatever they do."""
    with connect(module_database_url, role="service_role") as conn:
        return build_world(module_admin, Engine(conn))


@pytest.fixture
def db(module_admin: Conn, shared_world: World) -> Iterator[Conn]:
    """The shared world's connection; a test must leave it as it found it."""
    before = _fingerprint(module_admin)
    yield module_admin
    assert _fingerprint(module_admin) == before, "a test changed the shared world"


def _fingerprint(conn: Conn) -> dict[str, Any]:
    row = conn.execute(
        "select (select count(*) from public.agents) as agents,"
        " (select max(updated_at) from public.agents) as agents_at,"
        " (select count(*) from public.steps) as steps,"
        " (select max(updated_at) from public.steps) as steps_at,"
        " (select count(*) from public.signals) as signals,"
        " (select max(updated_at) from public.signals) as signals_at,"
        " (select count(*) from public.runtime_sessions) as sessions,"
        " (select count(*) from public.step_results) as results,"
        " (select epoch from public.engine_config) as epoch"
    ).fetchone()
    assert row is not None
    return dict(row)


def _select_ids(conn: Conn, table: str, column: str = "id") -> set[uuid.UUID]:
    query = sql.SQL("select {} as v from {}").format(
        sql.Identifier(column), sql.Identifier("public", table)
    )
    return {r["v"] for r in conn.execute(query)}


# ---------------------------------------------------------------------------------------------
# anon: no grants at all, so every read and write is denied (not merely 0 rows)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
def test_anon_is_denied_reading_every_table(db: Conn, table: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as exc, as_role(db, "anon"):
        db.execute(sql.SQL("select * from {}").format(sql.Identifier("public", table)))
    assert f"permission denied for table {table}" in str(exc.value)


ANON_WRITES = {
    "insert_agent": ("agents", "insert into public.agents (name) values ('x')"),
    "insert_step": (
        "steps",
        "insert into public.steps (agent_id, name, type, position)"
        " select id, 'x', 'python', 9 from public.agents",
    ),
    "insert_signal": ("signals", "insert into public.signals (type) values ('fyi')"),
    "update_agents": ("agents", "update public.agents set name = 'x'"),
    "delete_steps": ("steps", "delete from public.steps"),
    "update_signals": ("signals", "update public.signals set payload = '{}'"),
    "delete_sessions": ("runtime_sessions", "delete from public.runtime_sessions"),
    "insert_step_result": (
        "step_results",
        "insert into public.step_results (session_id) select id from public.runtime_sessions",
    ),
    "update_engine_config": ("engine_config", "update public.engine_config set epoch = 0"),
}


@pytest.mark.parametrize(("table", "statement"), list(ANON_WRITES.values()), ids=list(ANON_WRITES))
def test_anon_is_denied_writing(db: Conn, table: str, statement: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege) as exc, as_role(db, "anon"):
        db.execute(statement)  # type: ignore[arg-type]
    assert f"permission denied for table {table}" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Reads: who sees which rows
# ---------------------------------------------------------------------------------------------

SIGNALS_SEEN = {
    # Their own signals, and every signal that targets an agent they own.
    "a": {"a_to_agent_a", "a_to_shared", "service_to_agent_a", "a_sync"},
    "b": {"b_to_shared", "b_to_agent_b"},
}
RUNS_SEEN = {
    # Runs of their agents, and runs of the signals they sent (a shared agent's too).
    "a": {"a_to_agent_a", "a_to_shared", "service_to_agent_a"},
    "b": {"b_to_shared", "b_to_agent_b"},
}


@pytest.mark.parametrize("who", ["a", "b"])
def test_user_reads_own_and_shared_agents_and_their_steps(
    db: Conn, shared_world: World, who: str
) -> None:
    with as_role(db, "authenticated", shared_world.user(who), rollback=True):
        agents = shared_world.names(_select_ids(db, "agents"), of="agents")
        step_agents = shared_world.names(_select_ids(db, "steps", "agent_id"), of="agents")
    assert agents == {f"agent_{who}", "shared"}
    assert step_agents == {f"agent_{who}", "shared"}


@pytest.mark.parametrize("who", ["a", "b"])
def test_user_reads_signals_they_sent_or_that_target_their_agents(
    db: Conn, shared_world: World, who: str
) -> None:
    with as_role(db, "authenticated", shared_world.user(who), rollback=True):
        seen = shared_world.names(_select_ids(db, "signals"), of="signals")
    assert seen == SIGNALS_SEEN[who]


@pytest.mark.parametrize("who", ["a", "b"])
def test_user_reads_sessions_and_step_results_of_their_runs_only(
    db: Conn, shared_world: World, who: str
) -> None:
    with as_role(db, "authenticated", shared_world.user(who), rollback=True):
        sessions = shared_world.names(
            _select_ids(db, "runtime_sessions", "signal_id"), of="signals"
        )
        # Through the embedding a front end uses: runtime_sessions?select=*,step_results(*)
        results = db.execute(
            "select r.signal_id, count(x.id) as n from public.runtime_sessions r"
            " join public.step_results x on x.session_id = r.id group by r.signal_id"
        ).fetchall()
        n_results = db.execute("select count(*) as n from public.step_results").fetchone()
    assert sessions == RUNS_SEEN[who]
    assert shared_world.names({r["signal_id"] for r in results}, of="signals") == RUNS_SEEN[who]
    assert n_results == {"n": len(RUNS_SEEN[who])}


def test_user_is_denied_reading_engine_config(db: Conn, shared_world: World) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute("select * from public.engine_config")
    assert "permission denied for table engine_config" in str(exc.value)


def test_service_role_reads_every_row(db: Conn) -> None:
    everything = {t: len(_select_ids(db, t)) for t in TABLES}
    with as_role(db, "service_role", rollback=True):
        seen = {t: len(_select_ids(db, t)) for t in TABLES}
    assert seen == everything
    assert all(everything.values()), everything


# ---------------------------------------------------------------------------------------------
# Agents and steps
# ---------------------------------------------------------------------------------------------


def _rowcount(conn: Conn, statement: str, *params: Any) -> int:
    return conn.execute(statement, params).rowcount  # type: ignore[arg-type]


def test_user_creates_an_agent_and_steps_that_belong_to_them(admin: Conn, world: World) -> None:
    a = world.user("a")
    with as_role(admin, "authenticated", a):
        row = admin.execute(
            "insert into public.agents (name) values ('new') returning id, owner_id"
        ).fetchone()
        assert row is not None
        add_step(admin, row["id"], 0, name="first")
        add_step(admin, world.agents["agent_a"], 1, name="added")
    assert row["owner_id"] == a
    names = admin.execute(
        "select name from public.steps where name in ('first', 'added') order by name"
    ).fetchall()
    assert [r["name"] for r in names] == ["added", "first"]


@pytest.mark.parametrize("owner", ["b", "shared"])
def test_user_cannot_create_an_agent_for_someone_else_or_a_shared_one(
    db: Conn, shared_world: World, owner: str
) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        create_agent(db, owner_id=shared_world.user(owner), name="sneaky")
    assert 'new row violates row-level security policy for table "agents"' in str(exc.value)


def test_user_updates_and_deletes_only_their_own_agents(admin: Conn, world: World) -> None:
    with as_role(admin, "authenticated", world.user("a")):
        updated = {
            name: _rowcount(
                admin, "update public.agents set description = 'edited' where id = %s", agent
            )
            for name, agent in world.agents.items()
        }
        deleted = {
            name: _rowcount(admin, "delete from public.agents where id = %s", agent)
            for name, agent in world.agents.items()
        }
    assert updated == {"agent_a": 1, "agent_b": 0, "shared": 0}
    assert deleted == {"agent_a": 1, "agent_b": 0, "shared": 0}
    left = admin.execute("select id, description from public.agents").fetchall()
    assert {(r["id"], r["description"]) for r in left} == {
        (world.agents["agent_b"], ""),
        (world.agents["shared"], ""),
    }


def test_user_cannot_give_their_agent_away(db: Conn, shared_world: World) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute(
            "update public.agents set owner_id = %s where id = %s",
            (shared_world.user("b"), shared_world.agents["agent_a"]),
        )
    assert "permission denied for table agents" in str(exc.value)


def test_only_service_role_changes_a_shared_agent(admin: Conn, world: World) -> None:
    statement = "update public.agents set is_active = false where id = %s"
    for who in ("a", "b"):
        with as_role(admin, "authenticated", world.user(who)):
            assert _rowcount(admin, statement, world.agents["shared"]) == 0
            assert (
                _rowcount(
                    admin, "delete from public.steps where agent_id = %s", world.agents["shared"]
                )
                == 0
            )
    assert (
        admin.execute(
            "select is_active from public.agents where id = %s", (world.agents["shared"],)
        ).fetchone()
    ) == {"is_active": True}
    with as_role(admin, "service_role"):
        assert _rowcount(admin, statement, world.agents["shared"]) == 1


@pytest.mark.parametrize("target", ["agent_b", "shared"])
def test_user_cannot_add_steps_to_agents_they_do_not_own(
    db: Conn, shared_world: World, target: str
) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        add_step(db, shared_world.agents[target], 5)
    assert 'new row violates row-level security policy for table "steps"' in str(exc.value)


def test_user_changes_only_the_steps_of_their_own_agents(admin: Conn, world: World) -> None:
    config = Jsonb(python_config("return 42"))
    with as_role(admin, "authenticated", world.user("a")):
        updated = {
            name: _rowcount(
                admin, "update public.steps set config = %s where agent_id = %s", config, agent
            )
            for name, agent in world.agents.items()
        }
        deleted = {
            name: _rowcount(admin, "delete from public.steps where agent_id = %s", agent)
            for name, agent in world.agents.items()
        }
    assert updated == {"agent_a": 1, "agent_b": 0, "shared": 0}
    assert deleted == {"agent_a": 1, "agent_b": 0, "shared": 0}
    rows = admin.execute("select agent_id, config from public.steps").fetchall()
    assert {r["agent_id"] for r in rows} == {world.agents["agent_b"], world.agents["shared"]}
    assert all(r["config"] == python_config() for r in rows)


def test_user_cannot_move_a_step_to_another_agent(db: Conn, shared_world: World) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute(
            "update public.steps set agent_id = %s where agent_id = %s",
            (shared_world.agents["agent_b"], shared_world.agents["agent_a"]),
        )
    assert "permission denied for table steps" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["agent_a", "shared", None], ids=["own", "shared", "none"])
def test_user_inserts_pending_signals_for_agents_they_may_use(
    admin: Conn, world: World, target: str | None
) -> None:
    a = world.user("a")
    agent = world.agents[target] if target else None
    with as_role(admin, "authenticated", a):
        row = admin.execute(
            "insert into public.signals (type, payload, agent_id) values (%s, %s, %s)"
            " returning id, status, created_by, agent_id",
            ("run" if agent else "fyi", Jsonb({"hello": "world"}), agent),
        ).fetchone()
    assert row is not None
    assert (row["status"], row["created_by"], row["agent_id"]) == ("pending", a, agent)
    assert signal_row(admin, row["id"])["payload"] == {"hello": "world"}


def test_every_signed_in_user_may_signal_a_shared_agent(admin: Conn, world: World) -> None:
    for who in ("a", "b"):
        signal_id = _send_as(admin, world.users[who], world.agents["shared"])
        assert signal_row(admin, signal_id)["created_by"] == world.users[who]


def test_user_cannot_signal_another_users_agent(db: Conn, shared_world: World) -> None:
    target = shared_world.agents["agent_b"]
    with (
        pytest.raises(errors.ForeignKeyViolation) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        send_signal(db, target)
    assert exc.value.diag.constraint_name == "signals_agent_id_fkey"
    assert "not yours to use" in str(exc.value)


ENGINE_OWNED_COLUMNS = {
    "status": "pending",
    "error": None,
    "runtime_session_id": None,
    "worker_id": None,
    "lease_expires_at": None,
    "attempts": 0,
    "created_by": None,
    "claimed_at": None,
    "completed_at": None,
}


@pytest.mark.parametrize(
    ("column", "value"), list(ENGINE_OWNED_COLUMNS.items()), ids=list(ENGINE_OWNED_COLUMNS)
)
def test_user_cannot_set_engine_owned_signal_columns_on_insert(
    db: Conn, shared_world: World, column: str, value: Any
) -> None:
    # Even the harmless value (pending, null, 0) is refused: the column is not theirs to write.
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute(
            sql.SQL(
                "insert into public.signals (type, agent_id, {}) values ('run', %s, %s)"
            ).format(sql.Identifier(column)),
            (shared_world.agents["agent_a"], value),
        )
    assert "permission denied for table signals" in str(exc.value)


@pytest.mark.parametrize(
    "statement",
    [
        "update public.signals set payload = '{}' where id = %s",
        "update public.signals set status = 'processing' where id = %s",
        "update public.signals set error = 'x', runtime_session_id = null where id = %s",
        "delete from public.signals where id = %s",
    ],
    ids=["payload", "status", "error_and_session", "delete"],
)
def test_user_cannot_change_signals_at_all_even_their_own(
    db: Conn, shared_world: World, statement: str
) -> None:
    own = shared_world.signals["a_to_agent_a"]
    with (
        pytest.raises(errors.InsufficientPrivilege) as exc,
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute(statement, (own,))  # type: ignore[arg-type]
    assert "permission denied for table signals" in str(exc.value)


@pytest.mark.parametrize(
    "statement",
    [
        "delete from public.runtime_sessions",
        "update public.runtime_sessions set status = 'error'",
        "delete from public.step_results",
        "update public.step_results set output = null",
    ],
    ids=["delete_sessions", "update_sessions", "delete_results", "update_results"],
)
def test_user_cannot_write_runs(db: Conn, shared_world: World, statement: str) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege),
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute(statement)  # type: ignore[arg-type]


def test_user_cannot_return_a_signal_to_pending_with_the_engines_flag(
    db: Conn, shared_world: World
) -> None:
    with (
        pytest.raises(errors.InsufficientPrivilege),
        as_role(db, "authenticated", shared_world.user("a")),
    ):
        db.execute("select set_config('portico.lease_return', 'on', true)")
        db.execute(
            "update public.signals set status = 'pending' where id = %s",
            (shared_world.signals["a_to_agent_a"],),
        )


# ---------------------------------------------------------------------------------------------
# Engine functions: service_role only
# ---------------------------------------------------------------------------------------------

ZERO = "'00000000-0000-0000-0000-000000000000'::uuid"
ENGINE_CALLS = {
    "claim_signals": "select * from public.claim_signals(p_worker_id => 'w')",
    "renew_leases": f"select * from public.renew_leases('w', array[{ZERO}])",
    "lock_held_signal": f"select * from public.lock_held_signal({ZERO}, 'w')",
    "record_step_result": (
        f"select * from public.record_step_result({ZERO}, 'w', 0, null, 's', 'python',"
        " null, null, null, now(), now())"
    ),
    "finish_signal": f"select * from public.finish_signal({ZERO}, 'w')",
    "return_signal": "select public.return_signal(null::public.signals, 'x', null, true, now())",
    "release_signals": f"select * from public.release_signals('w', array[{ZERO}])",
    "reclaim_expired_leases": "select * from public.reclaim_expired_leases()",
    "config_epoch": "select public.config_epoch()",
    "agent_definition": f"select public.agent_definition({ZERO})",
    "signal_report": f"select public.signal_report({ZERO})",
    "apply_agent": """select public.apply_agent('{"name": "x", "steps": []}')""",
}


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("function", list(ENGINE_CALLS))
def test_api_roles_cannot_execute_engine_functions(
    db: Conn, shared_world: World, role: str, function: str
) -> None:
    user = shared_world.user("a") if role == "authenticated" else None
    with pytest.raises(errors.InsufficientPrivilege) as exc, as_role(db, role, user):
        db.execute(ENGINE_CALLS[function])  # type: ignore[arg-type]
    assert f"permission denied for function {function}" in str(exc.value)


@pytest.mark.parametrize("function", list(ENGINE_CALLS))
def test_service_role_executes_engine_functions(db: Conn, function: str) -> None:
    # Dummy ids make the functions that need a held signal answer PT404, after the privilege
    # check has passed; that is the point here.
    try:
        with as_role(db, "service_role", rollback=True):
            db.execute(ENGINE_CALLS[function])  # type: ignore[arg-type]
    except errors.InsufficientPrivilege:
        pytest.fail(f"service_role may not execute {function}")
    except psycopg.Error as exc:
        assert exc.sqlstate == "PT404", exc
