"""A seccomp filter the worker installs on itself: no sockets, no new processes or programs,
no signals or tracing of other processes, no filesystem writes, no kernel administration.

Defence in depth behind the language layer and the unprivileged user: it is what still
holds if step code ever runs arbitrary Python (or machine code) in the worker.
"""

from __future__ import annotations

import ctypes
import errno
import os

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

OFFSET_NR = 0
OFFSET_ARCH = 4
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000  # O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND

DENIED = str.split(
    "socket socketpair connect bind listen accept accept4 "
    "fork vfork clone clone3 execve execveat "
    "ptrace process_vm_readv process_vm_writev kcmp pidfd_open pidfd_getfd pidfd_send_signal "
    "rt_sigqueueinfo rt_tgsigqueueinfo "
    "mount umount2 pivot_root chroot unshare setns open_tree move_mount fsopen fsconfig fsmount "
    "fspick mount_setattr "
    "setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid setfsgid capset "
    "keyctl add_key request_key bpf perf_event_open userfaultfd "
    "io_uring_setup io_uring_enter io_uring_register "
    "mknod mknodat link linkat symlink symlinkat unlink unlinkat rename renameat renameat2 "
    "mkdir mkdirat rmdir chmod fchmod fchmodat chown fchown lchown fchownat truncate ftruncate "
    "creat utime utimes utimensat futimesat memfd_create memfd_secret prctl seccomp "
    "open_by_handle_at name_to_handle_at openat2 "
    "init_module finit_module delete_module kexec_load kexec_file_load reboot swapon swapoff "
    "acct settimeofday clock_settime clock_adjtime adjtimex sethostname setdomainname iopl ioperm "
    "quotactl personality syslog vhangup "
    "setpriority sched_setaffinity sched_setscheduler sched_setparam sched_setattr ioprio_set "
    "migrate_pages move_pages mbind set_mempolicy process_madvise "
    "landlock_create_ruleset fanotify_init lookup_dcookie"
)

# (syscall, argument index, rule): "flags" denies write/create flags, "self" allows only our
# own pid, "zero" allows only 0 (the calling process).
CHECKED = (
    ("open", 1, "flags"),
    ("openat", 2, "flags"),
    ("kill", 0, "self"),
    ("tkill", 0, "self"),
    ("tgkill", 0, "self"),
    ("prlimit64", 0, "zero"),
)

# fmt: off
X86_64 = {
    "socket": 41, "socketpair": 53, "connect": 42, "bind": 49, "listen": 50, "accept": 43,
    "accept4": 288, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "execve": 59,
    "execveat": 322, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
    "kcmp": 312, "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424,
    "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "mount": 165, "umount2": 166,
    "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114,
    "setresuid": 117, "setresgid": 119, "setgroups": 116, "setfsuid": 122, "setfsgid": 123,
    "capset": 126, "keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "mknod": 133, "mknodat": 259, "link": 86, "linkat": 265,
    "symlink": 88, "symlinkat": 266, "unlink": 87, "unlinkat": 263, "rename": 82,
    "renameat": 264, "renameat2": 316, "mkdir": 83, "mkdirat": 258, "rmdir": 84, "chmod": 90,
    "fchmod": 91, "fchmodat": 268, "chown": 92, "fchown": 93, "lchown": 94, "fchownat": 260,
    "truncate": 76, "ftruncate": 77, "creat": 85, "utime": 132, "utimes": 235,
    "utimensat": 280, "futimesat": 261, "memfd_create": 319, "memfd_secret": 447,
    "prctl": 157, "seccomp": 317, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "openat2": 437, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "kexec_load": 246, "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168,
    "acct": 163, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
    "adjtimex": 159, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "quotactl": 179, "personality": 135, "syslog": 103, "vhangup": 153, "setpriority": 141,
    "sched_setaffinity": 203, "sched_setscheduler": 144, "sched_setparam": 142,
    "sched_setattr": 314, "ioprio_set": 251, "migrate_pages": 256, "move_pages": 279,
    "mbind": 237, "set_mempolicy": 238, "process_madvise": 440,
    "landlock_create_ruleset": 444, "fanotify_init": 300, "lookup_dcookie": 212,
    "kill": 62, "tkill": 200, "tgkill": 234, "prlimit64": 302, "open": 2, "openat": 257,
}

