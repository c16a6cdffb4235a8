"""Security class "wiring": from every facade member, every builtin and the objects they
make, no path of attribute reads leads to a module, a frame, a code object, a traceback, a
dangerous builtin or a function's `__globals__`; exceptions raised by facades carry no host
object. The paths are found here (over the same boot modules) and then walked *inside a real
worker* by generated step code, so what is checked is what step code can actually reach."""

from __future__ import annotations

import builtins
import keyword
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from RestrictedPython.transformer import INSPECT_ATTRIBUTES

from engine.sandbox.pool import SandboxPool
from engine.sandbox.process import BOOT_DIR
from engine.sandbox.settings import SandboxSettings
from tests.sandbox.helpers import assert_engine_alive, assert_rejected

DEPTH = 4
CHUNK = 400
FORBIDDEN = (types.ModuleType, types.FrameType, types.CodeType, types.TracebackType)
FORBIDDEN_REPRS = ("<module", "<frame", "<code object", "<traceback")
REFUSAL = "raised AccessDenied("
DANGEROUS = {
    getattr(builtins, name)
    for name in [
        "getattr",
        "setattr",
        "delattr",
        "type",
        "object",
        "vars",
        "dir",
        "globals",
        "locals",
        "id",
        "open",
        "compile",
        "eval",
        "exec",
        "memoryview",
        "bytearray",
        "__import__",
        "__build_class__",
        "super",
        "breakpoint",
        "input",
    ]
}
# Objects that step code gets by calling facade members and builtins, walked like the rest.
MADE = (
    "re.compile('a')",
    "re.match('a', 'a')",
    "re.error('x')",
    "csv.reader([])",
    "csv.writer(csv.TextBuffer())",
    "csv.DictReader([])",
    "csv.DictWriter(csv.TextBuffer(), ['a'])",
    "csv.TextBuffer()",
    "decimal.Context()",
    "decimal.Decimal('1.5')",
    "datetime.datetime(2024, 1, 1)",
    "datetime.timezone.utc",
    "uuid.uuid4()",
    "random.Random(1)",
    "hmac.new(b'k', b'm', 'sha256')",
    "hashlib.sha256()",
    "zoneinfo.ZoneInfo('UTC')",
    "statistics.NormalDist(0, 1)",
    "collections.namedtuple('P', 'a')",
    "collections.namedtuple('P', 'a')(1)",
    "collections.Counter('ab')",
    "collections.deque([1])",
    "collections.ChainMap({})",
    "collections.defaultdict(list)",
    "functools.partial(len)",
    "functools.lru_cache(len)",
    "functools.cmp_to_key(len)(1)",
    "json.JSONDecodeError('m', 'd', 0)",
    "urllib.parse.urlparse('http://a/b?c#d')",
    "urllib.parse.urlsplit('http://a')",
    "itertools.count()",
    "itertools.groupby([1])",
    "(x for x in [1])",
    "iter([1])",
    "map(len, [])",
    "enumerate([])",
    "range(3)",
    "slice(1)",
    "{}.items()",
    "ValueError('x')",
    "print",
    "input",
)


def _boot_objects() -> dict[str, Any]:
    """Root expressions and the objects they name, from the boot modules imported here."""
    sys.path.insert(0, str(BOOT_DIR))
    try:
        import facades
        import namespace
    finally:
        sys.path.remove(str(BOOT_DIR))
    made: dict[str, Any] = {}
    roots: dict[str, Any] = {}
    for name in facades.AVAILABLE:
        facade = facades.build(name, made)
        for member in _names(facade):
            roots[f"{name}.{member}"] = getattr(facade, member)
    roots.update({name: value for name, value in namespace.BASE_BUILTINS.items()})
    scope = {name: facades.build(name.partition(".")[0], made) for name in facades.AVAILABLE}
    scope.update(namespace.BASE_BUILTINS)
    scope["input"] = {"k": [1]}
    scope["print"] = namespace.Printer(100)._call_print
    for expression in MADE:
        roots[expression] = eval(expression, {"__builtins__": {}}, scope)  # noqa: S307 - ours
    return roots


