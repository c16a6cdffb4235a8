"""Security class "secrets": with the engine's environment holding a fake service-role key,
provider keys and a database password, no step obtains them by any route: not through the
language layer (os, open, facades), and not even with plain Python inside a worker (its own
environment and memory, /proc/self/environ, /proc/<engine pid>/environ and mem, the
engine's memory, inherited file descriptors). Real worker processes throughout."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from engine.sandbox.pool import SandboxPool
from engine.sandbox.settings import SandboxSettings
from tests.sandbox.escape import Escapes, escapes
from tests.sandbox.helpers import assert_no_secret, assert_rejected

PREFIX = "portico-fake-secret-"
NAMES = (
    "SUPABASE_SERVICE_ROLE_KEY",
    "PORTICO_SERVICE_ROLE_KEY",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
)


@pytest.fixture(scope="module")
def secrets() -> Iterator[dict[str, str]]:
    """Fake secrets in the engine's own environment, as in production, for this module."""
    values = {name: PREFIX + uuid.uuid4().hex for name in NAMES}
    values["DATABASE_URL"] = f"postgresql://postgres:{PREFIX}{uuid.uuid4().hex}@db:5432/postgres"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield values


def suffixes(secrets: dict[str, str]) -> list[str]:
    """What follows the prefix in each secret (hex): what a memory scan must never find."""
    return [value.split(PREFIX, 1)[1][:32].encode().hex() for value in secrets.values()]


@pytest_asyncio.fixture(scope="module")
async def pool(secrets: dict[str, str]) -> AsyncIterator[SandboxPool]:
    """A pool started only after the secrets are in the environment."""
    sandbox = SandboxPool(SandboxSettings(pool_size=2))
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.close()


@pytest_asyncio.fixture
async def escaped(secrets: dict[str, str]) -> AsyncIterator[Escapes]:
    async with escapes() as started:
        yield started


