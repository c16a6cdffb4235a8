"""Security class "process layer": how a worker is started and confined, and how every way a
worker can end maps to a step error with the worker replaced. Most cases run an *escaped*
worker (real boot and confinement, then plain Python; see escape.py), because the process
boundary must hold even when the language layer does not. Real processes throughout."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.sandbox import errors
from engine.sandbox.hardening import PR_GET_DUMPABLE, _prctl
from engine.sandbox.pool import SandboxPool
from engine.sandbox.process import BOOT_SCRIPT, WorkerProcess
from engine.sandbox.settings import SandboxSettings
from tests.sandbox.escape import Escapes, escapes
from tests.sandbox.helpers import (
    assert_engine_alive,
    assert_worker_gone,
    pids_of,
    proc_file,
    process_exists,
)
from tests.support.waiting import wait_for

AS_ROOT = os.geteuid() == 0
LIBC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)

def errno_of(call, *args):
    ctypes.set_errno(0)
    returned = call(*args)
    return 0 if returned >= 0 else ctypes.get_errno()
"""


async def test_an_escaped_step_finds_a_fresh_isolated_unprivileged_interpreter(
    escaped: Escapes,
) -> None:
    worker = await escaped.start()
    facts = await escaped.output(
        worker,
        "import sys, os\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "result = {'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site,\n"
        "    'env': dict(os.environ), 'ppid': os.getppid(), 'uid': os.getuid(),\n"
        "    'groups': os.getgroups(), 'sid': os.getsid(0), 'pid': os.getpid(),\n"
        "    'cap_eff': status['CapEff'].strip(), 'cap_prm': status['CapPrm'].strip(),\n"
        "    'no_new_privs': status['NoNewPrivs'].strip(), 'seccomp': status['Seccomp'].strip(),\n"
        "    'cwd': os.readlink('/proc/self/cwd')}\n"
        "try:\n"
        "    result['listing'] = os.listdir('.')\n"
        "except OSError as error:\n"
        "    result['listing'] = error.errno\n",
    )
    assert facts["isolated"] == 1 and facts["no_site"] == 1
    # Python's own locale coercion (PEP 538) is the only variable a worker has.
    assert facts["env"] in ({}, {"LC_CTYPE": "C.UTF-8"})
    assert facts["ppid"] == os.getpid(), "workers are started by the engine itself"
    assert facts["sid"] == facts["pid"], "a worker leads its own session and process group"
    assert facts["no_new_privs"] == "1" and facts["seccomp"] == "2"
    assert facts["cap_eff"] == facts["cap_prm"] == "0000000000000000"
    if AS_ROOT:
        assert facts["uid"] != 0 and facts["groups"] == []
    # Its working directory was removed once it started: nothing to list or write there.
    assert facts["cwd"].endswith("(deleted)") and facts["listing"] in (errno.ENOENT, errno.EACCES)
    workdir = facts["cwd"].removesuffix(" (deleted)")
    assert os.path.basename(workdir) not in os.listdir(os.path.dirname(workdir))


async def test_workers_are_exec_d_from_the_boot_directory_not_forked(pool: SandboxPool) -> None:
    pid = pool.workers()[0].pid
    argv = proc_file(pid, "cmdline").split(b"\0")
    assert argv[1:4] == [b"-I", b"-S", str(BOOT_SCRIPT).encode()]
    # Nothing else sits next to the boot modules that a worker could import by accident.
    boot_files = [entry for entry in os.scandir(BOOT_SCRIPT.parent) if entry.is_file()]
    assert {os.path.splitext(entry.name)[1] for entry in boot_files} == {".py"}
    assert os.getsid(pid) == pid and os.getpgid(pid) == pid


async def test_limits_are_in_place_before_the_first_job(pool: SandboxPool) -> None:
    settings = pool.settings
    idle = [w.pid for w in pool.workers() if w.tenant is None and w.runs == 0]
    assert idle, "the pool keeps never-used workers"
    limits = proc_file(idle[0], "limits").decode()

    def limit(name: str) -> list[str]:
        line = next(line for line in limits.splitlines() if line.startswith(name))
        return line[len(name) :].split()[:2]

    memory = str(settings.memory_mb * 1024 * 1024)
    assert limit("Max address space") == [memory, memory]
    assert limit("Max file size") == ["0", "0"]
    assert limit("Max core file size") == ["0", "0"]
    assert limit("Max processes") == ["0", "0"]
    assert limit("Max open files") == [str(settings.max_open_files)] * 2
    assert limit("Max cpu time")[1] == str(settings.cpu_lifetime_seconds)


async def test_an_escaped_step_cannot_start_processes_open_sockets_or_write_files(
    escaped: Escapes,
) -> None:
    worker = await escaped.start()
    code = LIBC + (
        "import errno\n"
        "result = {}\n"
        "for name, call in [('fork', os.fork), ('exec', lambda: os.execv('/bin/sh', ['sh'])),\n"
        "        ('write', lambda: open('/tmp/portico-escaped', 'w')),\n"
        "        ('mkdir', lambda: os.mkdir('/tmp/portico-escaped-dir'))]:\n"
        "    try:\n"
        "        call()\n"
        "        result[name] = 'allowed'\n"
        "    except OSError as error:\n"
        "        result[name] = errno.errorcode[error.errno]\n"
        "result['socket'] = errno.errorcode.get(errno_of(libc.socket, 2, 1, 0), 'allowed')\n"
        "result['unix socket'] = errno.errorcode.get(errno_of(libc.socket, 1, 1, 0), 'allowed')\n"
    )
    result = await escaped.output(worker, code)
    assert result == dict.fromkeys(
        ("fork", "exec", "write", "mkdir", "socket", "unix socket"), "EPERM"
    )
    assert "portico-escaped" not in os.listdir("/tmp")


async def test_an_escaped_step_cannot_signal_trace_or_read_the_engine_or_other_workers(
    escaped: Escapes,
) -> None:
    worker, other = await escaped.start(), await escaped.start()
    code = LIBC + (
        "import errno\n"
        "result = {}\n"
        "for who, pid in (('engine', input['engine']), ('other', input['other'])):\n"
        "    result[who + ' kill'] = errno.errorcode.get(errno_of(libc.kill, pid, 0), 'ok')\n"
        "    result[who + ' ptrace'] = errno.errorcode.get(\n"
        "        errno_of(libc.ptrace, 16, pid, None, None), 'ok')\n"
        "    local = ctypes.create_string_buffer(8)\n"
        "    iovec = (ctypes.c_void_p * 2)(ctypes.addressof(local), 8)\n"
        "    remote = (ctypes.c_void_p * 2)(4096, 8)\n"
        "    result[who + ' vm_readv'] = errno.errorcode.get(errno_of(\n"
        "        libc.process_vm_readv, pid, iovec, 1, remote, 1, 0), 'ok')\n"
        "    for name in ('mem', 'environ', 'maps', 'fd/0'):\n"
        "        try:\n"
        "            open(f'/proc/{pid}/{name}', 'rb').read(1)\n"
        "            result[f'{who} {name}'] = 'read'\n"
        "        except OSError as error:\n"
        "            result[f'{who} {name}'] = errno.errorcode[error.errno]\n"
    )
    result = await escaped.output(worker, code, {"engine": os.getpid(), "other": other.pid})
    for who in ("engine", "other"):
        assert result[f"{who} kill"] == "EPERM"
        assert result[f"{who} ptrace"] == "EPERM"
        assert result[f"{who} vm_readv"] == "EPERM"
        for name in ("mem", "environ", "maps", "fd/0"):
            assert result[f"{who} {name}"] == "EACCES", (who, name, result)
    assert other.alive


PROJECT_FILE = str(Path(__file__).resolve().parents[2] / "pyproject.toml")
READ_ATTEMPTS = """
import errno, os
result = {}
for name, path in input.items():
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, 'rb') as opened:
                opened.read(1)
        result[name] = 'read'
    except OSError as error:
        result[name] = errno.errorcode[error.errno]
"""


@pytest.fixture
def world_readable_secret() -> Iterator[str]:
    """A `.env`-like file any user may read, as an engine's deployment might leave one."""
    folder = tempfile.mkdtemp(prefix="portico-landlock-")
    path = os.path.join(folder, "app.env")
    with open(path, "w") as secret:
        secret.write("SUPABASE_SERVICE_ROLE_KEY=fake\n")
    os.chmod(folder, 0o755)  # noqa: S103 - readable by all on purpose
    os.chmod(path, 0o644)
    try:
        yield path
    finally:
        shutil.rmtree(folder)


async def test_an_escaped_step_reads_nothing_outside_the_python_library(
    world_readable_secret: str,
) -> None:
    """Landlock holds where the user drop alone cannot: world-readable files stay shut. The
    same reads from a worker started without Landlock succeed, so the test can tell."""
    targets = {
        "env file": world_readable_secret,
        "passwd": "/etc/passwd",
        "engine cmdline": f"/proc/{os.getpid()}/cmdline",
        "root listing": "/",
        "project": PROJECT_FILE,
    }
    async with escapes(SandboxSettings(pool_size=1, landlock=False)) as unconfined:
        plain = await unconfined.output(await unconfined.start(), READ_ATTEMPTS, targets)
    assert plain["env file"] == plain["passwd"] == plain["root listing"] == "read"
    async with escapes() as confined:
        worker = await confined.start()
        if not worker.landlock:
            pytest.skip("this kernel has no Landlock (Linux 5.13+), so the layer is absent")
        result = await confined.output(worker, READ_ATTEMPTS, targets)
        assert result == dict.fromkeys(targets, "EACCES")
        # What a worker still reads: its own /proc entry and the time zone database.
        own = await confined.output(
            worker,
            "result = [len(open(path, 'rb').read()) > 0 for path in input]",
            ["/proc/self/status", "/usr/share/zoneinfo/UTC"],
        )
        assert own == [True, True]


async def test_engine_and_workers_are_non_dumpable(pool: SandboxPool) -> None:
    assert _prctl(PR_GET_DUMPABLE) == 0, "the engine must be non-dumpable once the pool runs"
    pid = pool.workers()[0].pid
    # A non-dumpable process's /proc files belong to root, whatever user it runs as.
    assert os.stat(f"/proc/{pid}/environ").st_uid == 0
    status = proc_file(pid, "status").decode()
    uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
    if AS_ROOT:
        assert uid != "0"


@pytest.mark.skipif(not AS_ROOT, reason="the root-only rule needs the engine to run as root")
@pytest.mark.parametrize(("user", "message"), [(None, "sandbox_user is not set"), ("root", "root")])
async def test_a_root_engine_never_starts_root_workers(user: str | None, message: str) -> None:
    sandbox = SandboxPool(SandboxSettings(pool_size=1, sandbox_user=user))
    with pytest.raises(errors.SandboxBootError, match=message):
        await sandbox.start()
    await sandbox.close()


async def test_a_timeout_kills_the_worker_and_the_pool_replaces_it(
    pool: SandboxPool, tenant: str
) -> None:
    await assert_engine_alive(pool, tenant)
    (pid,) = pids_of(pool, tenant)
    result = await pool.run("while True:\n    pass", None, tenant=tenant, timeout_ms=300)
    assert result.error == "timed out after 300 ms"
    await assert_worker_gone(pid)
    await assert_engine_alive(pool, tenant)
    assert pids_of(pool, tenant) - {pid}


async def test_the_cpu_limit_stops_a_step_the_deadline_has_not() -> None:
    sandbox = SandboxPool(SandboxSettings(pool_size=1, cpu_seconds=1, default_timeout_ms=20_000))
    await sandbox.start()
    try:
        result = await sandbox.run("while True:\n    pass", None, tenant="cpu")
        assert result.error is not None and result.error.startswith("CPU limit exceeded"), result
        assert not pids_of(sandbox, "cpu")
        await assert_engine_alive(sandbox, "cpu")
    finally:
        await sandbox.close()


async def test_a_worker_killed_from_outside_is_a_crash_never_a_success(
    pool: SandboxPool, tenant: str
) -> None:
    running = asyncio.ensure_future(
        pool.run("while True:\n    pass", None, tenant=tenant, timeout_ms=20_000)
    )

    async def busy_worker() -> int | None:
        return next((w.pid for w in pool.workers() if w.tenant == tenant and w.busy), None)

    pid = await wait_for(busy_worker, timeout=10, what="the step to be running")
    os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    result = await asyncio.wait_for(running, 10)
    assert result.output is None
    assert result.error is not None and "crashed: it was killed by SIGKILL" in result.error
    await assert_worker_gone(pid)
    await assert_engine_alive(pool, tenant)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("os._exit(0)", "crashed: it exited with code 0"),
        ("os._exit(3)", "crashed: it exited with code 3"),
        ("import ctypes\nctypes.string_at(0)", "crashed: it was killed by SIGSEGV"),
        ("os.close(reply_fd)\nimport time\ntime.sleep(60)", "crashed: it was killed by SIGKILL"),
    ],
)
async def test_a_worker_that_dies_mid_step_is_a_crash(
    escaped: Escapes, code: str, message: str
) -> None:
    worker = await escaped.start()
    reply = await escaped.run(worker, "import os\n" + code)
    assert reply.worker_died and reply.output is None
    assert reply.error is not None and message in reply.error, reply.error
    assert not worker.alive


