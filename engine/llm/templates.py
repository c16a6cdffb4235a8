"""Strict `{{ path }}` templates: substitute values of a step's JSON input, and nothing else.

A path walks dict keys and list indexes; `input` names the whole input. One pass: text that comes
from a value is never scanned again, so a value may safely contain `{{ ... }}`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from engine import models

ROOT = "input"
DEFAULT_MAX_CHARS = 200_000

# Non-greedy and DOTALL: a tag ends at the first `}}`, even across lines.
_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_QUOTE_LIMIT = 60
_KEYS_SHOWN = 20

_PATH_RULE = (
    "Templates substitute only paths into the input, such as {{ customer.name }}, "
    "{{ items.0.sku }} or {{ input }} (letters, digits, _ and -, joined by dots); "
    "filters, expressions and logic are not supported. To send a literal '{{', put that text "
    "in the input and reference it"
)


class TemplateError(ValueError):
    """A template that cannot be rendered from this input; the message says what to change."""


@dataclass(frozen=True)
class _Missing:
    problem: str


def validate(template: str, *, field: str = "prompt_template") -> list[str]:
    """The paths a template references; raises TemplateError for a tag that is not a path."""
    problems: list[str] = []
    paths: list[str] = []
    for tag in _TAG.finditer(template):
        path = tag.group(1).strip()
        if _PATH.fullmatch(path):
            paths.append(path)
        else:
            problems.append(f"{_quote(tag.group(0))} is not a path")
    problems.extend(_unclosed(template))
    if problems:
        raise TemplateError(f"{field}: " + "; ".join(problems) + f". {_PATH_RULE}")
    return paths


def render(
    template: str,
    data: models.JsonValue,
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    field: str = "prompt_template",
) -> str:
    """Render `template` from `data` in one pass.

    Raises TemplateError naming every bad tag and missing path (with the keys that do exist
    there), or when the result would be longer than `max_chars`.
    """
    validate(template, field=field)
    problems: list[str] = []
    pieces: list[str] = []
    length = 0
    position = 0
    for tag in _TAG.finditer(template):
        path = tag.group(1).strip()
        value = _resolve(path, data)
        if isinstance(value, _Missing):
            problems.append(value.problem)
            continue
        text = _as_text(value, path, field)
        pieces.append(template[position : tag.start()])
        pieces.append(text)
        length += tag.start() - position + len(text)
        position = tag.end()
        if length > max_chars:
            raise TemplateError(
                f"{field} renders to more than {max_chars} characters (reached at "
                f"{{{{ {path} }}}}); shorten the template or pass a smaller input"
            )
    if problems:
        raise TemplateError(f"{field}: " + "; ".join(problems))
    pieces.append(template[position:])
    rendered = "".join(pieces)
    if len(rendered) > max_chars:
        raise TemplateError(
            f"{field} renders to {len(rendered)} characters, more than the limit of "
            f"{max_chars}; shorten the template or pass a smaller input"
        )
    return rendered


def _unclosed(template: str) -> list[str]:
    # After every complete tag is removed, any '{{' left has no closing '}}'.
    leftover = _TAG.sub(lambda tag: " " * len(tag.group(0)), template)
    start = leftover.find("{{")
    if start < 0:
        return []
    return [f"the '{{{{' at character {start} has no closing '}}}}'"]


def _resolve(path: str, data: models.JsonValue) -> models.JsonValue | _Missing:
    segments = path.split(".")
    walked: list[str] = []
    if segments[0] == ROOT:
        walked.append(ROOT)
        segments = segments[1:]
    current = data
    for segment in segments:
        where = f"{{{{ {'.'.join(walked)} }}}}" if walked else "the top level of the input"
        if isinstance(current, dict):
            if segment not in current:
                return _Missing(
                    f"{{{{ {path} }}}} has no value: no key {segment!r} at {where} "
                    f"({_keys_phrase(current)})"
                )
            current = current[segment]
        elif isinstance(current, list):
            if not segment.isdigit() or int(segment) >= len(current):
                return _Missing(
                    f"{{{{ {path} }}}} has no value: {where} is {_list_phrase(len(current))}, "
                    f"so {segment!r} is not one of its indexes"
                )
            current = current[int(segment)]
        else:
            return _Missing(
                f"{{{{ {path} }}}} has no value: {where} is {_json_kind(current)}, "
                f"not an object or a list, so it has no {segment!r}"
            )
        walked.append(segment)
    return current


def _list_phrase(size: int) -> str:
    if size == 0:
        return "an empty list"
    return f"a list of {size} item{'s' if size != 1 else ''} (indexes 0 to {size - 1})"


def _as_text(value: models.JsonValue, path: str, field: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except RecursionError:
        # A value nested deeper than the encoder can walk must fail the step, not the engine.
        raise TemplateError(
            f"{field}: the value of {{{{ {path} }}}} is nested too deeply to render; reference "
            "a deeper path, or make the previous step return a flatter value"
        ) from None
    except (TypeError, ValueError) as error:
        raise TemplateError(
            f"{field}: the value of {{{{ {path} }}}} is not JSON ({error}); make the previous "
            "step return plain JSON values"
        ) from None


def _keys_phrase(mapping: dict[str, models.JsonValue]) -> str:
    if not mapping:
        return "it is an empty object"
    keys = sorted(str(key) for key in mapping)
    shown = ", ".join(_quote(key, limit=40) for key in keys[:_KEYS_SHOWN])
    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
    return f"keys there: {shown}{more}"


def _json_kind(value: models.JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _quote(text: str, *, limit: int = _QUOTE_LIMIT) -> str:
    shown = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(shown)
