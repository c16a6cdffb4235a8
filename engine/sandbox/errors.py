"""Sandbox exceptions (engine failures, never step failures) and the step-error texts for
outcomes the engine observes from outside a worker: deadline, crash, broken protocol."""

from __future__ import annotations

import signal


class SandboxError(Exception):
    """A failure of the sandbox itself, not of a step."""


class SandboxBootError(SandboxError):
    """A worker could not start (self-test failed, interpreter missing, confinement refused)."""


class SandboxClosedError(SandboxError):
    """The pool was closed; no more steps run."""


def timed_out(timeout_ms: int) -> str:
    return f"timed out after {timeout_ms} ms"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def worker_died(returncode: int | None, memory_mb: int, cpu_seconds: int, stderr: str) -> str:
    """Why a worker ended in the middle of a step; always an error, never a success."""
    if returncode == -signal.SIGXCPU:
        return (
            f"CPU limit exceeded: the step used more than its {cpu_seconds} s of CPU time; "
            "the sandbox worker was stopped"
        )
    if "MemoryError" in stderr:
        return (
            f"memory limit exceeded: the step needed more than {memory_mb} MB and the sandbox "
            "worker stopped"
        )
    if returncode is not None and returncode < 0:
        cause = f"was killed by {_signal_name(-returncode)}"
    else:
        cause = f"exited with code {returncode}"
    return (
        f"the sandbox worker crashed: it {cause} while running the step; the step did not "
        "complete (a step that crashes its worker again and again is likely hostile or "
        f"exhausting memory, limit {memory_mb} MB)"
    )


def malformed_reply(reason: str) -> str:
    return (
        f"the sandbox worker crashed: it sent a malformed reply ({reason}); "
        "the step did not complete"
    )


def could_not_start(reason: str) -> str:
    return f"the sandbox could not start a worker for this step: {reason}"