RAW_REPLIES = {
    "not JSON": b"\x00\x00\x00\x05hello",
    "NaN": b'\x00\x00\x00\x18{"ok":true,"output":NaN}',
    "not an object": b"\x00\x00\x00\x02[]",
    "over the cap": b"\x7f\xff\xff\xff",
    "NUL in output": b'\x00\x00\x00\x1e{"ok":true,"output":"a\\u0000"}',
    "lone surrogate": b'\x00\x00\x00\x1d{"ok":true,"output":"\\ud800"}',
    "too deep": b"",  # built below
}


@pytest.mark.parametrize("case", sorted(RAW_REPLIES))
async def test_a_compromised_worker_s_malformed_reply_is_a_crash(
    escaped: Escapes, case: str
) -> None:
    raw = RAW_REPLIES[case]
    if case == "too deep":
        body = b'{"ok":true,"output":' + b"[" * 100 + b"]" * 100 + b"}"
        raw = len(body).to_bytes(4, "big") + body
    elif raw[:4] != b"\x7f\xff\xff\xff":
        assert int.from_bytes(raw[:4], "big") == len(raw) - 4, "test frame length is wrong"
    worker = await escaped.start()
    code = f"import os\nos.write(reply_fd, {raw!r})\nimport time\ntime.sleep(60)"
    reply = await escaped.run(worker, code)
    assert reply.worker_died and reply.output is None
    assert reply.error is not None and "malformed reply" in reply.error, reply.error
    assert not worker.alive


