"""The Python step contract (issue 2 §4): return value, print logs, facade imports, and every
error text a step author can meet. Real worker processes, one pool for the module."""

from __future__ import annotations

import pytest

from engine.sandbox.pool import SandboxPool
from tests.sandbox.helpers import assert_engine_alive, assert_rejected, pids_of

FACADE_CASES = {
    "json": (
        "import json\nreturn json.loads(json.dumps({'a': [1, 2]}, sort_keys=True))",
        {"a": [1, 2]},
    ),
    "math": (
        "import math\nreturn [math.floor(2.7), math.isqrt(17), round(math.pi, 2)]",
        [2, 4, 3.14],
    ),
    "re": ("import re\nreturn re.findall(r'\\d+', 'a1b22c333', re.IGNORECASE)", ["1", "22", "333"]),
    "datetime": (
        "from datetime import datetime, timedelta, timezone\n"
        "d = datetime(2024, 1, 31, tzinfo=timezone.utc) + timedelta(days=1)\n"
        "return [d.isoformat(), d.strftime('%A')]",
        ["2024-02-01T00:00:00+00:00", "Thursday"],
    ),
    "zoneinfo": (
        "from zoneinfo import ZoneInfo\nimport datetime\n"
        "d = datetime.datetime(2024, 7, 1, 12, tzinfo=ZoneInfo('Europe/Paris'))\n"
        "return d.utcoffset().total_seconds()",
        7200.0,
    ),
    "decimal": (
        "from decimal import Decimal, ROUND_HALF_UP\n"
        "return str((Decimal('1.005') * 2).quantize(Decimal('0.01'), ROUND_HALF_UP))",
        "2.01",
    ),
    "statistics": (
        "import statistics\nreturn [statistics.mean([1, 2, 3, 4]), statistics.median([3, 1, 2])]",
        [2.5, 2],
    ),
    "random": (
        "import random\nrandom.seed(7)\nx = [random.randint(1, 6) for _ in range(3)]\n"
        "random.seed(7)\nreturn x == [random.randint(1, 6) for _ in range(3)]",
        True,
    ),
    "itertools": (
        "import itertools\nreturn list(itertools.islice(itertools.count(5), 3))",
        [5, 6, 7],
    ),
    "functools": (
        "import functools\nreturn functools.reduce(lambda a, b: a * b, [1, 2, 3, 4])",
        24,
    ),
    "collections": (
        "from collections import Counter, defaultdict\n"
        "c = Counter('abracadabra')\nd = defaultdict(list)\nd['k'] = [1]\n"
        "return [c.most_common(1), dict(d)]",
        [[["a", 5]], {"k": [1]}],
    ),
    "string": ("import string\nreturn string.ascii_lowercase[:3] + string.digits[:2]", "abc01"),
    "textwrap": ("import textwrap\nreturn textwrap.wrap('aaa bbb ccc', 7)", ["aaa bbb", "ccc"]),
    "unicodedata": (
        "import unicodedata\nreturn unicodedata.normalize('NFC', 'e\\u0301')",
        "\u00e9",
    ),
    "html": ("import html\nreturn html.escape('<a href=\"x\">')", "&lt;a href=&quot;x&quot;&gt;"),
    "base64": ("import base64\nreturn base64.b64encode('hi'.encode()).decode()", "aGk="),
    "hashlib": ("import hashlib\nreturn hashlib.sha256(b'abc').hexdigest()[:12]", "ba7816bf8f01"),
    "hmac": ("import hmac\nreturn hmac.new(b'k', b'm', 'sha256').hexdigest()[:8]", "b60090e3"),
    "uuid": (
        "import uuid\nreturn [str(uuid.uuid5(uuid.NAMESPACE_DNS, 'a.io'))[:8], "
        "uuid.uuid4().version]",
        ["26ab0bde", 4],
    ),
    "urllib.parse": (
        "from urllib.parse import urlencode, urlparse\n"
        "return [urlencode({'q': 'a b'}), urlparse('https://x.io/p?q=1').netloc]",
        ["q=a+b", "x.io"],
    ),
    "csv": (
        "import csv\nrows = list(csv.DictReader('a,b\\n1,2\\n'.splitlines()))\n"
        "out = csv.TextBuffer()\ncsv.writer(out).writerow(['x', 'y z'])\n"
        "return [rows, out.getvalue()]",
        [[{"a": "1", "b": "2"}], "x,y z\r\n"],
    ),
}


async def test_returns_the_value_and_none_without_return(pool: SandboxPool, tenant: str) -> None:
    result = await pool.run("return {'got': input}", [1, "a"], tenant=tenant)
    assert (result.output, result.error) == ({"got": [1, "a"]}, None)
    result = await pool.run("x = 1", None, tenant=tenant)
    assert (result.output, result.error) == (None, None)


