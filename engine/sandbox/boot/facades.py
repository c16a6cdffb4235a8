"""The modules step code may import, each handed over as a facade: a fresh namespace per
execution holding chosen functions, classes and constants, never the module object (a real
module leads from public attribute names to `sys` and `os`).
"""

from __future__ import annotations

import base64
import collections
import csv
import datetime
import decimal
import functools
import hashlib
import hmac
import html
import itertools
import json
import math
import random
import re
import statistics
import string
import sys
import textwrap
import types
import unicodedata
import urllib.parse
import uuid
import zoneinfo
from collections.abc import Callable
from typing import Any

Members = dict[str, Any]


class ModuleFacade(types.SimpleNamespace):
    """A module as step code sees it: chosen members only, made fresh for each execution.
    Its own type, so that errors about it name it."""


def _uncached(function: Callable[..., Any]) -> Callable[..., Any]:
    """A stdlib function wrapped in functools.lru_cache, without the wrapper's cache_info
    and cache_clear: with them one run could see or reset what earlier runs left."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs)

    call.__name__ = call.__qualname__ = function.__name__
    call.__doc__ = function.__doc__
    return call


def _pick(module: Any, names: str) -> Members:
    members = {name: getattr(module, name) for name in names.split()}
    return {
        name: _uncached(value) if isinstance(value, functools._lru_cache_wrapper) else value
        for name, value in members.items()
    }


def loads(text: str | bytes, **options: Any) -> Any:
    """json.loads without a `cls` option."""
    if "cls" in options:
        raise TypeError("json.loads(cls=...) is not available in Python steps")
    return json.loads(text, **options)


def dumps(
    obj: Any,
    *,
    indent: int | str | None = None,
    sort_keys: bool = False,
    separators: tuple[str, str] | None = None,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
    allow_nan: bool = False,
) -> str:
    """json.dumps without `cls`; NaN and Infinity are refused unless allow_nan=True."""
    return json.dumps(
        obj,
        indent=indent,
        sort_keys=sort_keys,
        separators=separators,
        ensure_ascii=ensure_ascii,
        default=default,
        allow_nan=allow_nan,
    )


class TextBuffer:
    """A text sink for csv.writer / csv.DictWriter: write() appends, getvalue() returns."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[str] = []

    def write(self, text: str) -> int:
        if type(text) is not str:
            raise TypeError("TextBuffer.write takes a str")
        self._parts.append(text)
        return len(text)

    def getvalue(self) -> str:
        return "".join(self._parts)


_RE_FLAGS = {
    name: int(getattr(re, name))
    for name in str.split("A ASCII I IGNORECASE M MULTILINE S DOTALL X VERBOSE U UNICODE NOFLAG")
    if hasattr(re, name)
}

_MATH = {name: getattr(math, name) for name in dir(math) if not name.startswith("_")}
_ITERTOOLS = {name: getattr(itertools, name) for name in dir(itertools) if not name.startswith("_")}

