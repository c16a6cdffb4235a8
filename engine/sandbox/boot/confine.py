"""Process confinement applied by the worker to itself: rlimits first, then (after imports)
the drop to an unprivileged user, non-dumpable, the Landlock ruleset and the syscall filter.

Nothing here reads the environment: the engine passes every value on the command line.
"""

from __future__ import annotations

import ctypes
import os
import resource
from typing import Any

import landlock
import syscall_filter

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_NO_NEW_PRIVS = 38

MIB = 1024 * 1024


class ConfinementError(Exception):
    """The worker could not confine itself; it must not serve jobs."""


def apply_limits(config: dict[str, Any]) -> None:
    """Set every rlimit before the worker reads any job (soft = hard unless said otherwise)."""
    memory = int(config["memory_mb"]) * MIB
    cpu_hard = int(config["cpu_lifetime_s"])
    limits = {
        resource.RLIMIT_AS: (memory, memory),
        resource.RLIMIT_CPU: (min(int(config["cpu_seconds"]), cpu_hard), cpu_hard),
        resource.RLIMIT_NOFILE: (int(config["max_open_files"]),) * 2,
        resource.RLIMIT_FSIZE: (0, 0),
        resource.RLIMIT_CORE: (0, 0),
        resource.RLIMIT_NPROC: (0, 0),
        resource.RLIMIT_MEMLOCK: (0, 0),
    }
    for which, value in limits.items():
        resource.setrlimit(which, value)


def set_job_cpu_budget(seconds: int) -> None:
    """Let the next job use `seconds` of CPU on top of what this worker used so far.

    The soft limit can move up to the hard limit only; past the soft limit the kernel sends
    SIGXCPU, whose default action ends the worker.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + seconds if hard == resource.RLIM_INFINITY else min(used + seconds, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def isolate_stdio() -> tuple[int, int]:
    """Move the protocol pipes off fds 0 and 1 and point those at /dev/null, so stray writes
    to stdout can never corrupt a frame."""
    job_fd = os.dup(0)
    reply_fd = os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return job_fd, reply_fd


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg2: int = 0) -> int:
    libc = _libc()
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    result = libc.prctl(option, arg2, 0, 0, 0)
    if result < 0:
        raise ConfinementError(f"prctl({option}) failed: {os.strerror(ctypes.get_errno())}")
    return int(result)


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid for good (real, effective and saved ids) and prove there is no way back."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise ConfinementError("the worker did not drop to the sandbox user")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise ConfinementError("the worker could become root again after dropping privileges")


def set_non_dumpable() -> None:
    """Non-dumpable: no core files, and /proc/<pid>/{mem,environ} and ptrace are refused to
    every other process of the same user (other workers included)."""
    prctl(PR_SET_DUMPABLE, 0)
    if prctl(PR_GET_DUMPABLE) != 0:
        raise ConfinementError("the worker is still dumpable")


def lock_down(config: dict[str, Any]) -> int:
    """Everything after the imports: user drop, non-dumpable, the filesystem closed off,
    syscall filter (in that order: each step forbids what the ones before it need).
    Returns the Landlock ABI version applied, 0 for none."""
    uid, gid = config.get("uid"), config.get("gid")
    if uid is not None and os.getuid() == 0:
        drop_privileges(int(uid), int(gid if gid is not None else uid))
    elif uid is not None and os.getuid() != int(uid):
        raise ConfinementError(f"the worker runs as uid {os.getuid()}, expected {uid}")
    set_non_dumpable()
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # no setuid programs, and what Landlock requires
    status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    try:
        version = landlock.restrict() if config.get("landlock", True) else 0
        if config.get("seccomp", True):
            syscall_filter.install(status_fd)
    finally:
        os.close(status_fd)
    return version