@pytest.mark.parametrize(
    "code",
    [
        "os.write(2, b'x' * 65536 * 8)",  # stderr fills, the worker blocks on it
        "os.write(reply_fd, (1 << 20).to_bytes(4, 'big') + b' ' * (1 << 20))",
        "os.write(reply_fd, (1 << 20).to_bytes(4, 'big') + b' ' * 1000)\nos.write(2, b'x' * 10**6)",
    ],
)
async def test_a_worker_flooding_its_pipes_is_still_reaped(escaped: Escapes, code: str) -> None:
    worker = await escaped.start()
    reply = await asyncio.wait_for(
        escaped.run(worker, f"import os\n{code}\nimport time\ntime.sleep(60)", timeout_ms=500),
        timeout=15,
    )
    assert reply.worker_died and reply.output is None
    assert not worker.alive and not process_exists(worker.pid)


MISWIRINGS = {
    "a module in a facade": (
        "import facades, os\nfacades.STATIC['json']['os'] = os",
        "is a module",
    ),
    "the real getattr": (
        "import namespace\nnamespace.BASE_BUILTINS['getattr'] = getattr",
        "builtin getattr is exposed",
    ),
    "a no-op write guard": (
        "import guards\nguards.HOOKS['_write_'] = lambda o: o",
        "hook _write_ is not Portico's",
    ),
    "a frame in a facade": (
        "import facades, sys\nfacades.STATIC['math']['here'] = sys._getframe()",
        "is a frame",
    ),
    "shared state in a facade": (
        "import facades\nfacades.STATIC['json']['cache'] = []",
        "shared by every run",
    ),
    "an operator function in a facade": (
        "import facades, operator\nfacades.STATIC['json']['getter'] = operator.attrgetter('x')",
        "from the operator module",
    ),
    "string.Formatter in a facade": (
        "import facades, string\nfacades.STATIC['string']['Formatter'] = string.Formatter",
        "string.Formatter",
    ),
    "the type builtin": (
        "import namespace\nnamespace.BASE_BUILTINS['type'] = type",
        "builtin type is exposed",
    ),
}