STATIC: dict[str, Members] = {
    "base64": _pick(
        base64,
        "b64encode b64decode standard_b64encode standard_b64decode urlsafe_b64encode "
        "urlsafe_b64decode b32encode b32decode b32hexencode b32hexdecode b16encode b16decode "
        "b85encode b85decode a85encode a85decode encodebytes decodebytes",
    ),
    "collections": _pick(collections, "Counter OrderedDict defaultdict deque namedtuple ChainMap"),
    "csv": {
        **_pick(
            csv,
            "reader writer DictReader DictWriter Error QUOTE_ALL QUOTE_MINIMAL QUOTE_NONE "
            "QUOTE_NONNUMERIC",
        ),
        "TextBuffer": TextBuffer,
    },
    "datetime": _pick(datetime, "date time datetime timedelta timezone MINYEAR MAXYEAR"),
    "decimal": _pick(
        decimal,
        "Decimal Context DecimalException InvalidOperation DivisionByZero Overflow Underflow "
        "Inexact Rounded Subnormal Clamped FloatOperation ROUND_UP ROUND_DOWN ROUND_CEILING "
        "ROUND_FLOOR ROUND_HALF_UP ROUND_HALF_DOWN ROUND_HALF_EVEN ROUND_05UP",
    ),
    "functools": _pick(functools, "reduce partial lru_cache cache cmp_to_key"),
    "hashlib": {
        **_pick(
            hashlib,
            "md5 sha1 sha224 sha256 sha384 sha512 sha3_224 sha3_256 sha3_384 sha3_512 "
            "shake_128 shake_256 blake2b blake2s new pbkdf2_hmac",
        ),
        "algorithms_available": frozenset(hashlib.algorithms_available),
        "algorithms_guaranteed": frozenset(hashlib.algorithms_guaranteed),
    },
    "hmac": _pick(hmac, "new compare_digest digest"),
    "html": _pick(html, "escape unescape"),
    "itertools": _ITERTOOLS,
    "json": {"loads": loads, "dumps": dumps, "JSONDecodeError": json.JSONDecodeError},
    "math": _MATH,
    "re": {
        **_pick(re, "compile search match fullmatch findall finditer sub subn split escape error"),
        **_RE_FLAGS,
    },
    "statistics": _pick(
        statistics,
        "mean fmean geometric_mean harmonic_mean median median_low median_high median_grouped "
        "mode multimode quantiles pstdev pvariance stdev variance covariance correlation "
        "linear_regression NormalDist StatisticsError",
    ),
    "string": _pick(
        string,
        "ascii_letters ascii_lowercase ascii_uppercase digits hexdigits octdigits punctuation "
        "printable whitespace capwords",
    ),
    "textwrap": _pick(textwrap, "wrap fill shorten dedent indent"),
    "unicodedata": _pick(
        unicodedata,
        "lookup name decimal digit numeric category bidirectional combining east_asian_width "
        "mirrored decomposition normalize is_normalized unidata_version",
    ),
    "urllib.parse": _pick(
        urllib.parse,
        "urlparse urlunparse urlsplit urlunsplit urljoin urldefrag urlencode quote quote_plus "
        "quote_from_bytes unquote unquote_plus unquote_to_bytes parse_qs parse_qsl",
    ),
    "uuid": _pick(
        uuid, "uuid3 uuid4 uuid5 UUID NAMESPACE_DNS NAMESPACE_URL NAMESPACE_OID NAMESPACE_X500"
    ),
    "zoneinfo": _pick(zoneinfo, "ZoneInfo ZoneInfoNotFoundError available_timezones"),
}
if hasattr(datetime, "UTC"):
    STATIC["datetime"]["UTC"] = datetime.UTC

RANDOM_METHODS = str.split(
    "random uniform triangular randint randrange choice choices shuffle sample gauss "
    "normalvariate lognormvariate expovariate vonmisesvariate gammavariate betavariate "
    "paretovariate weibullvariate getrandbits randbytes seed getstate setstate"
)

AVAILABLE = tuple(sorted([*STATIC, "random", "urllib"]))


def _random_members() -> Members:
    # A Random of this execution only: seeding or drawing never touches another run.
    generator = random.Random()  # noqa: S311 - steps ask for random numbers, not secrets
    members = {name: getattr(generator, name) for name in RANDOM_METHODS}
    members["Random"] = random.Random
    return members


def build(name: str, made: dict[str, ModuleFacade]) -> ModuleFacade:
    """The facade for `name`, made once per execution (cached in `made`)."""
    facade = made.get(name)
    if facade is not None:
        return facade
    if name == "random":
        facade = ModuleFacade(**_random_members())
    elif name == "urllib":
        facade = ModuleFacade(parse=build("urllib.parse", made))
    else:
        if name == "decimal":
            # Arithmetic uses the thread's context: start every execution from the default.
            decimal.setcontext(decimal.Context())
        facade = ModuleFacade(**STATIC[name])
    made[name] = facade
    return facade


def unavailable(name: str) -> ImportError:
    listed = ", ".join(n for n in AVAILABLE if n != "urllib")
    return ImportError(
        f"module {name!r} is not available in Python steps; available modules: {listed}",
        name=name,
    )


def import_hook(made: dict[str, ModuleFacade]) -> Callable[..., Any]:
    """`__import__` for one execution: resolves only to facades."""

    def facade_import(
        name: str,
        globals: Any = None,
        locals: Any = None,
        fromlist: Any = (),
        level: int = 0,
    ) -> ModuleFacade | None:
        if type(name) is not str:
            raise TypeError("module names must be str")
        if type(fromlist) is list and not fromlist and locals is not None and locals is globals:
            # C code (datetime.strftime importing `time`, strptime importing `_strptime`)
            # imports through this hook with exactly these arguments; step code cannot.
            # The caller discards the result and reads the module from sys.modules.
            if name in sys.modules:
                return None
            raise unavailable(name)
        if level != 0:
            raise ImportError("relative imports are not available in Python steps")
        if name not in STATIC and name not in ("random", "urllib"):
            raise unavailable(name)
        if fromlist or "." not in name:
            return build(name, made)
        return build(name.partition(".")[0], made)

    return facade_import
