"""Model names (aliases, provider ids, unknown names) and provider keys from the environment."""

from __future__ import annotations

import pytest

from engine.llm import keys, models_alias


@pytest.mark.parametrize(
    ("name", "provider", "model"),
    [
        ("gpt-4", "openai", "gpt-4"),
        ("gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("claude-3", "anthropic", "claude-sonnet-4-5"),
        ("claude-haiku", "anthropic", "claude-haiku-4-5"),
        ("openai/gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        ("anthropic/claude-opus-4-5", "anthropic", "claude-opus-4-5"),
        ("openai/llama3:8b", "openai", "llama3:8b"),
        (" gpt-4 ", "openai", "gpt-4"),
    ],
)
def test_aliases_and_provider_ids_resolve(name: str, provider: str, model: str) -> None:
    resolved = models_alias.resolve(name)
    assert (resolved.provider, resolved.name) == (provider, model)
    assert resolved.litellm_id == f"{provider}/{model}"


@pytest.mark.parametrize("name", ["claude", "gpt4", "claude-3-opus-20240229", "llama3", "openai/"])
def test_unknown_names_say_how_to_name_a_model(name: str) -> None:
    with pytest.raises(models_alias.UnknownModelError) as caught:
        models_alias.resolve(name)
    message = str(caught.value)
    assert repr(name) in message
    assert "provider/model-id" in message
    assert "openai/gpt-4o-mini" in message
    assert "claude-3 → anthropic/claude-sonnet-4-5" in message


def test_unknown_provider_is_named() -> None:
    with pytest.raises(models_alias.UnknownModelError, match="unknown provider 'azure'"):
        models_alias.resolve("azure/gpt-4")


def test_every_alias_targets_a_supported_provider() -> None:
    for alias, target in models_alias.ALIASES.items():
        assert models_alias.resolve(alias).litellm_id == target


def test_key_comes_from_the_given_environment() -> None:
    assert keys.provider_key("openai", {"OPENAI_API_KEY": "sk-abc"}) == "sk-abc"
    assert keys.provider_key("anthropic", {"ANTHROPIC_API_KEY": " sk-ant-x "}) == "sk-ant-x"


@pytest.mark.parametrize("environ", [{}, {"OPENAI_API_KEY": ""}, {"OPENAI_API_KEY": "  "}])
def test_missing_key_names_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(keys.MissingKeyError, match="set the environment variable OPENAI_API_KEY"):
        keys.provider_key("openai", environ)


def test_redact_removes_given_secrets_and_key_shapes() -> None:
    text = "bad key sk-proj-********1234 and my-secret-token; skeleton sketches stay"
    redacted = keys.redact(text, ("my-secret-token",))
    assert redacted == "bad key [redacted] and [redacted]; skeleton sketches stay"
    assert keys.redact("sk-ant-api03-abcdefgh") == "[redacted]"
