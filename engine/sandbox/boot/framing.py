"""Worker side of the pipe protocol: frames are a 4-byte big-endian length, then UTF-8 JSON.

The engine side (engine/sandbox/protocol.py) speaks the same format; keep the two in step.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The peer sent something that is not a frame we accept."""


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            if missing == size:
                return None
            raise FrameError("pipe closed in the middle of a frame")
        chunks.append(chunk)
        missing -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_frame(fd: int, max_bytes: int) -> dict[str, Any] | None:
    """Read one JSON object; None when the engine closed the pipe between frames."""
    header = _read_exactly(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise FrameError(f"frame of {size} bytes exceeds the {max_bytes}-byte cap")
    body = _read_exactly(fd, size) if size else b""
    if body is None:
        raise FrameError("pipe closed before the frame body")
    value = json.loads(body)
    if type(value) is not dict:
        raise FrameError("a frame must hold a JSON object")
    return value


def write_frame(fd: int, body: bytes) -> None:
    """Write one frame whose body is already-encoded JSON."""
    data = memoryview(HEADER.pack(len(body)) + body)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
