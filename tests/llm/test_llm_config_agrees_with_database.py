"""The llm step config is checked twice: by pydantic (engine.models.LLMConfig, used by
`portico agents apply` and by the step itself) and by the database (public.step_config_problems,
behind the steps_config_valid check). Both must accept and refuse the same configs. The
database side runs on the real PostgreSQL with the migrations applied; nothing is doubled."""

from __future__ import annotations

from typing import Any

import psycopg
import pydantic
import pytest
from psycopg.types.json import Jsonb

from engine import models

BASE: dict[str, Any] = {"prompt_template": "Hi {{ name }}", "model": "gpt-4o-mini"}
EVERY_FIELD: dict[str, Any] = {
    **BASE,
    "temperature": 0.2,
    "max_tokens": 100,
    "system": "You are terse.",
    "response_format": "json",
    "timeout_ms": 5000,
    "api_base": "http://127.0.0.1:8000/v1",
}
MISSING = object()
"""Marks a key to drop from BASE."""

# (case id, changes to BASE, accepted?)
CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("minimal", {}, True),
    ("every field", EVERY_FIELD, True),
    ("temperature 0", {"temperature": 0}, True),
    ("temperature 1 (int)", {"temperature": 1}, True),
    ("temperature 1.0", {"temperature": 1.0}, True),
    ("max_tokens whole float", {"max_tokens": 10.0}, True),
    ("timeout_ms whole float", {"timeout_ms": 250.0}, True),
    ("empty system", {"system": ""}, True),
    ("https api_base", {"api_base": "https://llm.internal.example/v1"}, True),
    ("response_format text", {"response_format": "text"}, True),
    ("multi-line prompt", {"prompt_template": "\n  Hi {{ name }}\n"}, True),
    ("no prompt_template", {"prompt_template": MISSING}, False),
    ("no model", {"model": MISSING}, False),
    ("empty prompt_template", {"prompt_template": ""}, False),
    ("blank prompt_template", {"prompt_template": "  \n\t "}, False),
    ("ideographic-space prompt_template", {"prompt_template": "\u3000"}, False),
    ("prompt_template not a string", {"prompt_template": 42}, False),
    ("empty model", {"model": ""}, False),
    ("blank model", {"model": " \t"}, False),
    ("model not a string", {"model": ["gpt-4"]}, False),
    ("unknown key", {"top_p": 0.9}, False),
    ("api_key is not a config key", {"api_key": "sk-nope"}, False),
    ("temperature above 1", {"temperature": 1.5}, False),
    ("temperature below 0", {"temperature": -0.1}, False),
    ("temperature as text", {"temperature": "0.5"}, False),
    ("temperature as boolean", {"temperature": True}, False),
    ("temperature null", {"temperature": None}, False),
    ("max_tokens 0", {"max_tokens": 0}, False),
    ("max_tokens fractional", {"max_tokens": 10.5}, False),
    ("max_tokens as text", {"max_tokens": "10"}, False),
    ("max_tokens as boolean", {"max_tokens": True}, False),
    ("max_tokens null", {"max_tokens": None}, False),
    ("timeout_ms 0", {"timeout_ms": 0}, False),
    ("timeout_ms fractional", {"timeout_ms": 1.5}, False),
    ("timeout_ms as text", {"timeout_ms": "100"}, False),
    ("timeout_ms null", {"timeout_ms": None}, False),
    ("system not a string", {"system": 5}, False),
    ("system null", {"system": None}, False),
    ("response_format unknown", {"response_format": "xml"}, False),
    ("response_format upper case", {"response_format": "JSON"}, False),
    ("response_format null", {"response_format": None}, False),
    ("api_base not http", {"api_base": "ftp://files.example"}, False),
    ("api_base without host", {"api_base": "http://"}, False),
    ("api_base with a space", {"api_base": "http://a b/v1"}, False),
    ("api_base without scheme", {"api_base": "127.0.0.1:8000"}, False),
    ("api_base with trailing newline", {"api_base": "http://x\n"}, False),
    ("api_base null", {"api_base": None}, False),
]


def config_for(changes: dict[str, Any]) -> dict[str, Any]:
    config = {**BASE, **changes}
    return {key: value for key, value in config.items() if value is not MISSING}


def database_problems(conn: psycopg.Connection[Any], config: dict[str, Any]) -> list[str]:
    row = conn.execute("select public.step_config_problems('llm', %s)", (Jsonb(config),)).fetchone()
    assert row is not None
    return list(row[0] or [])


def pydantic_problems(config: dict[str, Any]) -> list[str]:
    try:
        models.LLMConfig.model_validate(config)
    except pydantic.ValidationError as error:
        return [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()]
    return []


def test_every_case_id_is_unique_and_mismatches_are_real_cases() -> None:
    ids = [case_id for case_id, _, _ in CASES]
    assert len(ids) == len(set(ids))


def test_database_check_matches_the_table(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        wrong = {
            case_id: problems
            for case_id, changes, accepted in CASES
            if (not (problems := database_problems(conn, config_for(changes)))) != accepted
        }
    assert wrong == {}


@pytest.mark.parametrize(
    ("changes", "accepted"),
    [pytest.param(changes, accepted, id=case_id) for case_id, changes, accepted in CASES],
)
def test_pydantic_model_matches_the_table(changes: dict[str, Any], accepted: bool) -> None:
    problems = pydantic_problems(config_for(changes))
    assert (not problems) == accepted, problems


def test_both_name_every_unknown_key(database_url: str) -> None:
    config = {**BASE, "top_p": 1, "api_key": "sk-nope"}
    with psycopg.connect(database_url, autocommit=True) as conn:
        (database,) = database_problems(conn, config)
    assert "api_key, top_p" in database
    assert "prompt_template, model, temperature" in database  # and lists what is accepted
    assert sorted(p.split(":")[0] for p in pydantic_problems(config)) == ["api_key", "top_p"]


def test_the_trigger_refuses_a_bad_step_with_the_checks_words(database_url: str) -> None:
    """Saving a step goes through the same check, with the step named in the message."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        agent = conn.execute(
            "insert into public.agents (name) values ('config-check') returning id"
        ).fetchone()
        assert agent is not None
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            conn.execute(
                "insert into public.steps (agent_id, name, type, config, position)"
                " values (%s, 'ask', 'llm', %s, 1)",
                (agent[0], Jsonb({**BASE, "prompt_template": "   ", "top_k": 3})),
            )
    message = str(caught.value)
    assert 'step "ask" (llm)' in message
    assert "unknown config keys: top_k" in message
    assert "config.prompt_template must be a non-empty string" in message
