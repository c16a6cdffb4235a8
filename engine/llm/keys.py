"""Provider API keys: read from the engine's environment only, never from step config.

Also scrubs keys out of text (provider error messages can echo part of a key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

PROVIDER_KEY_VARS: dict[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
}

# Sent instead of a real key to a step's own api_base: the OpenAI client refuses an empty key,
# and a server the agent's author chose must never receive the engine's provider keys.
NO_KEY = "portico-no-key"
REDACTED = "[redacted]"

# Shapes of provider keys, whole or masked (OpenAI echoes "sk-proj-****1234" in 401 messages).
_KEY_SHAPES = re.compile(r"\b(?:(?:sk|gsk)-[A-Za-z0-9_*.\-]{6,}|AIza[A-Za-z0-9_\-]{20,})")


class MissingKeyError(Exception):
    """The environment variable holding a provider's key is unset or empty."""


def key_variable(provider: str) -> str:
    """The environment variable that holds `provider`'s key."""
    return PROVIDER_KEY_VARS[provider]


def provider_key(provider: str, environ: Mapping[str, str]) -> str:
    """`provider`'s key from `environ`; raises MissingKeyError naming the variable to set."""
    variable = key_variable(provider)
    value = environ.get(variable, "").strip()
    if not value:
        raise MissingKeyError(
            f"no API key for {provider}: set the environment variable {variable} for the "
            "engine process (keys are never read from step config)"
        )
    return value


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` with every given secret, and anything shaped like a key, replaced."""
    for secret in secrets:
        if secret and secret != NO_KEY:
            text = text.replace(secret, REDACTED)
    return _KEY_SHAPES.sub(REDACTED, text)
