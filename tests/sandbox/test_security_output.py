"""Security class "output contract": what a step returns must be plain JSON (exact types,
string keys, finite numbers, no cycles, bounded depth and size), checked inside the worker
before anything leaves it; every breach is a step error naming where it is, the worker is
replaced and nothing of the value escapes. Real worker processes, one pool for the module."""

from __future__ import annotations

import pytest

from engine.sandbox.pool import SandboxPool
from tests.sandbox.helpers import assert_rejected

NOT_JSON = "output is not JSON: "
REFUSED = {
    "NaN": ("return float('nan')", "float nan at output (NaN and Infinity"),
    "Infinity": ("return [1, float('inf')]", "float inf at output[1]"),
    "-Infinity in a dict": ("return {'t': -float('inf')}", "float -inf at output['t']"),
    "NaN parsed by json": (
        "import json\nreturn json.loads('[NaN]')",
        "float nan at output[0]",
    ),
    "set": ("return {'tags': {'a', 'b'}}", "set at output['tags'] (convert it to a list)"),
    "frozenset": ("return frozenset([1])", "frozenset at output"),
    "bytes": ("return [b'raw']", "bytes at output[0] (decode it to str"),
    "function": ("def f():\n    return 1\nreturn {'f': f}", "function at output['f']"),
    "lambda": ("return [lambda: 1]", "function at output[0]"),
    "builtin": ("return len", "builtin_function_or_method at output"),
    "type object": ("return {'t': str}", "type at output['t']"),
    "facade": ("import json\nreturn json", "ModuleFacade at output"),
    "exception": ("return ValueError('x')", "ValueError at output"),
    "generator": ("return (x for x in [1])", "generator at output (convert it with list"),
    "range": ("return range(3)", "range at output"),
    "datetime": (
        "import datetime\nreturn datetime.date(2024, 1, 1)",
        "date at output (convert it to a string",
    ),
    "Decimal": ("import decimal\nreturn decimal.Decimal('1.5')", "Decimal at output"),
    "Counter": ("import collections\nreturn collections.Counter('aa')", "Counter at output"),
    "namedtuple": (
        "import collections\nP = collections.namedtuple('P', 'x y')\nreturn P(1, 2)",
        "P at output",
    ),
    "complex": ("return 1j", "complex at output (return its parts"),
    "int key": ("return {1: 'a'}", "a int key 1 at output (keys must be str)"),
    "None key": ("return {'a': {None: 1}}", "a NoneType key None at output['a']"),
    "tuple key": ("return {(1, 2): 'a'}", "a tuple key (1, 2) at output"),
    "bool key": ("return {True: 1}", "a bool key True at output"),
    "list cycle": ("x = []\nx.append(x)\nreturn x", "a reference cycle at output[0]"),
    "dict cycle": ("d = {}\nd['self'] = d\nreturn d", "a reference cycle at output['self']"),
    "mutual cycle": (
        "a = {}\nb = [a]\na['b'] = b\nreturn [a]",
        "a reference cycle at output[0]['b'][0]",
    ),
    "too deep": (
        "x = 1\nfor i in range(100):\n    x = [x]\nreturn x",
        "nesting deeper than 64 levels at output[0][0][0][…",
    ),
    "huge int": ("return 7 ** 10000", "integer with more than 4000 digits"),
    "NUL": ("return {'a': 'x\\x00y'}", "string with a NUL character"),
    "NUL in a key": ("return {'a\\x00': 1}", "key with a NUL character"),
    "lone surrogate": ("return '\\ud800'", "string with a lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
async def test_non_json_output_is_a_step_error(pool: SandboxPool, tenant: str, case: str) -> None:
    code, message = REFUSED[case]
    result = await assert_rejected(pool, code, tenant=tenant, contains=message)
    assert result.error is not None and result.error.startswith(NOT_JSON), result.error


async def test_output_too_large_is_refused_before_it_leaves_the_worker(
    pool: SandboxPool, tenant: str
) -> None:
    cap = pool.settings.max_output_bytes
    for code in (
        f"return 'x' * {cap}",
        f"return [0] * {cap // 2}",
        f"return {{str(i): i for i in range({cap // 8})}}",
    ):
        await assert_rejected(pool, code, tenant=tenant, contains="output is too large")


ACCEPTED = {
    "tuples become arrays": ("return (1, (2, 3))", [1, [2, 3]]),
    "unicode text": ("return {'é': '日本'}", {"é": "日本"}),
    "big but finite numbers": ("return [2 ** 60, 1e308, -0.0]", [2**60, 1e308, -0.0]),
    "the same list twice is no cycle": ("x = [1]\nreturn [x, x]", [[1], [1]]),
    "nesting at the cap": ("x = 1\nfor i in range(63):\n    x = [x]\nreturn x", None),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
async def test_plain_json_output_passes(pool: SandboxPool, tenant: str, case: str) -> None:
    code, expected = ACCEPTED[case]
    result = await pool.run(code, None, tenant=tenant)
    assert result.error is None, result.error
    if expected is not None:
        assert result.output == expected
    else:
        depth, value = 0, result.output
        while isinstance(value, list):
            depth, value = depth + 1, value[0]
        assert (depth, value) == (63, 1)


async def test_input_must_be_json_too(pool: SandboxPool, tenant: str) -> None:
    for value, message in (
        (float("nan"), "input is not JSON"),
        ({"k": b"x"}, "input is not JSON"),
        ("\ud800", "lone surrogate"),
    ):
        result = await pool.run("return input", value, tenant=tenant)
        assert result.error is not None and message in result.error, result.error