# The generic table (asm-generic/unistd.h) that arm64 uses; it has no legacy calls.
AARCH64 = {
    "socket": 198, "socketpair": 199, "connect": 203, "bind": 200, "listen": 201,
    "accept": 202, "accept4": 242, "clone": 220, "clone3": 435, "execve": 221,
    "execveat": 281, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
    "kcmp": 272, "pidfd_open": 434, "pidfd_getfd": 438, "pidfd_send_signal": 424,
    "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "mount": 40, "umount2": 39,
    "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "mount_setattr": 442, "setuid": 146, "setgid": 144, "setreuid": 145, "setregid": 143,
    "setresuid": 147, "setresgid": 149, "setgroups": 159, "setfsuid": 151, "setfsgid": 152,
    "capset": 91, "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
    "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "mknodat": 33, "linkat": 37, "symlinkat": 36, "unlinkat": 35,
    "renameat": 38, "renameat2": 276, "mkdirat": 34, "fchmod": 52, "fchmodat": 53,
    "fchown": 55, "fchownat": 54, "truncate": 45, "ftruncate": 46, "utimensat": 88,
    "memfd_create": 279, "memfd_secret": 447, "prctl": 167, "seccomp": 277,
    "name_to_handle_at": 264, "open_by_handle_at": 265, "openat2": 437, "init_module": 105,
    "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
    "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "settimeofday": 170,
    "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171, "sethostname": 161,
    "setdomainname": 162, "quotactl": 60, "personality": 92, "syslog": 116, "vhangup": 58,
    "setpriority": 140, "sched_setaffinity": 122, "sched_setscheduler": 119,
    "sched_setparam": 118, "sched_setattr": 274, "ioprio_set": 30, "migrate_pages": 238,
    "move_pages": 239, "mbind": 235, "set_mempolicy": 237, "process_madvise": 440,
    "landlock_create_ruleset": 444, "fanotify_init": 262, "lookup_dcookie": 18,
    "kill": 129, "tkill": 130, "tgkill": 131, "prlimit64": 261, "openat": 56,
}
# fmt: on

ARCHES = {"x86_64": (0xC000003E, X86_64), "aarch64": (0xC00000B7, AARCH64)}


class FilterError(Exception):
    """The filter cannot be built or installed on this machine."""


class _SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint),
    )


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter)))


Instruction = tuple[int, int | str, int | str, int]


def _arg_offset(index: int) -> int:
    # seccomp_data: nr (4), arch (4), instruction_pointer (8), args[6] (8 each); on the
    # little-endian machines we support the low 32 bits come first.
    return 16 + 8 * index


def _checked_block(nr: int, index: int, rule: str, pid: int) -> list[Instruction]:
    test: Instruction
    if rule == "flags":
        test = (JSET_K, "deny", "allow", WRITE_FLAGS)
    else:
        test = (JEQ_K, "allow", "deny", pid if rule == "self" else 0)
    return [(JEQ_K, 0, 2, nr), (LD_W_ABS, 0, 0, _arg_offset(index)), test]


def build(machine: str, pid: int) -> list[tuple[int, int, int, int]]:
    """The BPF program for `machine` as (code, jt, jf, k) tuples, jumps resolved."""
    if machine not in ARCHES:
        raise FilterError(f"no syscall table for {machine!r}; run with seccomp disabled")
    audit_arch, table = ARCHES[machine]
    program: list[Instruction] = [
        (LD_W_ABS, 0, 0, OFFSET_ARCH),
        (JEQ_K, 1, 0, audit_arch),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_W_ABS, 0, 0, OFFSET_NR),
    ]
    if machine == "x86_64":
        program.append((JGE_K, "deny", 0, 0x40000000))  # the x32 ABI
    program += [(JEQ_K, "deny", 0, table[name]) for name in DENIED if name in table]
    for name, index, rule in CHECKED:
        if name in table:
            program += _checked_block(table[name], index, rule, pid)
    program += [(RET_K, 0, 0, RET_ALLOW), (RET_K, 0, 0, RET_ERRNO | errno.EPERM)]
    return _resolve(program)


def _resolve(program: list[Instruction]) -> list[tuple[int, int, int, int]]:
    labels = {"allow": len(program) - 2, "deny": len(program) - 1}
    resolved = []
    for index, (code, jt, jf, k) in enumerate(program):
        jumps = [labels[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= j <= 255 for j in jumps):
            raise FilterError("seccomp program too long for 8-bit jumps")
        resolved.append((code, jumps[0], jumps[1], k))
    return resolved


def install(status_fd: int) -> None:
    """Install the filter on this (single-threaded) process for the rest of its life.
    `status_fd` is /proc/self/status, opened before the filesystem was closed off. The caller
    has set no_new_privs (confine.lock_down), which an unprivileged process needs for this."""
    program = build(os.uname().machine, os.getpid())
    filters = (_SockFilter * len(program))(*program)
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    libc = ctypes.CDLL(None, use_errno=True)
    # prctl is variadic and checks that unused arguments are zero: always pass all five.
    libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    libc.prctl.restype = ctypes.c_int
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise FilterError(
            f"installing the seccomp filter failed: {os.strerror(ctypes.get_errno())}"
        )
    if "Seccomp:\t2" not in _read_status(status_fd):
        raise FilterError("the kernel does not report the seccomp filter as active")


def _read_status(fd: int) -> str:
    # /proc files are generated afresh on each read from offset 0.
    return os.pread(fd, 1 << 16, 0).decode("ascii", "replace")
