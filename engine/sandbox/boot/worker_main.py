"""Sandbox worker entry point, started by the engine as `python -I -S worker_main.py CONFIG`.

Order matters: rlimits first; then the imports (while the interpreter can still read its own
files); then the drop to the sandbox user, non-dumpable, the Landlock ruleset and the syscall
filter; then the self-test. Only then "ready", and only then jobs.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

EXIT_BOOT_FAILED = 3
EXIT_PROTOCOL_ERROR = 4
# Codecs are found by importing encodings.* on first use, which the sandbox user may not be
# able to do: look up the common ones while still able to.
WARM_CODECS = str.split(
    "utf-8 utf-8-sig utf-16 utf-16-le utf-16-be utf-32 utf-32-le utf-32-be latin-1 ascii "
    "cp1252 cp437 iso8859-15 mac-roman idna punycode unicode-escape raw-unicode-escape utf-7"
)


def _warm_up() -> None:
    """Import what the facades load lazily (strptime, heapq for Counter.most_common,
    ipaddress for bracketed URL hosts, codecs)."""
    import _strptime  # noqa: F401
    import codecs
    import heapq  # noqa: F401
    import ipaddress  # noqa: F401
    import warnings

    for name in WARM_CODECS:
        codecs.lookup(name)
    warnings.simplefilter("ignore")
    # Errors Python cannot raise anywhere (a generator whose cleanup raises, collected later)
    # are printed on stderr, which the engine reads only once a worker is dead: a step could
    # fill that pipe and block its worker. Step code must never reach stderr.
    sys.unraisablehook = _ignore_unraisable


def _ignore_unraisable(unraisable: Any) -> None:
    """Drop an unraisable exception (see _warm_up)."""


def _boot(config: dict[str, Any]) -> tuple[int, int, Any, int]:
    """Confine the worker and prove its wiring: (job fd, reply fd, limits, Landlock ABI)."""
    import confine

    confine.apply_limits(config)
    job_fd, reply_fd = confine.isolate_stdio()
    try:
        import runner
        import selftest

        _warm_up()
        landlock = confine.lock_down(config)
        limits = runner.Limits(config)
        if config.get("selftest", True):
            selftest.run(limits)
    except BaseException as error:
        _fail(reply_fd, error)
    return job_fd, reply_fd, limits, landlock


def _fail(reply_fd: int, error: BaseException) -> None:
    import framing

    message = f"{type(error).__name__}: {error}"
    print(f"portico sandbox worker: boot failed: {message}", file=sys.stderr, flush=True)
    framing.write_frame(reply_fd, framing.encode({"ready": False, "error": message}))
    os._exit(EXIT_BOOT_FAILED)


def _serve(job_fd: int, reply_fd: int, limits: Any, max_job_bytes: int) -> None:
    import framing
    import runner

    while True:
        job = framing.read_frame(job_fd, max_job_bytes)
        if job is None:
            return
        framing.write_frame(reply_fd, runner.handle(job, limits))


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    config = json.loads(sys.argv[1])
    sys.path.extend(config.get("sys_path", []))
    try:
        job_fd, reply_fd, limits, landlock = _boot(config)
    except BaseException as error:  # before the pipes were moved: report on stdout
        _fail(1, error)
    import gc

    import framing

    gc.collect()
    gc.freeze()  # boot objects are never garbage; keep collections of step garbage short
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "landlock": landlock,
        "python": sys.version.split()[0],
    }
    framing.write_frame(reply_fd, framing.encode(ready))
    try:
        _serve(job_fd, reply_fd, limits, int(config["max_job_bytes"]))
    except BaseException as error:
        print(
            f"portico sandbox worker: stopping: {type(error).__name__}", file=sys.stderr, flush=True
        )
        os._exit(EXIT_PROTOCOL_ERROR)
    os._exit(0)


if __name__ == "__main__":
    main()
