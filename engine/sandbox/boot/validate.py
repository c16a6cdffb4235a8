"""The output contract, checked inside the worker before anything leaves it: exact JSON types
(tuples count as arrays), string keys, finite numbers, no cycles, depth and size caps; then
compact UTF-8 JSON text.

Only exact built-in types are walked, so validation never runs step code.
"""

from __future__ import annotations

import json
import math
from typing import Any

_SCALAR_HINTS = {
    "set": "convert it to a list",
    "frozenset": "convert it to a list",
    "bytes": "decode it to str, or encode it with base64",
    "bytearray": "decode it to str",
    "datetime": "convert it to a string, e.g. with .isoformat()",
    "date": "convert it to a string, e.g. with .isoformat()",
    "Decimal": "convert it to str or float",
    "Counter": "convert it with dict(...)",
    "OrderedDict": "convert it with dict(...)",
    "defaultdict": "convert it with dict(...)",
    "deque": "convert it with list(...)",
    "UUID": "convert it with str(...)",
    "complex": "return its parts as two numbers",
    "generator": "convert it with list(...)",
}


class OutputError(Exception):
    """The step's return value breaks the output contract; the message says where and why."""


def _path(parts: list[str]) -> str:
    if len(parts) > 8:  # deep paths: the two ends say where, the middle only how far
        middle = f"[…{len(parts) - 6} levels…]"
        return "output" + "".join(parts[:3]) + middle + "".join(parts[-3:])
    return "output" + "".join(parts)


def _not_json(kind: str, parts: list[str], hint: str | None = None) -> OutputError:
    suffix = f" ({hint})" if hint else ""
    return OutputError(f"output is not JSON: {kind} at {_path(parts)}{suffix}")


class _Walker:
    def __init__(self, max_bytes: int, max_depth: int) -> None:
        self.max_bytes = max_bytes
        self.max_depth = max_depth
        self.size = 0
        self.open: set[int] = set()

    def grow(self, amount: int) -> None:
        self.size += amount
        if self.size > self.max_bytes:
            raise OutputError(
                f"output is too large: more than {self.max_bytes} bytes as JSON; "
                "return less data or store it elsewhere"
            )

    def string(self, value: str, parts: list[str], what: str = "string") -> None:
        self.grow(len(value) + 2)
        if "\x00" in value:
            raise _not_json(
                f"{what} with a NUL character (\\u0000)", parts, "PostgreSQL cannot store it"
            )
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _not_json(f"{what} with a lone surrogate", parts, "not valid UTF-8") from None

    def walk(self, value: Any, parts: list[str]) -> None:
        kind = type(value)
        if value is None or kind is bool:
            self.grow(5)
        elif kind is int:
            if value.bit_length() > 14_000:
                raise _not_json(
                    "integer with more than 4000 digits", parts, "return it as a string"
                )
            self.grow(value.bit_length() // 3 + 2)
        elif kind is float:
            if not math.isfinite(value):
                raise _not_json(
                    f"float {value!r}", parts, "NaN and Infinity are not JSON; use None"
                )
            self.grow(24)
        elif kind is str:
            self.string(value, parts)
        elif kind is dict or kind is list or kind is tuple:
            self.container(value, parts)
        else:
            name = kind.__name__
            raise _not_json(
                name,
                parts,
                _SCALAR_HINTS.get(name, "use dict, list, str, int, float, bool or None"),
            )

    def container(self, value: Any, parts: list[str]) -> None:
        marker = id(value)
        if marker in self.open:
            raise _not_json("a reference cycle", parts, "a value contains itself")
        if len(parts) >= self.max_depth:
            raise _not_json(f"nesting deeper than {self.max_depth} levels", parts)
        self.open.add(marker)
        self.grow(2)
        if type(value) is dict:
            for key, item in value.items():
                if type(key) is not str:
                    raise _not_json(
                        f"a {type(key).__name__} key {_short(key)}", parts, "keys must be str"
                    )
                self.string(key, parts, "key")
                parts.append(f"[{_short(key)}]")
                self.walk(item, parts)
                parts.pop()
        else:
            for index, item in enumerate(value):
                parts.append(f"[{index}]")
                self.walk(item, parts)
                parts.pop()
        self.open.discard(marker)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # repr of exotic values must not hide the real error
        text = "?"
    return text if len(text) <= 40 else text[:37] + "..."


def to_json(value: Any, max_bytes: int, max_depth: int) -> str:
    """Validated compact JSON text for `value`, or OutputError."""
    _Walker(max_bytes, max_depth).walk(value, [])
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise OutputError(
            f"output is too large: {size} bytes as JSON, limit {max_bytes}; "
            "return less data or store it elsewhere"
        )
    return text
