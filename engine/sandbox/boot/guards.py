"""The hooks RestrictedPython's rewritten code calls: attribute and item reads, writes,
iteration, unpacking, augmented assignment and calls with */**.

Reads refuse module, frame, code and traceback objects (on either side of the dot), the
internals of generators and coroutines, and dangerous host callables as results.
"""

from __future__ import annotations

import abc
import builtins
import collections
import operator
import types
from typing import Any, NoReturn

from RestrictedPython.Guards import (
    full_write_guard,
    guarded_iter_unpack_sequence,
    guarded_unpack_sequence,
    safer_getattr_raise,
)
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

OPAQUE_TYPES = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
SUSPENDABLE_TYPES = frozenset({types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType})
SUSPENDABLE_PUBLIC = frozenset({"send", "throw", "close"})
DENIED_NAMES = INSPECT_ATTRIBUTES | frozenset({"mro", "format", "format_map"})

# Host callables that must never reach step code, whichever path leads to them.
DENIED_OBJECT_NAMES = tuple(
    str.split(
        "getattr setattr delattr type object vars dir globals locals id open compile eval exec "
        "memoryview bytearray __import__ __build_class__ super breakpoint input help exit quit "
        "classmethod staticmethod property"
    )
)
DENIED_OBJECTS = tuple(
    getattr(builtins, name) for name in DENIED_OBJECT_NAMES if hasattr(builtins, name)
)
DENIED_IDS = frozenset(id(obj) for obj in DENIED_OBJECTS)

# Exact container types whose items step code may assign (the stdlib ones come from facades).
WRITABLE_TYPES = frozenset(
    {
        dict,
        list,
        collections.Counter,
        collections.OrderedDict,
        collections.defaultdict,
        collections.deque,
    }
)

_RAISE = object()


class AccessDenied(AttributeError):
    """Raised for a refused attribute read; an AttributeError so `hasattr` answers False."""


def _refuse_value(value: Any, what: str) -> Any:
    if isinstance(value, OPAQUE_TYPES) or id(value) in DENIED_IDS:
        raise AccessDenied(f"{what} leads to a {type(value).__name__} object, not allowed in steps")
    return value


def guarded_getattr(obj: Any, name: str, default: Any = _RAISE) -> Any:
    """`obj.name` in step code."""
    if type(name) is not str:
        raise TypeError("attribute names must be str")
    if name.startswith("_") or name in DENIED_NAMES:
        # `format`/`format_map` are refused on everything: their field syntax walks
        # attributes inside C, out of reach of this hook.
        raise AccessDenied(f'reading ".{name}" is not allowed in steps')
    kind = type(obj)
    if name == "register" and isinstance(obj, abc.ABCMeta):
        # An abstract class's registry is shared by every run of the worker.
        raise AccessDenied(f'reading ".register" of {obj.__name__} is not allowed in steps')
    if isinstance(obj, OPAQUE_TYPES):
        raise AccessDenied(f'reading ".{name}" of a {kind.__name__} object is not allowed')
    if kind in SUSPENDABLE_TYPES and name not in SUSPENDABLE_PUBLIC:
        raise AccessDenied(f'reading ".{name}" of a {kind.__name__} is not allowed in steps')
    if default is _RAISE:
        value = safer_getattr_raise(obj, name)
    else:
        value = safer_getattr_raise(obj, name, default)
    return _refuse_value(value, f'".{name}"')


def guarded_getitem(obj: Any, key: Any) -> Any:
    """`obj[key]` in step code."""
    if isinstance(obj, OPAQUE_TYPES):
        raise TypeError(f"indexing a {type(obj).__name__} object is not allowed in steps")
    return _refuse_value(obj[key], "this item")


# Containers whose items step code put there itself (or JSON did): iterated at C speed.
PLAIN_ITERABLES = frozenset(
    {
        list,
        tuple,
        dict,
        str,
        bytes,
        range,
        set,
        frozenset,
        type({}.keys()),
        type({}.values()),
        type({}.items()),
        collections.deque,
    }
)


def guarded_iter(obj: Any) -> Any:
    """`for x in obj`, comprehensions and unpacking in step code: anything else than a plain
    container has each item checked like the result of an attribute read."""
    if type(obj) in PLAIN_ITERABLES:
        return iter(obj)
    return _checked_items(iter(obj))


def _checked_items(iterator: Any) -> Any:
    for item in iterator:
        yield _refuse_value(item, "an item of this iteration")


def guarded_hasattr(obj: Any, name: str) -> bool:
    """`hasattr` with the same refusals as attribute reads."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


class ReadOnly:
    """What `_write_` hands back for an object step code may not change: every write raises
    a TypeError that names the object's type and the way out."""

    __slots__ = ("_kind",)

    def __init__(self, kind: str) -> None:
        object.__setattr__(self, "_kind", kind)

    def _refuse(self, what: str) -> NoReturn:
        raise TypeError(
            f"{what} of a {self._kind} object is not allowed in steps: only dict, list and "
            "the collections containers can be changed; build a new value instead"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        self._refuse(f'setting ".{name}"')

    def __delattr__(self, name: str) -> None:
        self._refuse(f'deleting ".{name}"')

    def __setitem__(self, key: Any, value: Any) -> None:
        self._refuse("assigning an item")

    def __delitem__(self, key: Any) -> None:
        self._refuse("deleting an item")


def guarded_write(obj: Any) -> Any:
    """`obj.x = v` / `obj[k] = v` / `del ...` in step code: the containers a step builds are
    written directly; for everything else RestrictedPython's full_write_guard decides, and
    where it would wrap (refuse) a ReadOnly refuses with a clearer message."""
    if type(obj) in WRITABLE_TYPES:
        return obj
    return obj if full_write_guard(obj) is obj else ReadOnly(type(obj).__name__)


_INPLACE = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}


def inplace_var(op: str, target: Any, value: Any) -> Any:
    """`name op= value` in step code."""
    try:
        function = _INPLACE[op]
    except KeyError:
        raise SyntaxError(f"augmented assignment {op!r} is not supported") from None
    return function(target, value)


def apply_call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """`f(*args, **kwargs)` in step code."""
    return function(*args, **kwargs)


HOOKS: dict[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": guarded_getitem,
    "_getiter_": guarded_iter,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_write_": guarded_write,
    "_inplacevar_": inplace_var,
    "_apply_": apply_call,
}
