"""The `portico` CLI as a user runs it, as subprocesses against a real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.db import migrate
from engine.llm import keys
from tests.support import sql
from tests.support.engine import EngineProcess
from tests.support.waiting import wait_for_sync

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_AGENTS = {"order-pricing", "feedback-insights"}
WIDE = {"COLUMNS": "300"}
"""Keeps rich from wrapping the output lines a test splits into columns."""


def portico(
    database_url: str | None,
    *args: str,
    timeout: float = 60,
    extra_env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    """`python -m engine ARGS` from the repository. `database_url` None: DATABASE_URL unset, so
    the CLI falls back to the embedded server. `unset` removes more variables."""
    removed = {"DATABASE_URL", "PORTICO_DATABASE_URL", *unset}
    env = {k: v for k, v in os.environ.items() if k not in removed}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update({"PORTICO_LOG_FORMAT": "json", **(extra_env or {})})
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def engine(database_url: str, tmp_path: Path) -> Any:
    proc = EngineProcess(database_url, tmp_path / "engine.log").start()
    yield proc
    proc.kill()


def test_migrate_is_idempotent(database_url: str) -> None:
    result = portico(database_url, "migrate")
    assert result.returncode == 0, result.stderr
    assert "0 migration(s) applied" in result.stdout


def test_apply_examples_then_send_and_wait(database_url: str, engine: EngineProcess) -> None:
    applied = portico(database_url, "agents", "apply", "examples/agents")
    assert applied.returncode == 0, applied.stderr
    assert "order-pricing" in applied.stdout and "feedback-insights" in applied.stdout

    payload = {"customer": "Ada", "items": [{"sku": "A", "qty": 2, "unit_price": 10}]}
    sent = portico(
        database_url,
        "signal",
        "send",
        "order-pricing",
        "--payload",
        json.dumps(payload),
        "--wait",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert report["status"] == "complete"
    steps = report["session"]["step_results"]
    assert [s["step_name"] for s in steps] == [
        "validate-order",
        "compute-totals",
        "invoice-summary",
    ]
    assert report["session"]["output"]["total"] == "24.00"

    bad = {"items": [{"sku": "B", "qty": 0, "unit_price": 1}]}
    failed = portico(
        database_url, "signal", "send", "order-pricing", "--payload", json.dumps(bad), "--wait"
    )
    assert failed.returncode == 1
    printed = " ".join(failed.stdout.split())  # rich wraps long lines at 80 columns off a terminal
    assert (
        'step 1 "validate-order" (python) failed: ValueError: item 1 (B): qty must be a ' in printed
    )


def test_send_refuses_bad_input_with_a_clear_message(database_url: str) -> None:
    no_agent = portico(database_url, "signal", "send", "--type", "run")
    assert no_agent.returncode == 2 and "needs an agent" in no_agent.stderr
    unknown = portico(database_url, "signal", "send", "nobody-here")
    assert unknown.returncode == 2 and "no agent named" in unknown.stderr
    bad_json = portico(database_url, "signal", "send", "--type", "fyi", "--payload", "{oops")
    assert bad_json.returncode == 2 and "--payload is not JSON" in bad_json.stderr


def test_fyi_without_wait_prints_the_signal_id(database_url: str) -> None:
    sent = portico(database_url, "signal", "send", "--type", "fyi", "--payload", '{"a": 1}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.startswith("sent fyi signal ")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command", [["run"], ["migrate"], ["agents", "list"], ["signal", "send", "--type", "fyi"]]
)
def test_an_unreachable_database_is_named_without_its_password(command: list[str]) -> None:
    url = f"postgresql://bob:hunter2@127.0.0.1:{_closed_port()}/shop"
    result = portico(url, *command)
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "cannot connect to PostgreSQL at bob@127.0.0.1:" in said and "/shop" in said
    assert "Connection refused" in said and "DATABASE_URL" in said
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_a_role_the_engine_cannot_assume_is_a_clear_error(database_url: str) -> None:
    result = portico(database_url, "run", extra_env={"PORTICO_DB_ROLE": "no_such_role"})
    said = " ".join(result.stderr.split())
    assert result.returncode == 2, result.stderr
    assert "cannot assume database role 'no_such_role'" in said and "PORTICO_DB_ROLE" in said


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone (it wraps at 80 columns off a terminal)."""
    return " ".join(text.split())


