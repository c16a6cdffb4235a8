"""Running one job inside the worker: compile (cached), execute in a fresh namespace, turn
the result or the exception into a reply frame. Never raises.
"""

from __future__ import annotations

import json
import resource
import time
from types import TracebackType
from typing import Any

import confine
import namespace
import policy
import validate

MAX_ERROR_CHARS = 2000


class Limits:
    """The per-job limits the engine passed at start-up."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.memory_mb = int(config["memory_mb"])
        self.cpu_seconds = int(config["cpu_seconds"])
        self.max_output_bytes = int(config["max_output_bytes"])
        self.max_output_depth = int(config["max_output_depth"])
        self.max_log_bytes = int(config["max_log_bytes"])
        self.cache = policy.CompileCache(
            int(config["compile_cache_size"]),
            int(config["max_source_bytes"]),
            int(config["max_ast_nodes"]),
            int(config["max_ast_depth"]),
        )


def _shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 15] + "… (truncated)"


def step_line(traceback: TracebackType | None) -> int | None:
    """The innermost line of the step's own code in a traceback."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == policy.STEP_FILENAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def describe(error: BaseException, limits: Limits) -> tuple[str, str]:
    """(message, kind) for an exception raised by step code."""
    line = step_line(error.__traceback__)
    where = f" (line {line})" if line else ""
    if isinstance(error, MemoryError):
        return (
            f"memory limit exceeded: the step needed more than {limits.memory_mb} MB{where}",
            "memory",
        )
    try:
        message = str(error)
    except BaseException:
        message = "<the exception's message could not be shown>"
    name = type(error).__name__
    text = f"{name}: {_shorten(namespace.clean_text(message))}" if message else name
    return f"{text}{where}", "exception"


def _run(compiled: Any, value: Any, scope: dict[str, Any], limits: Limits) -> dict[str, Any]:
    try:
        exec(compiled, scope)  # noqa: S102 - RestrictedPython code in a fresh namespace
        result = scope[policy.STEP_FUNCTION](value)
        output = validate.to_json(result, limits.max_output_bytes, limits.max_output_depth)
    except validate.OutputError as error:
        return {"error": str(error), "kind": "output"}
    except BaseException as error:
        message, kind = describe(error, limits)
        return {"error": message, "kind": kind}
    return {"ok": True, "output": output}


def execute(code: str, value: Any, limits: Limits) -> dict[str, Any]:
    """Run one step; the reply as a dict whose "output" is raw JSON text (or None)."""
    compiled, cached = limits.cache.get(code)
    reply: dict[str, Any] = {"ok": False, "output": None, "cached": cached}
    if compiled.code is None:
        reply.update(error=compiled.error, kind=compiled.kind, logs="")
        return reply
    execution = namespace.Execution(limits.max_log_bytes)
    scope = execution.new_globals()
    reply.update(_run(compiled.code, value, scope, limits))
    # Finalizers of what the step left behind run now, inside the engine's deadline.
    scope.clear()
    reply["logs"] = execution.printer.text()
    return reply


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def handle(job: dict[str, Any], limits: Limits) -> bytes:
    """A job frame in, a reply frame body out."""
    started = time.perf_counter()
    try:
        budget = min(int(job.get("cpu_s", limits.cpu_seconds)), limits.cpu_seconds)
        confine.set_job_cpu_budget(budget)
        reply = execute(job["code"], job.get("input"), limits)
    except MemoryError:
        message = f"memory limit exceeded: the step needed more than {limits.memory_mb} MB"
        reply = {"ok": False, "kind": "memory", "logs": "", "error": message}
    except BaseException as error:
        message = f"the sandbox worker failed: {type(error).__name__}: {_shorten(str(error), 300)}"
        reply = {"ok": False, "kind": "internal", "logs": "", "error": message}
    # Memory is measured by the engine (/proc/<pid>/status): ru_maxrss would include the
    # engine's own size, which Linux carries over into a child across fork and exec.
    reply["cpu_s"] = round(_cpu_seconds(), 3)
    reply["exec_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return encode_reply(reply)


def encode_reply(reply: dict[str, Any]) -> bytes:
    """Splice the already-validated output text in, so it is serialised only once."""
    output = reply.pop("output", None)
    rest = json.dumps(reply, ensure_ascii=False, separators=(",", ":"))
    if output is None:
        return rest.encode("utf-8")
    return ('{"output":' + output + "," + rest[1:]).encode("utf-8")