def _names(value: Any) -> list[str]:
    """Public attribute names step code could write after a dot (compile-time refusals
    excluded: those are test_security_introspection's)."""
    try:
        listed = dir(value)
        if isinstance(value, type):  # dir() of a class leaves out its metaclass's methods
            listed = sorted({*listed, *dir(type(value))})
    except Exception:
        return []
    return [
        name
        for name in listed
        if name.isidentifier()
        and not name.startswith("_")
        and not keyword.iskeyword(name)
        and name not in INSPECT_ATTRIBUTES
    ]


LEAVES = (str, int, float, bool, bytes, complex, type(None))


def paths(depth: int = DEPTH) -> Iterator[tuple[str, Any]]:
    """(expression, host value) for every attribute path from the roots, `depth` deep; each
    object is expanded once, plain values and callables of no interest are not expanded."""
    seen: set[int] = set()
    frontier = list(_boot_objects().items())
    for level in range(depth):
        following: list[tuple[str, Any]] = []
        for expression, value in frontier:
            yield expression, value
            if id(value) in seen or isinstance(value, LEAVES) or level == depth - 1:
                continue
            seen.add(id(value))
            for name in _names(value):
                try:
                    child = getattr(value, name)
                except Exception:  # noqa: S112 - a name that raises leads nowhere
                    continue
                following.append((f"({expression}).{name}", child))
        frontier = following


def step_code(expressions: list[str]) -> str:
    """A step reading each expression; per expression the repr of what it got, or the repr
    of the exception (a guard's refusal shows as "AccessDenied(...)")."""
    lines = [
        "import " + ", ".join(n for n in sorted(IMPORTS)),
        "def probe(get):",
        "    try:",
        "        value = get()",
        "    except Exception as error:",
        "        return 'raised ' + repr(error)[:120]",
        "    try:",
        "        return repr(value)[:80] + ' | globals ' + repr(hasattr(value, '__globals__'))",
        "    except Exception as error:",
        "        return 'unprintable ' + repr(error)[:80]",
        "out = []",
    ]
    lines += [f"out.append(probe(lambda: {expression}))" for expression in expressions]
    lines.append("return out")
    return "\n".join(lines)


IMPORTS = [
    "base64",
    "collections",
    "csv",
    "datetime",
    "decimal",
    "functools",
    "hashlib",
    "hmac",
    "html",
    "itertools",
    "json",
    "math",
    "random",
    "re",
    "statistics",
    "string",
    "textwrap",
    "unicodedata",
    "urllib.parse",
    "uuid",
    "zoneinfo",
]


def _forbidden(value: Any) -> bool:
    try:
        return isinstance(value, FORBIDDEN) or value in DANGEROUS
    except TypeError:  # unhashable
        return isinstance(value, FORBIDDEN)


@pytest.fixture(scope="module")
def walked() -> list[tuple[str, Any]]:
    return list(paths())


def test_the_walk_covers_every_facade_member_and_builtin(walked: list[tuple[str, Any]]) -> None:
    roots = {expression for expression, _ in walked if "(" not in expression}
    assert {"json.loads", "re.compile", "random.random", "len", "str", "hasattr"} <= roots
    assert len(walked) > 2_000, "the walk should reach thousands of objects"


def test_no_public_path_on_the_host_side_reaches_a_forbidden_object(
    walked: list[tuple[str, Any]],
) -> None:
    """The wiring itself is clean; the guard's refusals are a second line, not the first."""
    found = [expression for expression, value in walked if _forbidden(value)]
    assert found == []


BANNED_SOURCES = {"operator", "typing", "dataclasses", "inspect", "io", "os", "sys", "importlib"}


def test_nothing_reachable_comes_from_a_banned_module(walked: list[tuple[str, Any]]) -> None:
    """Facades hold chosen functions and classes; none from the modules that walk
    attributes or reach the interpreter, and no string.Formatter."""
    import string

    def source(value: Any) -> str:
        owner = value if isinstance(value, type) or callable(value) else type(value)
        module = getattr(owner, "__module__", None)
        return module.lstrip("_").partition(".")[0] if isinstance(module, str) else ""

    banned = [e for e, v in walked if source(v) in BANNED_SOURCES]
    assert banned == []
    assert not [e for e, v in walked if v is string.Formatter or isinstance(v, string.Formatter)]


