"""The worker's start-up proof of its own wiring: what step code can reach holds no module,
frame, code object, traceback or dangerous builtin; the hooks are Portico's; and canary
steps behave. A worker that fails any check refuses to start.
"""

from __future__ import annotations

import builtins
import collections
import functools
import json
import random
import string
import types
from typing import Any

import facades
import guards
import namespace
import runner
from RestrictedPython.Guards import (
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safe_builtins,
    safe_globals,
)

FORBIDDEN_TYPES = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
EXPECTED_HOOKS = {
    "_getattr_": guards.guarded_getattr,
    "_getitem_": guards.guarded_getitem,
    "_getiter_": guards.guarded_iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_write_": guards.guarded_write,
    "_inplacevar_": guards.inplace_var,
    "_apply_": guards.apply_call,
}
ALL_IMPORTS = ", ".join(name for name in facades.AVAILABLE if name != "urllib")
CANARIES: list[tuple[str, Any, str, Any]] = [
    ("return input", {"a": [1, 2.5, "x", None, True]}, "ok", {"a": [1, 2.5, "x", None, True]}),
    ("import json\nreturn json.loads(json.dumps(input))", [1, {"b": 2}], "ok", [1, {"b": 2}]),
    (f"import {ALL_IMPORTS}\nimport urllib\nreturn urllib.parse.quote('a b')", None, "ok", "a%20b"),
    (
        "import datetime\nreturn datetime.datetime.strptime('2024-01-02', '%Y-%m-%d').isoformat()",
        None,
        "ok",
        "2024-01-02T00:00:00",
    ),
    ("print('canary')", None, "logs", "canary\n"),
    ("import os", None, "error", "not available"),
    ("import collections\ncollections.ChainMap.register(int)", None, "error", "AccessDenied"),
    ("return ().__class__", None, "error", "code not allowed"),
    ("g = (i for i in [1])\nreturn g.gi_frame", None, "error", "code not allowed"),
    ("return {1, 2}", None, "error", "output is not JSON"),
    ("return [x for x in [1]][5]", None, "error", "IndexError"),
]


class SelfTestError(Exception):
    """The worker's wiring is wrong; it must not serve jobs."""


# Mutable objects shared by every execution of a worker: one run could leave data in them
# for the next (facades are rebuilt per run; what they hold must be immutable or per run).
SHARED_STATE_TYPES = (
    dict,
    list,
    set,
    bytearray,
    collections.deque,
    collections.ChainMap,
    random.Random,
    functools._lru_cache_wrapper,  # cache_info/cache_clear observe and reset earlier runs
)


# Modules whose functions and classes walk attributes, reach the interpreter or the system:
# nothing step code can reach may come from them.
BANNED_SOURCES = frozenset(
    str.split("operator _operator typing dataclasses inspect io _io os posix sys importlib")
)


def origin(value: Any) -> str | None:
    """The module a function or class (or an instance's class) was defined in."""
    try:
        owner = value if isinstance(value, type) or callable(value) else type(value)
        module = getattr(owner, "__module__", None)
    except Exception:  # an object that refuses to say is judged by its other traits
        return None
    return module if type(module) is str else None


def _bad(value: Any) -> str | None:
    """Why step code must not reach `value`, or None."""
    if isinstance(value, FORBIDDEN_TYPES) or id(value) in guards.DENIED_IDS:
        return f"a {type(value).__name__}"
    if isinstance(value, SHARED_STATE_TYPES):
        return f"a {type(value).__name__} shared by every run of the worker"
    if value is string.Formatter or isinstance(value, string.Formatter):
        return "string.Formatter (its field syntax walks attributes)"
    module = origin(value)
    if module is not None and module.partition(".")[0] in BANNED_SOURCES:
        return f"from the {module} module"
    return None