async def test_print_output_is_kept_including_nested_functions(
    pool: SandboxPool, tenant: str
) -> None:
    code = "def inner():\n    print('from inner')\nprint('a', 1, sep='-')\ninner()\nreturn 1"
    result = await pool.run(code, None, tenant=tenant)
    assert result.error is None
    assert result.logs == "a-1\nfrom inner\n"


async def test_print_output_is_capped(pool: SandboxPool, tenant: str) -> None:
    result = await pool.run(
        "for i in range(20000):\n    print('x' * 100)\nreturn 'done'", None, tenant=tenant
    )
    assert result.output == "done"
    assert len(result.logs.encode()) < pool.settings.max_log_bytes + 200
    assert "[print output truncated" in result.logs


@pytest.mark.parametrize("module", sorted(FACADE_CASES))
async def test_each_facade_imports_and_works(pool: SandboxPool, tenant: str, module: str) -> None:
    code, expected = FACADE_CASES[module]
    result = await pool.run(code, None, tenant=tenant)
    assert result.error is None, result.error
    assert result.output == expected


@pytest.mark.parametrize(
    "statement",
    [
        "import os",
        "import sys",
        "import subprocess",
        "import importlib",
        "import operator",
        "import typing",
        "import io",
        "from string import Formatter",
        "import urllib.request",
        "from . import json",
        "import ctypes",
    ],
)
async def test_other_imports_fail_listing_what_is_available(
    pool: SandboxPool, tenant: str, statement: str
) -> None:
    result = await assert_rejected(
        pool,
        f"{statement}\nreturn 1",
        tenant=tenant,
        contains="ImportError" if "Formatter" not in statement else "Formatter",
    )
    if "Formatter" not in statement and "from ." not in statement:
        assert "available modules: base64, collections, csv, datetime" in result.error
        assert "(line 1)" in result.error


async def test_syntax_error_names_its_line(pool: SandboxPool, tenant: str) -> None:
    result = await assert_rejected(
        pool, "x = 1\ny = (\nreturn x", tenant=tenant, contains="syntax error at line 2"
    )
    assert "never closed" in result.error


async def test_forbidden_construct_gives_restrictedpython_reason(
    pool: SandboxPool, tenant: str
) -> None:
    result = await assert_rejected(
        pool, "x = 1\nreturn input.__class__", tenant=tenant, contains="code not allowed: Line 2:"
    )
    assert '"__class__" is an invalid attribute name because it starts with "_"' in result.error
    await assert_rejected(
        pool, "class A:\n    pass", tenant=tenant, contains="class definitions are not allowed"
    )
    await assert_rejected(pool, "exec('1')", tenant=tenant, contains="Exec calls are not allowed")


async def test_exception_gives_type_message_and_line(pool: SandboxPool, tenant: str) -> None:
    code = (
        "def check(v):\n    if v < 0:\n        raise ValueError(f'negative: {v}')\n"
        "    return v\nreturn check(input)"
    )
    await assert_rejected(
        pool, code, value=-3, tenant=tenant, contains="ValueError: negative: -3 (line 3)"
    )
    await assert_rejected(
        pool, "d = {}\nreturn d['missing']", tenant=tenant, contains="KeyError: 'missing' (line 2)"
    )


async def test_timeout_text(pool: SandboxPool, tenant: str) -> None:
    await assert_rejected(
        pool,
        "while True:\n    pass",
        tenant=tenant,
        timeout_ms=250,
        contains="timed out after 250 ms",
    )


async def test_output_must_be_json(pool: SandboxPool, tenant: str) -> None:
    for code in ("return float('nan')", "return {1, 2}", "return b'x'", "return len"):
        await assert_rejected(pool, code, tenant=tenant, contains="output is not JSON: ")


async def test_compiled_code_is_cached_by_text(pool: SandboxPool, tenant: str) -> None:
    code = f"return '{tenant}'"
    await pool.run(code, None, tenant=tenant)
    hits = pool.stats().get("compile_cache_hits", 0)
    worker = pids_of(pool, tenant)
    result = await pool.run(code, None, tenant=tenant)
    assert result.output == tenant
    assert pids_of(pool, tenant) == worker, "the warm worker was not reused"
    assert pool.stats()["compile_cache_hits"] == hits + 1


async def test_timeouts_default_and_are_capped(pool: SandboxPool) -> None:
    settings = pool.settings
    assert settings.timeout_ms(None) == settings.default_timeout_ms
    assert settings.timeout_ms(10**9) == settings.max_timeout_ms
    assert settings.timeout_ms(1234) == 1234


async def test_bad_input_is_a_step_error_not_an_exception(pool: SandboxPool, tenant: str) -> None:
    result = await pool.run("return 1", {"x": {1, 2}}, tenant=tenant)
    assert result.error is not None and result.error.startswith("input is not JSON")
    result = await pool.run("return 1", "x" * (pool.settings.max_input_bytes + 1), tenant=tenant)
    assert result.error is not None and result.error.startswith("input is too large")
    await assert_engine_alive(pool, tenant)
