"""A model's reply as a step output: the text, or the parsed JSON for `response_format: json`."""

from __future__ import annotations

import json
import re

from engine import models

_PREVIEW_CHARS = 200
# Models often wrap JSON in one Markdown code fence even when asked not to.
_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(.*?)\n?```\s*\Z", re.DOTALL)


class OutputError(ValueError):
    """A reply that does not fit the step's response_format."""


def parse_json(text: str, finish_reason: str | None = None) -> models.JsonValue:
    """The JSON value in `text` (one surrounding code fence allowed); raises OutputError
    showing the start of the reply."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except ValueError as error:
        hint = (
            " The reply was cut off at max_tokens: raise max_tokens in the step config."
            if finish_reason == "length"
            else ' Ask for JSON only in the prompt, or use response_format "text".'
        )
        raise OutputError(
            f"response_format is json but the model's reply is not JSON ({error}); the reply "
            f"starts: {_preview(text)}.{hint}"
        ) from None


def _reject_constant(name: str) -> None:
    # NaN and Infinity parse in Python but are not JSON, and jsonb would refuse them later.
    raise ValueError(f"{name} is not a JSON value")


def _preview(text: str) -> str:
    if not text:
        return "(empty)"
    shown = text if len(text) <= _PREVIEW_CHARS else text[:_PREVIEW_CHARS] + "…"
    return repr(shown)
