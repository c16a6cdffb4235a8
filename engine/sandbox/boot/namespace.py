"""One execution's namespace: a fresh globals dict and a fresh builtins dict built from a
curated table (never RestrictedPython's shared safe_globals/safe_builtins objects), the
guard hooks, an `__import__` that resolves only to facades, and a capped print collector.
"""

from __future__ import annotations

from typing import Any

import facades
import guards
from RestrictedPython.Guards import safe_builtins

REMOVED_BUILTINS = frozenset(
    {
        "id",
        "__build_class__",
        "setattr",
        "delattr",
        "_getattr_",
        "SystemExit",
        "KeyboardInterrupt",
        "GeneratorExit",
    }
)
ADDED_BUILTINS: dict[str, Any] = {
    "list": list,
    "dict": dict,
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
    "bytes": bytes,
    "enumerate": enumerate,
    "map": map,
    "filter": filter,
    "zip": zip,
    "sorted": sorted,
    "reversed": reversed,
    "sum": sum,
    "min": min,
    "max": max,
    "any": any,
    "all": all,
    "iter": iter,
    "next": next,
    "ascii": ascii,
    "bin": bin,
    "format": format,
    "hasattr": guards.guarded_hasattr,
    "NotImplemented": NotImplemented,
    "RecursionError": RecursionError,
    "ModuleNotFoundError": ModuleNotFoundError,
}
BASE_BUILTINS: dict[str, Any] = {
    **{k: v for k, v in safe_builtins.items() if k not in REMOVED_BUILTINS},
    **ADDED_BUILTINS,
}
STEP_MODULE_NAME = "step"


def clean_text(text: str) -> str:
    """Text PostgreSQL can store: no NUL, valid UTF-8 (lone surrogates replaced)."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


class Printer:
    """Collects what `print` writes during one execution, up to a byte cap."""

    __slots__ = ("_cap", "_parts", "_size", "truncated")

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._parts: list[str] = []
        self._size = 0
        self.truncated = False

    def write(self, text: str) -> None:
        if self.truncated:
            return
        size = len(text.encode("utf-8", "replace"))
        if self._size + size > self._cap:
            room = max(0, self._cap - self._size)
            self._parts.append(text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore"))
            self.truncated = True
            return
        self._parts.append(text)
        self._size += size

    def flush(self) -> None:
        """print(flush=True) calls this; nothing is buffered elsewhere."""

    def _call_print(self, *objects: Any, **options: Any) -> None:
        if options.get("file") is not None:
            raise TypeError("print(file=...) is not available in Python steps")
        options["file"] = self
        print(*objects, **options)

    def __call__(self) -> str:
        return "".join(self._parts)

    def text(self) -> str:
        text = clean_text("".join(self._parts))
        if self.truncated:
            text += f"\n[print output truncated at {self._cap} bytes]\n"
        return text


class Execution:
    """What one run of a step owns: its print collector and the facades it imported."""

    __slots__ = ("facades", "printer")

    def __init__(self, max_log_bytes: int) -> None:
        self.printer = Printer(max_log_bytes)
        self.facades: dict[str, facades.ModuleFacade] = {}

    def new_globals(self) -> dict[str, Any]:
        printer = self.printer
        step_builtins = dict(BASE_BUILTINS)
        step_builtins["__import__"] = facades.import_hook(self.facades)
        namespace = dict(guards.HOOKS)
        namespace["__builtins__"] = step_builtins
        namespace["__name__"] = STEP_MODULE_NAME
        namespace["_print_"] = lambda _getattr_=None: printer
        return namespace
