"""A worker whose step has "escaped" the language layer: it boots exactly as a real sandbox
worker does (same rlimits, user drop, non-dumpable, syscall filter and self-test, from the real
boot modules), then runs each job's code as plain, unrestricted Python.

Tests start it with `WorkerProcess.spawn(..., script=ESCAPED_WORKER)` to prove that the process
layer holds on its own. The job's code sets `result` (JSON) and may use `reply_fd`/`framing` to
send raw frames. Never used by the engine.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

BOOT_DIR = Path(__file__).resolve().parents[2] / "engine" / "sandbox" / "boot"


def main() -> None:
    sys.path.insert(0, str(BOOT_DIR))
    config = json.loads(sys.argv[1])
    sys.path.extend(config.get("sys_path", []))
    import worker_main  # the real boot, imported from the boot directory

    job_fd, reply_fd, _, landlock = worker_main._boot(config)
    import framing

    ready = {"ready": True, "uid": os.getuid(), "landlock": landlock}
    framing.write_frame(reply_fd, framing.encode(ready))
    while True:
        job = framing.read_frame(job_fd, int(config["max_job_bytes"]))
        if job is None:
            os._exit(0)
        scope: dict[str, Any] = {"input": job.get("input"), "reply_fd": reply_fd}
        scope["framing"] = framing
        try:
            exec(job["code"], scope)  # noqa: S102 - the point: code outside RestrictedPython
            reply = {"ok": True, "output": scope.get("result")}
        except BaseException as error:
            reply = {"ok": False, "kind": "exception", "error": f"{type(error).__name__}: {error}"}
        framing.write_frame(reply_fd, framing.encode(reply))


if __name__ == "__main__":
    main()