def wrapped_boot(setup: str) -> str:
    """A boot script that runs `setup` on the boot modules, then the real worker_main."""
    return (
        "import json, sys\n"
        f"sys.path.insert(0, {str(BOOT_SCRIPT.parent)!r})\n"
        "sys.path.extend(json.loads(sys.argv[1])['sys_path'])\n"
        f"{setup}\nimport worker_main\nworker_main.main()\n"
    )


@pytest.mark.parametrize("case", sorted(MISWIRINGS))
async def test_a_miswired_worker_refuses_to_start(
    escaped: Escapes, tmp_path: Path, case: str
) -> None:
    setup, message = MISWIRINGS[case]
    script = tmp_path / "miswired_worker.py"
    script.write_text(wrapped_boot(setup))
    with pytest.raises(errors.SandboxBootError, match="sandbox self-test failed") as failure:
        await escaped.start(script)
    assert message in str(failure.value)


async def test_a_healthy_boot_passes_the_same_self_test(escaped: Escapes, tmp_path: Path) -> None:
    """The control for the miswired cases: the same wrapper, nothing changed, boots."""
    script = tmp_path / "wrapped_worker.py"
    script.write_text(wrapped_boot(""))
    worker = await escaped.start(script)
    assert isinstance(worker, WorkerProcess) and worker.alive
