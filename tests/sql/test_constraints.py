"""The database refuses bad rows by a named constraint, with a message a person can act on.

Every case runs in a transaction that is rolled back, on one database per server.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from tests.support.sql import (
    Conn,
    add_step,
    as_role,
    create_agent,
    create_user,
    llm_config,
    python_config,
    send_signal,
)

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def agent_id(module_admin: Conn) -> uuid.UUID:
    return create_agent(module_admin, name="constraint-target")


@pytest.fixture
def conn(module_admin: Conn) -> Iterator[Conn]:
    """The module's superuser connection; whatever a test does is rolled back after it."""
    yield module_admin
    assert module_admin.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def assert_refusal(
    exc: pytest.ExceptionInfo[psycopg.Error], sqlstate: str, constraint: str, *words: str
) -> None:
    err = exc.value
    assert err.sqlstate == sqlstate, f"{err.sqlstate}: {err}"
    assert err.diag.constraint_name == constraint, str(err)
    message = str(err.diag.message_primary)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------
# Step configs
# ---------------------------------------------------------------------------------------------

BAD_PYTHON_CONFIGS = {
    "missing_code": ({}, ["config.code must be a non-empty string"]),
    "empty_code": ({"code": ""}, ["config.code must be a non-empty string"]),
    "blank_code": ({"code": "    "}, ["config.code must be a non-empty string"]),
    "code_not_a_string": ({"code": 42}, ["config.code must be a non-empty string"]),
    "timeout_zero": (python_config(timeout_ms=0), ["config.timeout_ms", "greater than 0"]),
    "timeout_negative": (python_config(timeout_ms=-5), ["config.timeout_ms", "greater than 0"]),
    "timeout_fractional": (python_config(timeout_ms=1.5), ["config.timeout_ms", "whole number"]),
    "timeout_numeric_string": (python_config(timeout_ms="100"), ["config.timeout_ms"]),
    "timeout_word": (python_config(timeout_ms="soon"), ["config.timeout_ms"]),
    "unknown_key": (
        python_config(timeout=5, memory_mb=10),
        ["unknown config keys: memory_mb, timeout", "python steps accept: code, timeout_ms"],
    ),
    "not_an_object": (["return 1"], ["config must be a JSON object"]),
}

BAD_PYTHON_CASES = [
    *[pytest.param(c, w, id=k) for k, (c, w) in BAD_PYTHON_CONFIGS.items()],
    pytest.param(
        {"code": "\n\t\n"},
        ["config.code must be a non-empty string"],
        id="code_of_newlines_and_tabs",
    ),
]

BAD_LLM_CONFIGS = {
    "missing_prompt_template": (
        {"model": "openai/gpt-4o-mini"},
        ["config.prompt_template must be a non-empty string"],
    ),
    "blank_prompt_template": (
        llm_config(prompt_template="   "),
        ["config.prompt_template must be a non-empty string"],
    ),
    "missing_model": ({"prompt_template": "Hi {{name}}"}, ["config.model must be a non-empty"]),
    "blank_model": (llm_config(model=""), ["config.model must be a non-empty"]),
    "temperature_above_1": (llm_config(temperature=1.5), ["config.temperature", "from 0 to 1"]),
    "temperature_below_0": (llm_config(temperature=-0.1), ["config.temperature", "from 0 to 1"]),
    "temperature_word": (llm_config(temperature="hot"), ["config.temperature"]),
    "max_tokens_zero": (llm_config(max_tokens=0), ["config.max_tokens", "greater than 0"]),
    "max_tokens_negative": (llm_config(max_tokens=-1), ["config.max_tokens"]),
    "max_tokens_fractional": (llm_config(max_tokens=2.5), ["config.max_tokens", "whole number"]),
    "unknown_keys_named": (
        llm_config(prompt="x", top_p=0.9),
        ["unknown config keys: prompt, top_p", "llm steps accept: prompt_template, model"],
    ),
    "response_format_unknown": (
        llm_config(response_format="xml"),
        ['config.response_format must be "text" or "json"'],
    ),
    "response_format_object": (
        llm_config(response_format={"type": "json_object"}),
        ["config.response_format"],
    ),
    "api_base_not_http": (llm_config(api_base="ftp://models.example"), ["config.api_base"]),
    "api_base_not_a_url": (llm_config(api_base="models.example"), ["config.api_base", "URL"]),
    "api_base_with_space": (llm_config(api_base="http://a b/v1"), ["config.api_base"]),
    "system_not_a_string": (llm_config(system=["be brief"]), ["config.system must be a string"]),
    "several_problems_at_once": (
        {"prompt_template": "", "temperature": 3},
        ["config.prompt_template", "config.model", "config.temperature"],
    ),
}


