"""Security class "guard overrides": rebinding the names RestrictedPython's rewritten code
calls (`_getattr_`, `_write_`, `_getiter_`, …) by every binding syntax. All must be refused
at compile time; the pool keeps serving. Real worker processes, one pool for the module."""

from __future__ import annotations

import pytest

from engine.sandbox.pool import SandboxPool
from tests.sandbox.helpers import assert_rejected

HOOKS = (
    "_getattr_",
    "_write_",
    "_getiter_",
    "_getitem_",
    "_print_",
    "_inplacevar_",
    "_apply_",
    "_unpack_sequence_",
    "_iter_unpack_sequence_",
    "__import__",
    "__builtins__",
)
EVIL = "lambda *a, **k: a"

SYNTAXES = {
    "assignment": "{h} = {evil}\nreturn input.keys",
    "tuple assignment": "{h}, x = {evil}, 1\nreturn 1",
    "annotated assignment": "{h}: int = 1\nreturn 1",
    "augmented assignment": "{h} += 1\nreturn 1",
    "positional-only parameter": "def f({h}={evil}, /):\n    return input.keys\nreturn f()",
    "keyword-only parameter": "def f(*, {h}={evil}):\n    return input.keys\nreturn f()",
    "parameter default": "def f({h}={evil}):\n    return input.keys\nreturn f()",
    "star parameter": "def f(*{h}):\n    return 1\nreturn f()",
    "double-star parameter": "def f(**{h}):\n    return 1\nreturn f()",
    "lambda parameter": "f = lambda {h}={evil}: input.keys\nreturn f()",
    "lambda positional-only": "f = lambda {h}={evil}, /: input.keys\nreturn f()",
    "comprehension variable": "return [input.keys for {h} in [{evil}]]",
    "generator variable": "return list(input.keys for {h} in [{evil}])",
    "dict comprehension": "return {{k: 1 for {h} in [1] for k in 'a'}}",
    "global statement": "global {h}\n{h} = {evil}\nreturn 1",
    "global alone": "global {h}\nreturn 1",
    "except name": "try:\n    1 / 0\nexcept Exception as {h}:\n    pass\nreturn 1",
    "walrus": "if ({h} := {evil}):\n    return input.keys",
    "walrus in comprehension": "return [({h} := {evil}) for x in [1]]",
    "import as": "import json as {h}\nreturn 1",
    "from import as": "from json import loads as {h}\nreturn 1",
    "for target": "for {h} in [{evil}]:\n    pass\nreturn 1",
    "with target": "import json\nwith json as {h}:\n    pass",
    "delete": "del {h}\nreturn 1",
    "function name": "def {h}(o, n):\n    return 1\nreturn 1",
    "nested function": (
        "def outer():\n    def {h}(o, n):\n        return 1\n    return 1\nreturn outer()"
    ),
    "nonlocal": (
        "def outer():\n    x = 1\n    def inner():\n        nonlocal {h}\n    return 1\nreturn 1"
    ),
    "class name": "class {h}:\n    pass",
    "match capture": "match input:\n    case {h}:\n        pass",
}


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
async def test_getattr_hook_cannot_be_rebound_in_a_worker(
    pool: SandboxPool, tenant: str, syntax: str
) -> None:
    code = SYNTAXES[syntax].format(h="_getattr_", evil=EVIL)
    await assert_rejected(pool, code, value={}, tenant=tenant, contains="code not allowed")


@pytest.mark.usefixtures("boot_modules")
@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_name_is_reserved_in_every_syntax(hook: str) -> None:
    """The worker's compiler, exercised here in-process: the whole matrix, fast."""
    import policy

    for syntax, template in SYNTAXES.items():
        compiled = policy.compile_step(template.format(h=hook, evil=EVIL), 65536, 50000, 200)
        assert compiled.code is None, f"{syntax} rebinding {hook} compiled"
        assert compiled.error is not None and compiled.error.startswith("code not allowed"), (
            syntax,
            compiled.error,
        )


async def test_shadowing_a_builtin_is_local_and_harmless(pool: SandboxPool, tenant: str) -> None:
    code = "len = lambda x: 99\niter = None\nreturn [len([1]), [c for c in 'ab']]"
    result = await pool.run(code, None, tenant=tenant)
    assert result.output == [99, ["a", "b"]], result.error
    result = await pool.run("return len([1, 2])", None, tenant=tenant)
    assert result.output == 2
