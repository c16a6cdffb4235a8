"""Model names: the seed's friendly names mapped to current provider ids, and the naming rule.

Portico accepts `provider/model-id` for a supported provider, or one of the aliases below.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.llm import keys

ALIASES: dict[str, str] = {
    "gpt-4": "openai/gpt-4",
    "gpt-4o": "openai/gpt-4o",
    "gpt-4o-mini": "openai/gpt-4o-mini",
    "gpt-5": "openai/gpt-5",
    "gpt-5-mini": "openai/gpt-5-mini",
    # No claude-3 model is served or priced any more; the seed's name means "a Claude model".
    "claude-3": "anthropic/claude-sonnet-4-5",
    "claude-sonnet": "anthropic/claude-sonnet-4-5",
    "claude-haiku": "anthropic/claude-haiku-4-5",
    "claude-opus": "anthropic/claude-opus-4-5",
}

_HOW_TO_NAME = (
    "name a model as provider/model-id, e.g. openai/gpt-4o-mini or "
    "anthropic/claude-sonnet-4-5 (providers: {providers}), or use an alias: {aliases}"
)


class UnknownModelError(ValueError):
    """A model name Portico cannot map to a provider; the message says how to name one."""


@dataclass(frozen=True)
class ModelId:
    """A resolved model: `provider/name` is what litellm is asked for."""

    provider: str
    name: str

    @property
    def litellm_id(self) -> str:
        return f"{self.provider}/{self.name}"


def resolve(model: str) -> ModelId:
    """Resolve an alias or a `provider/model-id`; raises UnknownModelError otherwise."""
    name = model.strip()
    name = ALIASES.get(name, name)
    provider, slash, rest = name.partition("/")
    if slash and provider in keys.PROVIDER_KEY_VARS and rest.strip() and rest == rest.strip():
        return ModelId(provider=provider, name=rest)
    if slash and provider not in keys.PROVIDER_KEY_VARS:
        cause = f"unknown provider {provider!r} in model {model!r}"
    else:
        cause = f"unknown model name {model!r}"
    raise UnknownModelError(f"{cause}: {how_to_name()}")


def how_to_name() -> str:
    return _HOW_TO_NAME.format(
        providers=", ".join(sorted(keys.PROVIDER_KEY_VARS)),
        aliases=", ".join(f"{alias} → {target}" for alias, target in ALIASES.items()),
    )
