"""Engine side of the pipe protocol: a 4-byte big-endian length, then one UTF-8 JSON object.

Jobs carry the code and the input as JSON (never pickles, never live objects); replies are
decoded with NaN/Infinity refused and a size cap checked before the body is read, and checked
again here as if the worker were hostile: a worker validates its output itself, but the engine
trusts nothing a sandbox process sends. The worker side is engine/sandbox/boot/framing.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

HEADER = struct.Struct(">I")


class FrameError(Exception):
    """A worker sent something that is not an acceptable frame."""


class InputError(ValueError):
    """The step input cannot cross to the worker."""


def _refuse_constant(name: str) -> Any:
    raise FrameError(f"reply holds {name}, which is not JSON")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def encode_job(code: str, step_input: Any, cpu_seconds: int, max_input_bytes: int) -> bytes:
    """One job frame. Raises InputError when the input is not JSON or too large."""
    try:
        input_text = _dumps(step_input)
    except (TypeError, ValueError, RecursionError) as error:
        raise InputError(f"input is not JSON: {error}") from None
    try:
        input_bytes = input_text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("input is not JSON: it holds a lone surrogate (invalid UTF-8)") from None
    if len(input_bytes) > max_input_bytes:
        raise InputError(
            f"input is too large: {len(input_bytes)} bytes as JSON, limit {max_input_bytes}"
        )
    # json.dumps(code) escapes to ASCII, so any code text encodes.
    body = b'{"cpu_s":%d,"code":%s,"input":%s}' % (
        int(cpu_seconds),
        json.dumps(code).encode("ascii"),
        input_bytes,
    )
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body, parse_constant=_refuse_constant)
    except FrameError:
        raise
    except (ValueError, RecursionError) as error:
        raise FrameError(f"reply is not valid JSON: {error}") from None
    if type(value) is not dict:
        raise FrameError("reply is not a JSON object")
    return value


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> dict[str, Any]:
    """Read one frame. Raises IncompleteReadError at end of stream, FrameError if oversized
    or malformed."""
    header = await reader.readexactly(HEADER.size)
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise FrameError(f"reply of {size} bytes exceeds the {max_bytes}-byte cap")
    return decode(await reader.readexactly(size))


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate"
    return None


def check_output(value: Any, max_depth: int) -> None:
    """Raise FrameError unless a decoded output is what PostgreSQL will store: nesting at most
    `max_depth`, no NUL and no lone surrogate in any string or key. Walked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            problem = _text_problem(item)
        elif kind is list:
            problem = "nesting too deep" if depth >= max_depth else None
            stack.extend((child, depth + 1) for child in item)
        elif kind is dict:
            problem = "nesting too deep" if depth >= max_depth else None
            stack.extend((key, depth) for key in item)
            stack.extend((child, depth + 1) for child in item.values())
        else:
            problem = None
        if problem is not None:
            raise FrameError(f"its output holds {problem}")


def clean_text(value: Any, limit: int) -> str:
    """A text field of a reply (error, logs) as the engine may store it: a str of at most
    `limit` characters, NUL and lone surrogates replaced."""
    if type(value) is not str:
        return ""
    text = value[:limit]
    if _text_problem(text) is None:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
