"""One worker process seen from the engine: start it as a fresh interpreter, wait for its
"ready", hand it jobs under a wall-clock deadline, and kill its process group.

Workers are never forked from the engine's Python state: `python -I -S boot/worker_main.py`
is exec'd with an empty environment, only the three pipes, its own session and an empty,
unreadable working directory that is deleted as soon as the worker runs in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import RestrictedPython
import structlog

from engine.sandbox import errors, protocol
from engine.sandbox.settings import SandboxSettings

log = structlog.get_logger(__name__)

BOOT_DIR = Path(__file__).resolve().parent / "boot"
BOOT_SCRIPT = BOOT_DIR / "worker_main.py"
STDERR_TAIL_CHARS = 2000
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True, slots=True)
class Reply:
    """A run as the engine saw it; `kind` names the failure class ("" on success)."""

    output: Any
    error: str | None
    kind: str
    logs: str
    duration_ms: float
    cached: bool = False
    worker_died: bool = False


def peak_rss_kb(pid: int) -> int:
    """A live process's peak resident set (VmHWM), 0 where /proc cannot tell.

    Read by the engine, so a worker cannot under-report itself to dodge recycling."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _library_paths() -> list[str]:
    """Where RestrictedPython lives: the only non-stdlib import path a worker needs (workers
    run with -S, skipping site-packages processing and .pth hooks)."""
    return [str(Path(RestrictedPython.__file__).resolve().parents[1])]


def worker_config(settings: SandboxSettings, identity: tuple[int, int] | None) -> str:
    """The worker's whole configuration, passed on its command line (it reads no env)."""
    return json.dumps(
        {
            "sys_path": _library_paths(),
            "memory_mb": settings.memory_mb,
            "cpu_seconds": settings.cpu_seconds,
            "cpu_lifetime_s": settings.cpu_lifetime_seconds,
            "max_open_files": settings.max_open_files,
            "uid": identity[0] if identity else None,
            "gid": identity[1] if identity else None,
            "seccomp": settings.seccomp,
            "landlock": settings.landlock,
            "max_source_bytes": settings.max_source_bytes,
            "max_ast_nodes": settings.max_ast_nodes,
            "max_ast_depth": settings.max_ast_depth,
            "max_output_bytes": settings.max_output_bytes,
            "max_output_depth": settings.max_output_depth,
            "max_log_bytes": settings.max_log_bytes,
            "compile_cache_size": settings.compile_cache_size,
            "max_job_bytes": settings.max_job_bytes,
        },
        separators=(",", ":"),
    )