def _log_events(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(line)
            if isinstance(value, dict):
                events.append(value)
    return events


def _live_servers_on(pgdata: Path) -> list[psutil.Process]:
    """Live (not zombie) processes whose command line names `pgdata`: a postmaster on it."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(pgdata) in cmdline:
            found.append(proc)
    return found


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def embedded_data_dir(tmp_path: Path) -> Iterator[Path]:
    """PORTICO_DATA_DIR for CLI runs without DATABASE_URL. Afterwards, a server the CLI left on
    it (only when a test failed) is ended by its PID, so no test leaves a server running."""
    data_dir = tmp_path / "portico-data"
    yield data_dir
    for proc in _live_servers_on((data_dir / "pgdata").resolve()):
        proc.terminate()
        proc.wait(timeout=15)


def test_without_database_url_the_cli_uses_the_embedded_server_and_stops_it(
    embedded_data_dir: Path,
) -> None:
    pgdata = (embedded_data_dir / "pgdata").resolve()
    env = {"PORTICO_DATA_DIR": str(embedded_data_dir), **WIDE}
    migrations = migrate.discover(migrate.default_migrations_dir())

    def run_and_check_stopped(*args: str) -> subprocess.CompletedProcess[str]:
        result = portico(None, *args, extra_env=env)
        assert result.returncode == 0, result.stderr
        ready = [
            e for e in _log_events(result.stderr) if e.get("event") == "embedded_postgres_ready"
        ]
        assert [e["data_dir"] for e in ready] == [str(embedded_data_dir)], result.stderr
        # The CLI was the server's only user: the server stopped when the CLI exited.
        assert not _is_alive(int(ready[0]["pid"]))
        assert _live_servers_on(pgdata) == []
        assert not (pgdata / "postmaster.pid").exists()
        return result

    migrated = run_and_check_stopped("migrate")
    assert f"{len(migrations)} migration(s) applied" in migrated.stdout
    assert (pgdata / "PG_VERSION").is_file()

    applied = run_and_check_stopped("agents", "apply", "examples/agents")
    assert "applied agent order-pricing" in applied.stdout

    # A third start of the same data directory still has what the second one wrote.
    listed = run_and_check_stopped("agents", "list")
    assert {line.split()[0] for line in listed.stdout.splitlines()} == EXAMPLE_AGENTS


def test_the_database_url_flag_wins_over_the_environment(database_url: str) -> None:
    bogus = f"postgresql://bob:hunter2@127.0.0.1:{_closed_port()}/shop"
    flag = ("--database-url", database_url)

    applied = portico(bogus, "agents", "apply", "examples/agents", *flag)
    assert applied.returncode == 0, applied.stderr
    listed = portico(bogus, "agents", "list", *flag, extra_env=WIDE)
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} == EXAMPLE_AGENTS
    # The agents are in the flag's database, read here without the CLI.
    with sql.connect(database_url) as conn:
        rows = conn.execute("select name from public.agents").fetchall()
    assert {row["name"] for row in rows} == EXAMPLE_AGENTS
    # Without the flag, the same environment names the unreachable database.
    refused = portico(bogus, "agents", "list")
    assert refused.returncode == 2 and "127.0.0.1" in refused.stderr


def test_a_json_agent_file_in_a_directory_applies_and_runs(
    database_url: str, engine: EngineProcess, tmp_path: Path
) -> None:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    greeter = {
        "name": "greeter",
        "description": "Greets by name.",
        "steps": [
            {"name": "pick-name", "type": "python", "config": {"code": "return input['name']"}},
            {
                "name": "greet",
                "type": "python",
                "config": {"code": "return {'greeting': 'Hello, ' + input + '!'}"},
            },
        ],
    }
    idle = {"name": "idle", "is_active": False, "steps": []}
    (agents_dir / "agents.json").write_text(json.dumps([greeter, idle]))
    (agents_dir / "README.txt").write_text("not an agent file: skipped")

    applied = portico(database_url, "agents", "apply", str(agents_dir))
    assert applied.returncode == 0, applied.stderr
    assert "applied agent greeter (2 steps)" in applied.stdout
    assert "applied agent idle (0 steps)" in applied.stdout
    listed = portico(database_url, "agents", "list", extra_env=WIDE)
    assert [line.split()[4] for line in listed.stdout.splitlines()] == ["active", "inactive"]

    sent = portico(
        database_url,
        "signal",
        "send",
        "greeter",
        "--payload",
        '{"name": "Ada"}',
        "--wait",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert report["status"] == "complete"
    assert [s["step_name"] for s in report["session"]["step_results"]] == ["pick-name", "greet"]
    assert report["session"]["output"] == {"greeting": "Hello, Ada!"}


def test_a_sync_signal_sent_from_the_cli_completes(
    database_url: str, engine: EngineProcess
) -> None:
    sent = portico(database_url, "signal", "send", "--type", "sync", "--wait", "--json")
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert (report["type"], report["status"], report["error"]) == ("sync", "complete", None)
    assert report["agent_id"] is None and report["session"] is None
    wait_for_sync(
        lambda: any(
            e.get("event") == "sync_completed" and e.get("signal_id") == report["id"]
            for e in engine.events()
        ),
        what="the engine to log the sync",
    )
    assert engine.has_event("agent_config_reloaded")


def test_apply_refuses_an_llm_step_that_could_never_run(database_url: str, tmp_path: Path) -> None:
    agents_dir = tmp_path / "agents"
    agents_dir.mkdir()
    (agents_dir / "a_fine.yaml").write_text(
        "name: fine\nsteps: [{name: s, type: python, config: {code: return input}}]\n"
    )
    bad = agents_dir / "b_triage.yaml"
    bad.write_text(
        "name: triage\nsteps:\n"
        "  - {name: classify, type: llm, config: {model: claude, prompt_template: '{{ body }}'}}\n"
    )
    result = portico(database_url, "agents", "apply", str(agents_dir), extra_env=WIDE)
    said = _flat(result.stderr)
    assert result.returncode == 2, result.stderr
    assert f"agent file {bad}, agent 'triage': step 1 'classify' (llm): config.model:" in said
    assert "unknown model name 'claude': name a model as provider/model-id" in said
    assert "Fix the step config in the file and apply it again" in said
    assert "Traceback" not in result.stderr
    # Nothing was applied, not even the valid file read before the bad one.
    with sql.connect(database_url) as conn:
        assert conn.execute("select count(*) as n from public.agents").fetchone() == {"n": 0}


def test_the_demo_runs_the_examples_and_skips_the_llm_agent_without_a_key(
    database_url: str, tmp_path: Path
) -> None:
    """The demo on the test database through --database-url (DATABASE_URL unset, the embedded
    data directory pointed at an empty tmp dir), with no provider key in the environment."""
    result = portico(
        None,
        "demo",
        "--database-url",
        database_url,
        extra_env={"PORTICO_DATA_DIR": str(tmp_path / "unused"), "PORTICO_SANDBOX__POOL_SIZE": "1"},
        unset=tuple(keys.PROVIDER_KEY_VARS.values()),
    )
    printed = _flat(result.stdout)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "unused").exists(), "the demo started the embedded server"
    assert (
        "skipped agent support-triage-llm: it calls a model; set OPENAI_API_KEY to see it run"
        in printed
    )
    assert "engine stopped: 2 runs succeeded, 1 failed, 1 sync, 1 fyi" in printed

    with sql.connect(database_url) as conn:
        agents = conn.execute("select name from public.agents").fetchall()
        signals = conn.execute(
            "select s.type, a.name as agent, s.status, s.error, r.output"
            " from public.signals s left join public.agents a on a.id = s.agent_id"
            " left join public.runtime_sessions r on r.id = s.runtime_session_id"
            " order by s.seq"
        ).fetchall()
    assert {row["name"] for row in agents} == EXAMPLE_AGENTS
    outcomes = [(s["type"], s["agent"], s["status"]) for s in signals]
    assert outcomes == [
        ("run", "order-pricing", "complete"),
        ("run", "order-pricing", "error"),
        ("run", "feedback-insights", "complete"),
        ("sync", None, "complete"),
        ("fyi", None, "complete"),
    ]
    assert signals[0]["output"]["total"] == "150.01"
    # The bad order fails on purpose, naming the line and the rule it broke.
    assert "item 2 (CB-99): qty must be a positive integer, got -3" in signals[1]["error"]
    assert signals[2]["error"] is None and signals[2]["output"]