BAD_LLM_CASES = [
    *[pytest.param(c, w, id=k) for k, (c, w) in BAD_LLM_CONFIGS.items()],
    pytest.param(
        llm_config(prompt_template="\n\n"),
        ["config.prompt_template must be a non-empty string"],
        id="prompt_template_of_newlines",
    ),
]


@pytest.mark.parametrize(("config", "words"), BAD_PYTHON_CASES)
def test_python_step_config_that_does_not_fit_is_refused(
    conn: Conn, agent_id: uuid.UUID, config: Any, words: list[str]
) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        conn.execute(
            "insert into public.steps (agent_id, name, type, config, position)"
            " values (%s, 'clean', 'python', %s, 0)",
            (agent_id, Jsonb(config)),
        )
    assert_refusal(exc, "23514", "steps_config_valid", 'step "clean" (python)', *words)
    assert exc.value.diag.message_hint and "timeout_ms" in exc.value.diag.message_hint


@pytest.mark.parametrize(("config", "words"), BAD_LLM_CASES)
def test_llm_step_config_that_does_not_fit_is_refused(
    conn: Conn, agent_id: uuid.UUID, config: Any, words: list[str]
) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, type="llm", config=config, name="summarise")
    assert_refusal(exc, "23514", "steps_config_valid", 'step "summarise" (llm)', *words)


GOOD_CONFIGS = {
    "python_minimal": ("python", python_config()),
    "python_with_timeout": ("python", python_config(timeout_ms=1500)),
    "llm_minimal": ("llm", llm_config()),
    "llm_every_option_at_its_bounds": (
        "llm",
        llm_config(
            temperature=0,
            max_tokens=1,
            system="Be brief.",
            response_format="json",
            timeout_ms=30000,
            api_base="https://llm.example/v1",
        ),
    ),
    "llm_temperature_one_text_format_http_base": (
        "llm",
        llm_config(temperature=1, response_format="text", api_base="http://localhost:4000"),
    ),
}


@pytest.mark.parametrize(("type_", "config"), list(GOOD_CONFIGS.values()), ids=list(GOOD_CONFIGS))
def test_step_config_that_fits_its_type_is_accepted(
    conn: Conn, agent_id: uuid.UUID, type_: str, config: dict[str, Any]
) -> None:
    with conn.transaction(force_rollback=True):
        step_id = add_step(conn, agent_id, 0, type=type_, config=config)
        row = conn.execute("select config from public.steps where id = %s", (step_id,)).fetchone()
    assert row is not None and row["config"] == config