class WorkerProcess:
    """A started, self-tested worker. Serves one job at a time; one tenant once bound."""

    def __init__(self, process: asyncio.subprocess.Process, settings: SandboxSettings) -> None:
        self._process = process
        self._settings = settings
        self.pid = process.pid
        self.tenant: str | None = None
        self.runs = 0
        self.cpu_seconds = 0.0
        self.peak_rss_kb = 0
        self.boot_ms = 0.0
        self.landlock = 0
        """The Landlock ABI version the worker applied to itself, 0 for none."""
        self.last_used = time.monotonic()
        self._reaping: asyncio.Task[int | None] | None = None
        self._stderr = b""

    @classmethod
    async def spawn(
        cls,
        settings: SandboxSettings,
        identity: tuple[int, int] | None,
        script: Path = BOOT_SCRIPT,
    ) -> WorkerProcess:
        """Start a worker and wait for its "ready". Raises SandboxBootError."""
        started = time.perf_counter()
        # The working directory exists only while the worker starts: once it is exec'd
        # there, it is removed, so the worker's cwd is a deleted, empty directory and a
        # killed engine leaves nothing behind.
        workdir = tempfile.mkdtemp(prefix="portico-sandbox-")
        try:
            os.chmod(workdir, 0o100)  # enter only: nothing to list, nowhere to write
            process = await asyncio.create_subprocess_exec(
                settings.python_executable,
                "-I",
                "-S",
                str(script),
                worker_config(settings, identity),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env={},
                cwd=workdir,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as error:
            raise errors.SandboxBootError(
                f"cannot start {settings.python_executable!r}: {error.strerror or error}"
            ) from None
        finally:
            os.rmdir(workdir)
        worker = cls(process, settings)
        await worker._await_ready(identity)
        worker.boot_ms = (time.perf_counter() - started) * 1000
        return worker

    async def _await_ready(self, identity: tuple[int, int] | None) -> None:
        failure = None
        stdout = self._process.stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(self._settings.boot_timeout_ms / 1000):
                frame = await protocol.read_frame(stdout, 64 * 1024)
        except TimeoutError:
            failure = f"no ready signal within {self._settings.boot_timeout_ms} ms"
        except (asyncio.IncompleteReadError, protocol.FrameError) as error:
            failure = f"it ended before it was ready ({type(error).__name__})"
        else:
            if frame.get("ready") is not True:
                failure = str(frame.get("error") or "it reported a failed boot")
            elif identity is not None and frame.get("uid") != identity[0]:
                failure = f"it runs as uid {frame.get('uid')}, not the sandbox user {identity[0]}"
            landlock = frame.get("landlock")
            self.landlock = landlock if type(landlock) is int else 0
        if failure is not None:
            returncode = await self.kill()
            tail = await self.stderr_tail()
            detail = f"; worker stderr: {tail}" if tail and tail not in failure else ""
            raise errors.SandboxBootError(
                f"sandbox worker failed to boot (exit {returncode}): {failure}{detail}"
            )

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    async def run(self, job: bytes, timeout_ms: int) -> Reply:
        """Hand one job over and wait for its reply, at most `timeout_ms`; on a deadline,
        a crash or a broken reply the worker is killed (and must be discarded)."""
        self.runs += 1
        started = time.perf_counter()
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                stdin.write(job)
                await stdin.drain()
                frame = await protocol.read_frame(stdout, self._settings.max_reply_bytes)
            if frame.get("ok") is True:
                protocol.check_output(frame.get("output"), self._settings.max_output_depth)
        except TimeoutError:
            await self.kill()
            return self._failed(errors.timed_out(timeout_ms), "timeout", started)
        except (asyncio.IncompleteReadError, ConnectionError):
            returncode = await self.kill()
            message = errors.worker_died(
                returncode,
                self._settings.memory_mb,
                self._settings.cpu_seconds,
                await self.stderr_tail(),
            )
            return self._failed(message, "crash", started)
        except protocol.FrameError as error:
            await self.kill()
            return self._failed(errors.malformed_reply(str(error)), "crash", started)
        return self._reply(frame, started)

    def _failed(self, message: str, kind: str, started: float) -> Reply:
        duration = (time.perf_counter() - started) * 1000
        return Reply(None, message, kind, "", duration, worker_died=True)

    def _reply(self, frame: dict[str, Any], started: float) -> Reply:
        duration = (time.perf_counter() - started) * 1000
        self.cpu_seconds = float(frame.get("cpu_s") or 0.0)
        self.peak_rss_kb = peak_rss_kb(self.pid)
        self.last_used = time.monotonic()
        logs = protocol.clean_text(frame.get("logs"), self._settings.max_log_bytes + 200)
        cached = frame.get("cached") is True
        if frame.get("ok") is True:
            return Reply(frame.get("output"), None, "", logs, duration, cached)
        error = protocol.clean_text(frame.get("error"), MAX_ERROR_CHARS) or "the step failed"
        kind = protocol.clean_text(frame.get("kind"), 40) or "exception"
        return Reply(None, error, kind, logs, duration, cached)

    async def kill(self) -> int | None:
        """SIGKILL the worker's process group, drain its pipes and reap it. Idempotent, and
        safe to call from several coroutines at once (they share one reaping)."""
        if self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._reaping is None:
            self._reaping = asyncio.get_running_loop().create_task(self._reap())
        return await asyncio.shield(self._reaping)

    async def _reap(self) -> int | None:
        # asyncio's wait() returns only once every pipe has reached end of file, and it stops
        # reading a pipe whose buffer is full: a worker that filled stdout or stderr would
        # never be reaped. The worker is dead, so what is left in the pipes is bounded.
        _, self._stderr = await asyncio.gather(
            _drain(self._process.stdout, 0), _drain(self._process.stderr, STDERR_TAIL_CHARS)
        )
        return await self._process.wait()

    async def stderr_tail(self) -> str:
        """The end of what a dead worker wrote on stderr (boot and crash diagnostics)."""
        if self.alive:
            return ""
        await self.kill()
        return self._stderr.decode("utf-8", "replace").strip()[-STDERR_TAIL_CHARS:]


async def _drain(stream: asyncio.StreamReader | None, keep: int) -> bytes:
    """Read a dead worker's pipe to its end; the last `keep` bytes of it."""
    tail = b""
    if stream is None:
        return tail
    while chunk := await stream.read(65536):
        tail = (tail + chunk)[-keep:] if keep else tail
    return tail
