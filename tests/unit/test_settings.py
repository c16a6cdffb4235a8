"""Settings: every knob from the environment, nested ones too, and bad values named by the
variable a person has to fix."""

from __future__ import annotations

import pytest

from engine import config, errors


def test_nested_settings_come_from_double_underscore_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTICO_LLM__MAX_ATTEMPTS", "5")
    monkeypatch.setenv("PORTICO_LLM__TRUSTED_API_BASES", '["http://llm.internal:8000"]')
    monkeypatch.setenv("PORTICO_SANDBOX__POOL_SIZE", "2")
    monkeypatch.setenv("PORTICO_CONCURRENCY", "16")
    settings = config.load()
    assert settings.llm.max_attempts == 5
    assert settings.llm.trusted_api_bases == ("http://llm.internal:8000",)
    assert (settings.sandbox.pool_size, settings.concurrency) == (2, 16)


def test_flags_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_CONCURRENCY", "16")
    assert config.load(concurrency=3).concurrency == 3


def test_bad_values_are_named_by_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_CONCURRENCY", "0")
    monkeypatch.setenv("PORTICO_SANDBOX__POOL_SIZE", "many")
    with pytest.raises(errors.ConfigurationError) as exc:
        config.load()
    message = str(exc.value)
    assert "PORTICO_CONCURRENCY: Input should be greater than or equal to 1 (got '0')" in message
    assert "PORTICO_SANDBOX__POOL_SIZE" in message and "'many'" in message
    assert "portico run --help" in message


def test_an_empty_role_keeps_the_login_role(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_DB_ROLE", "")
    assert config.load().db_role is None