# `input` is not listed: the name is the step's parameter.
DENIED_BUILTINS = {
    name: "NameError"
    for name in str.split(
        "getattr setattr delattr type object vars dir globals locals id open compile memoryview "
        "bytearray super help exit quit classmethod staticmethod property"
    )
}
DENIED_BUILTINS.update(
    dict.fromkeys(("eval", "exec", "breakpoint", "__build_class__"), "code not allowed")
)


@pytest.mark.parametrize("name", sorted(DENIED_BUILTINS))
async def test_dangerous_builtins_do_not_exist(pool: SandboxPool, tenant: str, name: str) -> None:
    code = f"return {name}('x')" if name in ("eval", "exec") else f"f = {name}\nreturn 1"
    await assert_rejected(pool, code, tenant=tenant, contains=DENIED_BUILTINS[name])


@pytest.mark.usefixtures("boot_modules")
def test_iteration_and_indexing_refuse_what_attribute_reads_refuse() -> None:
    """Defence in depth, exercised on the worker's guard functions here: should a call ever
    hand step code a container holding a module or a frame, its items stay out of reach."""
    import guards

    module, frame = types.ModuleType("m"), sys._getframe()
    for holder in (iter([module]), (x for x in [frame])):
        with pytest.raises(guards.AccessDenied, match="not allowed in steps"):
            list(guards.guarded_iter(holder))
    with pytest.raises(guards.AccessDenied):
        guards.guarded_getitem({"m": module}, "m")
    with pytest.raises(guards.AccessDenied):
        guards.guarded_getitem([getattr], 0)
    assert list(guards.guarded_iter([1, "a"])) == [1, "a"]


@pytest.fixture(scope="module")
async def roomy_pool() -> Any:
    """Room for generated walking code: larger source caps, same everything else."""
    settings = SandboxSettings(
        pool_size=1, max_source_bytes=512 * 1024, max_ast_nodes=500_000, max_output_bytes=4 << 20
    )
    sandbox = SandboxPool(settings)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.close()


async def test_every_path_walked_inside_a_worker_stays_clear(
    roomy_pool: SandboxPool, walked: list[tuple[str, Any]]
) -> None:
    expressions = [expression for expression, _ in walked]
    outcomes: list[str] = []
    for start in range(0, len(expressions), CHUNK):
        chunk = expressions[start : start + CHUNK]
        result = await roomy_pool.run(step_code(chunk), None, tenant=f"walk-{start}")
        assert result.error is None, result.error
        assert len(result.output) == len(chunk)
        outcomes += result.output
    reached = dict(zip(expressions, outcomes, strict=True))
    leaks = [e for e, o in reached.items() if o.startswith(FORBIDDEN_REPRS)]
    assert leaks == [], leaks[:10]
    globals_readable = [e for e, o in reached.items() if o.endswith("| globals True")]
    assert globals_readable == [], globals_readable[:10]
    read = [o for o in outcomes if " | globals " in o]
    assert len(read) > 0.9 * len(outcomes), "most paths should be readable by step code"
    refused = {e.rpartition(".")[2] for e, o in reached.items() if o.startswith(REFUSAL)}
    # The guard refuses by name only what walks in C or reaches shared state, nothing more.
    assert refused == {"format", "format_map", "mro", "register", "gi_running", "gi_suspended"}


FACADE_ERRORS = {
    "json": "json.loads('{')",
    "re": "re.compile('(')",
    "datetime": "datetime.datetime.strptime('x', '%Y')",
    "decimal": "decimal.Decimal('1') / decimal.Decimal('0')",
    "csv": "list(csv.reader(['\"a'], strict=True))",
    "zoneinfo": "zoneinfo.ZoneInfo('Nowhere/City')",
    "statistics": "statistics.mean([])",
    "base64": "base64.b64decode('a')",
    "hashlib": "hashlib.new('nope')",
    "uuid": "uuid.UUID('nope')",
    "urllib.parse": "urllib.parse.urlsplit('http://[::1')",
    "unicodedata": "unicodedata.lookup('NO SUCH CHARACTER')",
    "missing member": "json.environ",
    "missing module": "__builtins_import_os__",
    "facade call with bad arguments": "math.sqrt('x')",
    "decoding": "b'\\xff'.decode('utf-8')",
    "iteration end": "next(iter([]))",
    "refused write": "setattr_via_write",
}


