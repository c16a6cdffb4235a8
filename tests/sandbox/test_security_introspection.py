"""Security class "introspection": dunder attributes, frames through generators, coroutines,
tracebacks and exceptions, str.format/format_map field lookups, f-strings with attribute
chains. Each case must be refused (at compile time or as a step error), its worker dropped,
and the pool must keep serving. Real worker processes, one pool for the module."""

from __future__ import annotations

import pytest

from engine.sandbox.pool import SandboxPool
from tests.sandbox.helpers import assert_rejected

COMPILE_TIME = {
    "class of input": "return input.__class__",
    "subclasses walk": "return ().__class__.__bases__[0].__subclasses__()",
    "function globals": "f = lambda: 0\nreturn f.__globals__",
    "mro": "return [].__class__.__mro__",
    "dict of facade": "import json\nreturn json.__dict__",
    "loader of facade": "import json\nreturn json.loads.__module__",
    "print's collector": "return print.__self__",
    "builtins name": "return __builtins__",
    "import function": "return __import__('os')",
    "generator frame": "g = (x for x in [1])\nreturn g.gi_frame.f_back",
    "generator code": "def gen():\n    yield 1\nreturn gen().gi_code",
    "frame locals": "g = (x for x in [1])\nreturn g.gi_frame.f_locals",
    "yield from target": "def gen():\n    yield 1\nreturn gen().gi_yieldfrom",
    "async function": "async def f():\n    return 1\nreturn 1",
    "await": "async def f():\n    await g()\nreturn 1",
    "traceback attribute": "try:\n    1 / 0\nexcept Exception as e:\n    return e.__traceback__",
    "traceback frame": "try:\n    1 / 0\nexcept Exception as e:\n    t = e.__traceback__\n"
    "    return t.tb_frame.f_globals",
    "exception context": "try:\n    1 / 0\nexcept Exception as e:\n    return e.__context__",
    "exception group": "try:\n    pass\nexcept* ValueError:\n    pass",
    "f-string dunder": "return f'{input.__class__}'",
    "f-string chain": "return f'{(1).real.__class__.__base__}'",
    "f-string spec chain": "return f'{1:{input.__class__}}'",
    "exec": "exec('import os')",
    "eval": "return eval('1')",
}

DENIED = "AccessDenied: reading"
RUNTIME = {
    "str.format field walk": ("return '{0.__class__}'.format(1)", DENIED),
    "format through the class": ("return str.format('{0.__class__}', 1)", DENIED),
    "format_map field walk": ("return '{a.__class__}'.format_map({'a': 1})", DENIED),
    "bound format kept": ("f = 'x'.format\nreturn f", DENIED),
    "getattr builtin": ("return getattr(input, '__class__')", "NameError"),
    "type builtin": ("return type(input)", "NameError"),
    "vars builtin": ("return vars()", "NameError"),
    "dir builtin": ("return dir(input)", "NameError"),
    "globals builtin": ("return globals()", "NameError"),
    "locals builtin": ("return locals()", "NameError"),
    "id builtin": ("return id(input)", "NameError"),
    "object builtin": ("return object", "NameError"),
    "open builtin": ("return open('/proc/self/environ').read()", "NameError"),
    "compile builtin": ("return compile('1', 'x', 'eval')", "NameError"),
    "mro method": ("return str.mro()", DENIED),
    "generator internals": ("g = (x for x in [1])\nreturn g.gi_running", DENIED),
    "format spec is not a field path": ("return format(1, '{0.__class__}')", "ValueError"),
    "exception keeps no frame": (
        "try:\n    1 / 0\nexcept Exception as e:\n    return e.with_traceback(None)",
        "output is not JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(COMPILE_TIME))
async def test_refused_at_compile_time(pool: SandboxPool, tenant: str, case: str) -> None:
    await assert_rejected(pool, COMPILE_TIME[case], tenant=tenant, contains="code not allowed")


@pytest.mark.parametrize("case", sorted(RUNTIME))
async def test_refused_when_run(pool: SandboxPool, tenant: str, case: str) -> None:
    code, error = RUNTIME[case]
    await assert_rejected(pool, code, tenant=tenant, contains=error)


async def test_hasattr_answers_false_for_refused_names(pool: SandboxPool, tenant: str) -> None:
    code = (
        "g = (x for x in [1])\n"
        "return [hasattr(input, '__class__'), hasattr(g, 'gi_frame'), hasattr('s', 'format'),"
        " hasattr(input, 'keys')]"
    )
    result = await pool.run(code, {}, tenant=tenant)
    assert result.output == [False, False, False, True], result.error


async def test_exception_attributes_carry_only_plain_values(pool: SandboxPool, tenant: str) -> None:
    code = (
        "import json\n"
        "try:\n    json.loads('{')\nexcept json.JSONDecodeError as e:\n"
        "    return [e.msg, e.doc, e.pos, e.lineno, [str(a) for a in e.args]]"
    )
    result = await pool.run(code, None, tenant=tenant)
    assert result.error is None, result.error
    assert result.output[:4] == ["Expecting property name enclosed in double quotes", "{", 1, 1]
