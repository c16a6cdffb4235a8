"""Engine-side hardening: the engine process made non-dumpable, and the sandbox user looked up.

A non-dumpable process's /proc/<pid>/{environ,mem} belong to root and it cannot be traced,
so a worker running as the engine's own user still cannot read the engine's secrets.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import sys

import structlog

log = structlog.get_logger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl(option: int, arg2: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    result = int(libc.prctl(option, arg2, 0, 0, 0))
    if result < 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")
    return result


def make_engine_non_dumpable() -> bool:
    """Mark this process non-dumpable (Linux). Idempotent; False where not supported."""
    if not sys.platform.startswith("linux"):
        log.warning("engine_dumpable_kept", reason="prctl is Linux-only", platform=sys.platform)
        return False
    if _prctl(PR_GET_DUMPABLE) != 0:
        _prctl(PR_SET_DUMPABLE, 0)
    return _prctl(PR_GET_DUMPABLE) == 0


def worker_identity(sandbox_user: str | None) -> tuple[int, int] | None:
    """(uid, gid) the workers drop to when the engine runs as root; None otherwise (workers
    then run as the engine's own user, shielded from it by the engine being non-dumpable).

    A root worker would keep the capabilities that read any process's memory, so root with
    no sandbox user is refused."""
    if os.geteuid() != 0:
        return None
    if not sandbox_user:
        raise ValueError(
            "the engine runs as root and sandbox_user is not set, so sandbox workers would run "
            "as root and could read the engine's memory; set PORTICO_SANDBOX__SANDBOX_USER to "
            "an unprivileged user (the default is nobody)"
        )
    try:
        entry = pwd.getpwnam(sandbox_user)
    except KeyError:
        raise LookupError(
            f"sandbox user {sandbox_user!r} does not exist; create it or set "
            "sandbox.sandbox_user to an existing unprivileged user"
        ) from None
    if entry.pw_uid == 0:
        raise ValueError(f"sandbox user {sandbox_user!r} is root; choose an unprivileged user")
    return entry.pw_uid, entry.pw_gid