@pytest.mark.parametrize("case", sorted(FACADE_ERRORS))
async def test_exceptions_raised_by_facades_carry_no_host_object(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    expression = FACADE_ERRORS[case]
    if expression == "__builtins_import_os__":
        trigger = "import os"
    elif expression == "setattr_via_write":
        trigger = "json.loads = 1"
    else:
        trigger = f"x = {expression}"
    code = (
        "import " + ", ".join(sorted(IMPORTS)) + "\n"
        "try:\n"
        f"    {trigger}\n"
        "except Exception as error:\n"
        "    caught = error\n"
        "else:\n"
        "    raise AssertionError('nothing was raised')\n"
        "seen = {}\n"
        "for name in ['args', 'obj', 'name', 'path', 'msg', 'doc', 'pos', 'pattern', 'object',\n"
        "             'value', 'filename', 'reason', 'start', 'end', 'lineno', 'colno']:\n"
        "    if hasattr(caught, name):\n"
        "        seen[name] = repr(caught.obj if name == 'obj' else\n"
        "            [caught.args, caught.name if hasattr(caught, 'name') else None,\n"
        "             caught.path if hasattr(caught, 'path') else None,\n"
        "             caught.msg if hasattr(caught, 'msg') else None,\n"
        "             caught.doc if hasattr(caught, 'doc') else None,\n"
        "             caught.pattern if hasattr(caught, 'pattern') else None,\n"
        "             caught.object if hasattr(caught, 'object') else None,\n"
        "             caught.value if hasattr(caught, 'value') else None])\n"
        "return {'type': repr(caught)[:60], 'seen': seen,\n"
        "        'globals': hasattr(caught, '__globals__'),\n"
        "        'context': hasattr(caught, '__context__'),\n"
        "        'traceback': hasattr(caught, '__traceback__')}"
    )
    result = await pool.run(code, None, tenant=tenant)
    assert result.error is None, result.error
    found = result.output
    text = repr(found["seen"])
    assert not any(marker in text for marker in FORBIDDEN_REPRS), text
    assert not found["globals"] and not found["context"] and not found["traceback"]
    if case == "missing member":
        assert found["seen"]["obj"].startswith("ModuleFacade("), "the facade, not the module"


WALKS_OUT = {
    "function globals": "import json\nreturn json.dumps.__globals__",
    "builtin self": "import math\nreturn math.sqrt.__self__",
    "bound method self": "import random\nreturn random.random.__self__",
    "class dict": "import csv\nreturn csv.DictReader.__dict__",
    "init globals": "import csv\nreturn csv.DictReader.__init__.__globals__",
    "lru wrapped": "import urllib.parse\nreturn urllib.parse.urlsplit.__wrapped__",
    "facade module name": "import json\nreturn json.loads.__module__",
    "subclasses": "return str.__base__.__subclasses__()",
    "exception traceback": "try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__",
}


@pytest.mark.parametrize("case", sorted(WALKS_OUT))
async def test_the_usual_exits_from_a_facade_are_refused_at_compile_time(
    pool: SandboxPool, tenant: str, case: str
) -> None:
    await assert_rejected(pool, WALKS_OUT[case], tenant=tenant, contains="code not allowed")


async def test_dynamic_names_cannot_reach_dunders_either(pool: SandboxPool, tenant: str) -> None:
    """The only dynamic attribute read step code has is hasattr: it answers False."""
    code = (
        "import json\n"
        "names = ['__glob' + 'als__', '__cl' + 'ass__', '__dict' + '__', 'gi_' + 'frame',\n"
        "         'for' + 'mat', 'mr' + 'o', '__sub' + 'classes__']\n"
        "return [hasattr(json.dumps, n) or hasattr('', n) or hasattr(str, n) for n in names]"
    )
    result = await pool.run(code, None, tenant=tenant)
    assert result.output == [False] * 7, result.error
    await assert_engine_alive(pool, tenant)
