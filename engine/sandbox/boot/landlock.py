"""A Landlock ruleset the worker applies to itself: after boot it may read only the Python
library, the time zone database and its own /proc entry, and write nowhere.

Defence in depth behind the language layer and the unprivileged user: step code that ran
arbitrary Python still could not read a world-readable file (a `.env` next to the engine,
another process's command line). Needs Linux 5.13+; where the kernel lacks Landlock the
worker starts without it and says so in its "ready" frame.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

# Same numbers on x86_64 and aarch64 (the generic syscall table).
SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH = 1

READ_FILE = 1 << 2
READ_DIR = 1 << 3
# Rights of each ABI version: every one of them is handled (denied unless a rule allows it).
ABI_RIGHTS = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}

# Where the worker still reads after boot: lazily loaded library modules and codecs, time
# zones (zoneinfo, and glibc for local time), and randomness should getrandom() be missing.
TIME_ZONE_FILES = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo")
SINGLE_FILES = ("/etc/localtime", "/dev/urandom")


class LandlockError(Exception):
    """The ruleset could not be applied although the kernel supports Landlock."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = (("handled_access_fs", ctypes.c_uint64),)


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall(number: int, *args: object) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ctypes.set_errno(0)
    result = int(libc.syscall(ctypes.c_long(number), *args))
    if result < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where it has none (or it is disabled)."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    except OSError as error:
        if error.errno in (errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            return 0
        raise


def readable_paths() -> list[str]:
    """Every path the worker may still read, existing ones only."""
    candidates = [*sys.path, *TIME_ZONE_FILES, *SINGLE_FILES, f"/proc/{os.getpid()}"]
    return sorted({os.path.realpath(p) for p in candidates if p and os.path.exists(p)})


def _allow(ruleset: int, path: str) -> None:
    rights = READ_FILE | READ_DIR if os.path.isdir(path) else READ_FILE
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(rights, fd)
        _syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


def restrict() -> int:
    """Apply the ruleset to this process for good; its ABI version, 0 if unsupported.
    The caller must have set no_new_privs."""
    version = abi_version()
    if version == 0:
        return 0
    handled = ABI_RIGHTS[max(v for v in ABI_RIGHTS if v <= version)]
    attr = _RulesetAttr(handled)
    try:
        ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    except OSError as error:
        raise LandlockError(f"creating the Landlock ruleset failed: {error.strerror}") from None
    try:
        for path in readable_paths():
            _allow(ruleset, path)
        _syscall(SYS_RESTRICT_SELF, ruleset, 0)
    except OSError as error:
        raise LandlockError(f"applying the Landlock ruleset failed: {error.strerror}") from None
    finally:
        os.close(ruleset)
    return version