def test_step_config_is_checked_again_on_update(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        step_id = add_step(conn, agent_id, 0, name="greet")
        conn.execute(
            "update public.steps set config = %s where id = %s", (Jsonb({"code": ""}), step_id)
        )
    assert_refusal(exc, "23514", "steps_config_valid", 'step "greet"', "config.code")


def test_step_config_check_holds_even_with_the_trigger_disabled(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        conn.execute("alter table public.steps disable trigger steps_check_config")
        add_step(conn, agent_id, 0, config={"code": "   "})
    assert_refusal(exc, "23514", "steps_config_valid")


# ---------------------------------------------------------------------------------------------
# Steps: position, type, name
# ---------------------------------------------------------------------------------------------


POSITION_HINT = (
    "Pick a free position, or move or delete the step at that position first (to swap two"
    " steps in one transaction, run `set constraints public.steps_one_per_position deferred`"
    " first). `portico agents apply` replaces all of an agent's steps at once."
)


def test_two_steps_of_one_agent_at_one_position_are_refused(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.UniqueViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 3, name="first")
        add_step(conn, agent_id, 3, name="second")
    assert_refusal(exc, "23505", "steps_one_per_position")
    assert exc.value.diag.message_primary == (
        f'step "second": agent {agent_id} already has a step at position 3 ("first")'
    )
    assert exc.value.diag.message_hint == POSITION_HINT


def test_moving_a_step_onto_a_taken_position_is_refused(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.UniqueViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, name="first")
        second = add_step(conn, agent_id, 1, name="second")
        conn.execute("update public.steps set position = 0 where id = %s", (second,))
    assert_refusal(exc, "23505", "steps_one_per_position")
    assert exc.value.diag.message_primary == (
        f'step "second": agent {agent_id} already has a step at position 0 ("first")'
    )
    assert exc.value.diag.message_hint == POSITION_HINT


def test_a_signed_in_owner_gets_the_same_refusal_under_rls(module_admin: Conn) -> None:
    with (
        pytest.raises(errors.UniqueViolation) as exc,
        module_admin.transaction(force_rollback=True),
    ):
        owner = create_user(module_admin)
        agent = create_agent(module_admin, owner_id=owner, name="owned")
        add_step(module_admin, agent, 0, name="first")
        with as_role(module_admin, "authenticated", owner):
            add_step(module_admin, agent, 0, name="second")
    assert_refusal(exc, "23505", "steps_one_per_position", f"agent {agent}", '("first")')


def test_duplicate_positions_are_refused_by_the_unique_backstop_with_the_trigger_disabled(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.UniqueViolation) as exc, conn.transaction(force_rollback=True):
        conn.execute("alter table public.steps disable trigger steps_one_per_position")
        add_step(conn, agent_id, 3, name="first")
        add_step(conn, agent_id, 3, name="second")
        # The backstop is checked at commit; make it answer now, inside the rolled-back test.
        conn.execute("set constraints public.steps_position_unique immediate")
    assert_refusal(exc, "23505", "steps_position_unique")
    assert '(agent_id, "position")' in str(exc.value.diag.message_detail)


def test_two_agents_may_each_have_a_step_at_one_position(conn: Conn, agent_id: uuid.UUID) -> None:
    with conn.transaction(force_rollback=True):
        other = create_agent(conn)
        add_step(conn, agent_id, 0)
        add_step(conn, other, 0)
        row = conn.execute("select count(*) as n from public.steps where position = 0").fetchone()
    assert row is not None and row["n"] == 2


def test_two_steps_swap_positions_in_one_statement(conn: Conn, agent_id: uuid.UUID) -> None:
    with conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, name="first")
        add_step(conn, agent_id, 1, name="second")
        conn.execute(
            "update public.steps set position = 1 - position where agent_id = %s", (agent_id,)
        )
        rows = conn.execute(
            "select name from public.steps where agent_id = %s order by position", (agent_id,)
        ).fetchall()
    assert [r["name"] for r in rows] == ["second", "first"]


def test_a_swap_left_half_done_is_refused_when_the_check_comes_due(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.UniqueViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, name="first")
        second = add_step(conn, agent_id, 1, name="second")
        conn.execute("set constraints public.steps_one_per_position deferred")
        conn.execute("update public.steps set position = 0 where id = %s", (second,))
        conn.execute("set constraints public.steps_one_per_position immediate")
    assert_refusal(exc, "23505", "steps_one_per_position", '("first")')


def test_apply_agent_replaces_steps_at_the_positions_they_had(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    def apply(*names: str) -> list[tuple[str, int]]:
        definition = {
            "name": "constraint-target",
            "steps": [{"name": n, "type": "python", "config": python_config()} for n in names],
        }
        row = conn.execute("select public.apply_agent(%s) as id", (Jsonb(definition),)).fetchone()
        assert row is not None and row["id"] == agent_id
        rows = conn.execute(
            "select name, position from public.steps where agent_id = %s order by position",
            (agent_id,),
        ).fetchall()
        return [(r["name"], r["position"]) for r in rows]

    with conn.transaction(force_rollback=True):
        assert apply("a", "b") == [("a", 0), ("b", 1)]
        assert apply("b", "a", "c") == [("b", 0), ("a", 1), ("c", 2)]


def test_two_steps_swap_positions_inside_one_transaction(conn: Conn, agent_id: uuid.UUID) -> None:
    with conn.transaction(force_rollback=True):
        first = add_step(conn, agent_id, 0, name="first")
        second = add_step(conn, agent_id, 1, name="second")
        conn.execute("set constraints public.steps_one_per_position deferred")
        conn.execute("update public.steps set position = 1 where id = %s", (first,))
        conn.execute("update public.steps set position = 0 where id = %s", (second,))
        conn.execute("set constraints public.steps_one_per_position immediate")
        rows = conn.execute(
            "select name from public.steps where agent_id = %s order by position", (agent_id,)
        ).fetchall()
    assert [r["name"] for r in rows] == ["second", "first"]


def test_step_with_an_unknown_type_is_refused(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, type="bash", config={})
    assert_refusal(exc, "23514", "steps_type_valid", "steps_type_valid")


def test_step_with_an_unknown_type_is_refused_for_its_type_whatever_its_config(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, type="bash", config={"code": "echo hi"})
    assert_refusal(exc, "23514", "steps_type_valid")


def test_step_at_a_negative_position_is_refused(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, -1)
    assert_refusal(exc, "23514", "steps_position_not_negative")


@pytest.mark.parametrize("name", ["", "  ", "\n\t"])
def test_step_with_a_blank_name_is_refused(conn: Conn, agent_id: uuid.UUID, name: str) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        add_step(conn, agent_id, 0, name=name)
    assert_refusal(exc, "23514", "steps_name_not_blank")


# ---------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", " ", "\t\n"])
def test_agent_with_a_blank_name_is_refused(conn: Conn, name: str) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        create_agent(conn, name=name)
    assert_refusal(exc, "23514", "agents_name_not_blank")


def test_two_shared_agents_with_one_name_are_refused(conn: Conn) -> None:
    with pytest.raises(errors.UniqueViolation) as exc, conn.transaction(force_rollback=True):
        create_agent(conn, name="twin")
        create_agent(conn, name="twin")
    assert_refusal(exc, "23505", "agents_name_unique_per_owner")


def test_one_name_may_be_used_by_different_owners(conn: Conn) -> None:
    with conn.transaction(force_rollback=True):
        owners = [uuid.uuid4(), uuid.uuid4()]
        for owner in owners:
            conn.execute("insert into auth.users (id) values (%s)", (owner,))
            create_agent(conn, owner_id=owner, name="twin")
        create_agent(conn, name="twin")
        row = conn.execute("select count(*) as n from public.agents where name = 'twin'").fetchone()
    assert row is not None and row["n"] == 3


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


def test_run_signal_without_agent_is_refused(conn: Conn) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        send_signal(conn, None, type="run")
    assert_refusal(exc, "23514", "signals_run_requires_agent", "run signal needs an agent_id")
    assert "sync or fyi" in str(exc.value.diag.message_hint)


def test_signal_for_an_unknown_agent_is_refused(conn: Conn) -> None:
    missing = uuid.uuid4()
    with pytest.raises(errors.ForeignKeyViolation) as exc, conn.transaction(force_rollback=True):
        send_signal(conn, missing)
    assert_refusal(exc, "23503", "signals_agent_id_fkey", str(missing), "does not exist")


@pytest.mark.parametrize("type_", ["sync", "fyi"])
def test_sync_and_fyi_signals_need_no_agent(conn: Conn, type_: str) -> None:
    with conn.transaction(force_rollback=True):
        signal_id = send_signal(conn, None, type=type_)
        row = conn.execute(
            "select status, seq from public.signals where id = %s", (signal_id,)
        ).fetchone()
    assert row is not None and row["status"] == "pending" and row["seq"] > 0


def test_signal_with_an_unknown_type_is_refused(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        send_signal(conn, agent_id, type="exec")
    assert_refusal(exc, "23514", "signals_type_valid")


NEW_SIGNAL_OVERRIDES = {
    "status_processing": {"status": "processing"},
    "status_complete": {"status": "complete"},
    "status_not_in_the_lifecycle": {"status": "done"},
    "error_set": {"error": "boom"},
    "worker_set": {"worker_id": "w1"},
    "attempts_set": {"attempts": 2},
}


@pytest.mark.parametrize(
    "override", list(NEW_SIGNAL_OVERRIDES.values()), ids=list(NEW_SIGNAL_OVERRIDES)
)
def test_new_signal_that_is_not_plain_pending_is_refused(
    conn: Conn, agent_id: uuid.UUID, override: dict[str, Any]
) -> None:
    column, value = next(iter(override.items()))
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        conn.execute(
            sql.SQL(
                "insert into public.signals (type, agent_id, {}) values ('run', %s, %s)"
            ).format(sql.Identifier(column)),
            (agent_id, value),
        )
    assert_refusal(exc, "23514", "signals_status_lifecycle", "new signal must be pending")
    assert "engine sets the rest" in str(exc.value.diag.message_hint)


def test_payload_over_one_mib_is_refused(conn: Conn, agent_id: uuid.UUID) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        send_signal(conn, agent_id, payload={"blob": "x" * (MiB + 1024)})
    assert_refusal(exc, "23514", "signals_payload_size", "signals_payload_size")


def test_payload_under_one_mib_is_accepted(conn: Conn, agent_id: uuid.UUID) -> None:
    with conn.transaction(force_rollback=True):
        signal_id = send_signal(conn, agent_id, payload={"blob": "x" * (MiB - 4096)})
        row = conn.execute(
            "select length(payload ->> 'blob') as n from public.signals where id = %s",
            (signal_id,),
        ).fetchone()
    assert row is not None and row["n"] == MiB - 4096


# ---------------------------------------------------------------------------------------------
# Sessions and step results
# ---------------------------------------------------------------------------------------------


def _session(conn: Conn, agent_id: uuid.UUID) -> uuid.UUID:
    signal_id = send_signal(conn, agent_id)
    row = conn.execute(
        "insert into public.runtime_sessions (signal_id, agent_id) values (%s, %s) returning id",
        (signal_id, agent_id),
    ).fetchone()
    assert row is not None
    return row["id"]


def test_session_with_a_status_outside_its_value_set_is_refused(
    conn: Conn, agent_id: uuid.UUID
) -> None:
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        signal_id = send_signal(conn, agent_id)
        conn.execute(
            "insert into public.runtime_sessions (signal_id, agent_id, status, completed_at)"
            " values (%s, %s, 'done', now())",
            (signal_id, agent_id),
        )
    assert_refusal(exc, "23514", "runtime_sessions_status_valid")


STEP_RESULT_OVERRIDES = {
    "status_skipped": ("status", "skipped", "step_results_status_valid"),
    "step_type_bash": ("step_type", "bash", "step_results_step_type_valid"),
    "error_without_error_status": ("error", "boom", "step_results_error_iff_failed"),
    "negative_duration": ("duration_ms", -1, "step_results_duration_not_negative"),
}


@pytest.mark.parametrize(
    ("column", "value", "constraint"),
    list(STEP_RESULT_OVERRIDES.values()),
    ids=list(STEP_RESULT_OVERRIDES),
)
def test_step_result_outside_its_value_sets_is_refused(
    conn: Conn, agent_id: uuid.UUID, column: str, value: Any, constraint: str
) -> None:
    row: dict[str, Any] = {
        "position": 0,
        "step_name": "s",
        "step_type": "python",
        "status": "success",
        "started_at": "2026-01-01T00:00:00Z",
        "completed_at": "2026-01-01T00:00:01Z",
        "duration_ms": 1000,
        column: value,
    }
    with pytest.raises(errors.CheckViolation) as exc, conn.transaction(force_rollback=True):
        session_id = _session(conn, agent_id)
        conn.execute(
            sql.SQL("insert into public.step_results (session_id, {}) values (%s, {})").format(
                sql.SQL(", ").join(map(sql.Identifier, row)),
                sql.SQL(", ").join(sql.Placeholder() * len(row)),
            ),
            (session_id, *row.values()),
        )
    assert_refusal(exc, "23514", constraint)