ROUTES = {
    "os.environ": ("import os\nreturn dict(os.environ)", "ImportError"),
    "posix": ("import posix\nreturn posix.environ", "ImportError"),
    "open": ("return open('/proc/self/environ').read()", "NameError"),
    "subprocess": ("import subprocess\nreturn subprocess.getoutput('env')", "ImportError"),
    "importlib": ("import importlib\nreturn importlib.import_module('os').environ", "ImportError"),
    "builtins": (
        "import builtins\nreturn builtins.open('/proc/1/environ').read()",
        "code not allowed",
    ),
    "dunder import": ("return __import__('os').environ", "code not allowed"),
    "facade globals": ("import json\nreturn json.loads.__globals__", "code not allowed"),
    "zoneinfo path": (
        "import zoneinfo\nreturn zoneinfo.ZoneInfo('/proc/self/environ').key",
        "ValueError",
    ),
    "zoneinfo traversal": (
        "import zoneinfo\nreturn zoneinfo.ZoneInfo('../../../proc/self/environ').key",
        "ValueError",
    ),
    "csv of a file": (
        "import csv\nreturn list(csv.reader(open('/proc/self/environ')))",
        "NameError",
    ),
    "exception of a facade": (
        "import json\ntry:\n    json.environ\n"
        "except AttributeError as e:\n    return e.obj.environ",
        "AttributeError",
    ),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_no_language_layer_route_reaches_the_environment(
    pool: SandboxPool, tenant: str, secrets: dict[str, str], route: str
) -> None:
    code, error = ROUTES[route]
    result = await assert_rejected(pool, code, tenant=tenant, contains=error)
    assert_no_secret(result, *secrets.values())


async def test_an_escaped_step_finds_no_secret_in_its_environment_or_arguments(
    escaped: Escapes, secrets: dict[str, str]
) -> None:
    worker = await escaped.start()
    found = await escaped.output(
        worker,
        "import os, sys\n"
        "result = {'environ': dict(os.environ), 'argv': sys.argv}\n"
        "for path in ('/proc/self/environ', '/proc/self/cmdline'):\n"
        "    try:\n"
        "        result[path] = open(path, 'rb').read().replace(b'\\0', b' ').decode()\n"
        "    except OSError as error:\n"
        "        result[path] = repr(error)\n",
    )
    text = repr(found)
    for secret in secrets.values():
        assert secret not in text
    assert "environ" in found and found["environ"] in ({}, {"LC_CTYPE": "C.UTF-8"})


async def test_an_escaped_step_cannot_read_the_engine_s_environment_or_memory(
    escaped: Escapes, secrets: dict[str, str]
) -> None:
    assert os.environ["SUPABASE_SERVICE_ROLE_KEY"] == secrets["SUPABASE_SERVICE_ROLE_KEY"]
    worker = await escaped.start()
    found = await escaped.output(
        worker,
        "import ctypes, errno, os\n"
        "pid = os.getppid()\n"
        "result = {'engine': pid}\n"
        "for name in ('environ', 'mem', 'maps', 'stack', 'syscall', 'auxv', 'fd/3'):\n"
        "    try:\n"
        "        result[name] = open(f'/proc/{pid}/{name}', 'rb').read(65536).decode('latin-1')\n"
        "    except OSError as error:\n"
        "        result[name] = errno.errorcode[error.errno]\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "buffer = ctypes.create_string_buffer(4096)\n"
        "local = (ctypes.c_void_p * 2)(ctypes.addressof(buffer), 4096)\n"
        "remote = (ctypes.c_void_p * 2)(0x400000, 4096)\n"
        "got = libc.process_vm_readv(pid, local, 1, remote, 1, 0)\n"
        "result['vm_readv'] = errno.errorcode[ctypes.get_errno()] if got < 0 else 'read'\n",
    )
    assert found["engine"] == os.getpid()
    for name in ("environ", "mem", "maps", "stack", "syscall", "auxv", "fd/3"):
        assert found[name] == "EACCES", (name, found[name][:200])
    assert found["vm_readv"] == "EPERM"
    for secret in secrets.values():
        assert secret not in repr(found)


SCAN = """
import ctypes
prefix = input["prefix"].encode()
result = []
for line in open("/proc/self/maps"):
    fields = line.split()
    start, end = (int(part, 16) for part in fields[0].split("-"))
    name = fields[5] if len(fields) > 5 else ""
    if not fields[1].startswith("r") or name.startswith(("[vvar", "[vsyscall")):
        continue
    data = ctypes.string_at(start, end - start)
    at = data.find(prefix)
    while at != -1 and len(result) < 2000:
        result.append(data[at + len(prefix) : at + len(prefix) + 32].hex())
        at = data.find(prefix, at + 1)
"""


async def test_a_worker_s_own_memory_holds_no_copy_of_the_secrets(
    escaped: Escapes, secrets: dict[str, str]
) -> None:
    """Workers are exec'd, never forked: nothing of the engine's heap or environment is in
    their address space. The planted value proves the scan sees what is there."""
    planted = uuid.uuid4().hex
    worker = await escaped.start()
    found = await escaped.output(worker, SCAN, {"prefix": PREFIX, "planted": PREFIX + planted})
    planted_hex = planted.encode().hex()
    assert any(item.startswith(planted_hex) for item in found), "the scan missed the planted value"
    for suffix in suffixes(secrets):
        assert not any(item.startswith(suffix) for item in found)


async def test_a_pool_worker_s_memory_holds_no_secret_after_serving_steps(
    pool: SandboxPool, tenant: str, escaped: Escapes, secrets: dict[str, str]
) -> None:
    """The engine ran real steps for a tenant; the words the steps saw are only theirs."""
    result = await pool.run("return {'seen': input}", {"order": 42}, tenant=tenant)
    assert result.output == {"seen": {"order": 42}}
    assert_no_secret(result, *secrets.values())
    worker = await escaped.start()
    found = await escaped.output(worker, SCAN, {"prefix": PREFIX, "planted": ""})
    for suffix in suffixes(secrets):
        assert not any(item.startswith(suffix) for item in found)


async def test_no_descriptor_of_the_engine_is_inherited(
    escaped: Escapes, secrets: dict[str, str], tmp_path: Path
) -> None:
    secret = secrets["OPENAI_API_KEY"]
    secret_file = tmp_path / "keys"
    secret_file.write_text(secret)
    file_fd = os.open(secret_file, os.O_RDONLY)
    ours, theirs = socket.socketpair()
    try:
        # Deliberately inheritable: only close_fds stands between them and the worker.
        os.set_inheritable(file_fd, True)
        theirs.set_inheritable(True)
        ours.sendall(secret.encode())
        worker = await escaped.start()
        targets = await escaped.output(
            worker,
            "import os\n"
            "result = {}\n"
            "for name in os.listdir('/proc/self/fd'):\n"
            "    try:\n"
            "        result[name] = os.readlink(f'/proc/self/fd/{name}')\n"
            "    except OSError:\n"
            "        pass  # the descriptor listdir used, closed by now\n",
        )
    finally:
        os.close(file_fd)
        ours.close()
        theirs.close()
    kinds = sorted("pipe" if t.startswith("pipe:") else t for t in targets.values())
    # stdin and stdout on /dev/null; the job, reply and stderr pipes; nothing else.
    assert kinds == ["/dev/null", "/dev/null", "pipe", "pipe", "pipe"], targets


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a sandbox user distinct from the engine's")
async def test_files_only_the_engine_s_user_may_read_stay_unreadable(
    escaped: Escapes, secrets: dict[str, str]
) -> None:
    directory = tempfile.mkdtemp(prefix="portico-keys-")
    os.chmod(directory, 0o755)  # noqa: S103 - the sandbox user may enter, not read the key
    path = Path(directory) / "service-role.key"
    try:
        path.write_text(secrets["SUPABASE_SERVICE_ROLE_KEY"])
        path.chmod(0o600)
        worker = await escaped.start()
        reply = await escaped.run(worker, "result = open(input, 'r').read()", str(path))
    finally:
        path.unlink()
        os.rmdir(directory)
    assert reply.error is not None and "PermissionError" in reply.error
    assert secrets["SUPABASE_SERVICE_ROLE_KEY"] not in repr(reply)