# Instances whose public attributes are only methods of their (separately walked) type.
LEAF_TYPES = frozenset(
    {
        str,
        int,
        float,
        bool,
        bytes,
        complex,
        type(None),
        types.BuiltinFunctionType,
        types.FunctionType,
        types.MethodType,
        types.MethodWrapperType,
        types.WrapperDescriptorType,
        types.MethodDescriptorType,
        types.ClassMethodDescriptorType,
        types.GetSetDescriptorType,
        types.MemberDescriptorType,
    }
)


def _public_names(value: Any) -> list[str]:
    try:
        return [name for name in dir(value) if not name.startswith("_")]
    except Exception:
        return []


def _children(value: Any) -> list[tuple[str, Any]]:
    if type(value) is dict:
        return [(f"[{key!r}]", item) for key, item in value.items()]
    if type(value) in LEAF_TYPES:
        return []
    children = []
    for name in _public_names(value):
        try:
            child = getattr(value, name)
        except Exception:  # a public name that raises is not a path anywhere
            child = None
        children.append((f".{name}", child))
    return children


def walk(roots: dict[str, Any], depth: int = 3) -> list[str]:
    """Paths from `roots`, over public attributes `depth` levels deep, to forbidden objects
    and to mutable state shared between runs. The roots themselves are per run."""
    findings: list[str] = []
    seen: set[int] = set()
    frontier = list(roots.items())
    for level in range(depth + 1):
        following: list[tuple[str, Any]] = []
        for path, value in frontier:
            reason = _bad(value)
            if reason is not None:
                findings.append(f"{path} is {reason}")
                continue
            if id(value) in seen or level == depth:
                continue
            seen.add(id(value))
            following += [(path + suffix, child) for suffix, child in _children(value)]
        frontier = following
    return findings


def check_namespace(limits: runner.Limits) -> list[str]:
    first = namespace.Execution(limits.max_log_bytes)
    scope, other = first.new_globals(), namespace.Execution(limits.max_log_bytes).new_globals()
    step_builtins = scope["__builtins__"]
    findings = [
        f"hook {name} is not Portico's"
        for name, hook in EXPECTED_HOOKS.items()
        if scope.get(name) is not hook
    ]
    if type(step_builtins) is not dict or step_builtins is vars(builtins):
        findings.append("__builtins__ is not a dict of its own")
    if scope is safe_globals or step_builtins is safe_builtins:
        findings.append("RestrictedPython's shared globals or builtins are in use")
    if other is scope or other["__builtins__"] is step_builtins:
        findings.append("two executions share their globals or builtins")
    findings += [
        f"builtin {name} is exposed"
        for name in guards.DENIED_OBJECT_NAMES
        if name in step_builtins and name != "__import__"
    ]
    if step_builtins.get("__import__") is builtins.__import__:
        findings.append("the real __import__ is exposed")
    made: dict[str, facades.ModuleFacade] = {}
    roots: dict[str, Any] = {f"globals[{k!r}]": v for k, v in scope.items() if k != "__builtins__"}
    roots.update({f"builtins[{k!r}]": v for k, v in step_builtins.items()})
    roots.update({f"facade {name}": facades.build(name, made) for name in facades.AVAILABLE})
    return findings + walk(roots)


def run_canaries(limits: runner.Limits) -> list[str]:
    findings = []
    for code, value, expect, wanted in CANARIES:
        reply = runner.execute(code, value, limits)
        output = json.loads(reply["output"]) if reply.get("output") is not None else None
        if expect == "ok" and not (reply["ok"] and output == wanted):
            findings.append(f"canary {code!r} gave {reply.get('error') or output!r}")
        elif expect == "logs" and reply.get("logs") != wanted:
            findings.append(f"canary {code!r} printed {reply.get('logs')!r}")
        elif expect == "error" and (reply["ok"] or wanted not in (reply.get("error") or "")):
            findings.append(f"canary {code!r} should fail with {wanted!r}, got {reply!r}")
    limits.cache.clear()
    return findings


def run(limits: runner.Limits) -> None:
    findings = check_namespace(limits) + run_canaries(limits)
    if findings:
        raise SelfTestError("sandbox self-test failed: " + "; ".join(findings[:20]))
