"""LLM steps inside the whole engine, on the real PostgreSQL with the real sandbox: a python →
llm → python agent run from a signal, its usage and cost in step_results.metadata, the
analytics query of docs/llm.md, failures, and where provider keys may and may not appear.

The LLM executor is swapped in through open_engine's `executors` seam. Most tests give it a
FakeClient (doubles the provider, so litellm is never imported); one uses the real litellm
client with respx doubling OpenAI's HTTP endpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import structlog
from llm_fakes import FakeClient, FakeClock, answer

from engine.llm import protocol
from engine.steps.llm import LLMStep
from tests.support.engine import Db, python_step, running_engine
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-engine-env-secret-7f3a9c1e"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"

PREPARE = python_step(
    "prepare",
    "return {'ticket': {'customer': input['customer'], 'body': input['body'].strip()}}",
)
CLASSIFY = {
    "name": "classify",
    "type": "llm",
    "config": {
        "model": "gpt-4o-mini",
        "system": "You triage tickets for {{ ticket.customer }}.",
        "prompt_template": "Classify: {{ ticket.body }}",
        "response_format": "json",
        "temperature": 0,
        "max_tokens": 50,
    },
}
ROUTE = python_step(
    "route",
    "queue = 'finance' if input['category'] == 'billing' else 'support'\n"
    "return {'queue': queue, 'category': input['category']}",
)
TICKET = {"customer": "Ada", "body": "  I was charged twice.  "}
BILLING = '{"category": "billing"}'


def llm_executor(client: protocol.LLMClient, **kwargs: Any) -> dict[str, LLMStep]:
    kwargs.setdefault("environ", {"OPENAI_API_KEY": SECRET})
    return {"llm": LLMStep(client, sleep=FakeClock().sleep, jitter=lambda: 0.0, **kwargs)}


async def run_to_end(db: Db, agent: Any, payload: Any) -> dict[str, Any]:
    signal_id = await db.send(agent, payload)
    return await wait_for(lambda: db.finished(signal_id), what="run to finish")


def analytics_query() -> str:
    """The per-agent tokens-and-cost query exactly as docs/llm.md shows it."""
    text = (REPO / "docs" / "llm.md").read_text()
    (query,) = re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
    return query


async def test_python_llm_python_agent_runs_end_to_end(database_url: str) -> None:
    """FakeClient doubles the LLM provider."""
    client = FakeClient(answer(BILLING, usage=(20, 5), cost_usd=0.0042))
    async with Db(database_url) as db, running_engine(database_url, executors=llm_executor(client)):
        agent = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
        report = await run_to_end(db, agent, TICKET)

    assert report["status"] == "complete", report["error"]
    session = report["session"]
    assert session["output"] == {"queue": "finance", "category": "billing"}
    prepare, classify, route = session["step_results"]
    assert classify["step_type"] == "llm" and classify["status"] == "success"
    assert classify["input"] == prepare["output"]
    assert classify["output"] == {"category": "billing"}
    assert route["input"] == {"category": "billing"}
    assert classify["metadata"] == {
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
        "model": "gpt-4o-mini-2024-07-18",
        "requested_model": "openai/gpt-4o-mini",
        "finish_reason": "stop",
        "cost_usd": 0.0042,
        "attempts": 1,
    }
    (request,) = client.requests
    assert request.messages == (
        {"role": "system", "content": "You triage tickets for Ada."},
        {"role": "user", "content": "Classify: I was charged twice."},
    )
    assert (request.temperature, request.max_tokens) == (0, 50)


async def test_analytics_query_sums_tokens_and_cost_per_agent(database_url: str) -> None:
    """FakeClient doubles the LLM provider (the third answer is from an unpriced model)."""
    client = FakeClient(
        answer(BILLING, usage=(20, 5), cost_usd=0.0042),
        answer(BILLING, usage=(30, 6), cost_usd=0.0051),
        answer("plain", usage=(9, 4), cost_usd=None),
    )
    ask = {
        "name": "ask",
        "type": "llm",
        "config": {"model": "openai/my-finetune", "prompt_template": "{{ input }}"},
    }
    async with Db(database_url) as db, running_engine(database_url, executors=llm_executor(client)):
        triage = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
        other = await db.apply("other", [ask])
        python_only = await db.apply("python-only", [python_step("echo", "return input")])
        for agent, payload in [(triage, TICKET), (triage, TICKET), (other, "hi")]:
            assert (await run_to_end(db, agent, payload))["status"] == "complete"
        assert (await run_to_end(db, python_only, {}))["status"] == "complete"
        rows = await db.rows(analytics_query())

    # Priced agents first; tokens still count when litellm has no price for the model.
    assert [
        (row["agent_id"], row["agent"], row["llm_calls"], row["tokens"], row["cost_usd"])
        for row in rows
    ] == [
        (triage, "triage", 2, 25 + 36, Decimal("0.0093")),
        (other, "other", 1, 13, None),
    ]


async def test_provider_failure_fails_the_run_keeping_earlier_results(database_url: str) -> None:
    """FakeClient doubles the LLM provider (always a 500); FakeClock doubles the backoff."""
    error = protocol.LLMCallError("The server had an error", status=500, retryable=True)
    client = FakeClient(error, error, error)
    async with Db(database_url) as db, running_engine(database_url, executors=llm_executor(client)):
        agent = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
        report = await run_to_end(db, agent, TICKET)

    assert report["status"] == "error"
    assert report["error"] == (
        'step 2 "classify" (llm) failed: LLM call to openai/gpt-4o-mini failed after 3 attempts: '
        "status 500 (server error): The server had an error"
    )
    prepare, classify = report["session"]["step_results"]  # route never ran
    assert prepare["status"] == "success"
    assert classify["status"] == "error" and classify["output"] is None
    assert classify["metadata"] == {"requested_model": "openai/gpt-4o-mini", "attempts": 3}
    assert classify["logs"].count("retrying in") == 2


async def test_missing_key_fails_the_step_naming_the_variable(database_url: str) -> None:
    """FakeClient doubles the LLM provider (and must not be called)."""
    client = FakeClient()
    executors = llm_executor(client, environ={})
    async with Db(database_url) as db, running_engine(database_url, executors=executors):
        agent = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
        report = await run_to_end(db, agent, TICKET)
    assert report["status"] == "error"
    assert "set the environment variable OPENAI_API_KEY" in report["error"]
    assert client.requests == []


async def test_keys_come_from_the_environment_and_appear_nowhere_else(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FakeClient doubles the LLM provider. The key is set in this process's environment, the
    one the engine's LLM step reads; it must reach the client and nothing else."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    client = FakeClient(answer(BILLING))
    snoop = python_step("snoop", "import os\nreturn os.environ.get('OPENAI_API_KEY')")
    executors = {"llm": LLMStep(client)}  # default: keys from os.environ
    with structlog.testing.capture_logs() as events:
        async with Db(database_url) as db, running_engine(database_url, executors=executors):
            agent = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
            snooper = await db.apply("snooper", [snoop])
            report = await run_to_end(db, agent, TICKET)
            snooped = await run_to_end(db, snooper, {})
            stored = await db.rows(
                "select row_to_json(t)::text as row from public.step_results t"
                " union all select row_to_json(t)::text from public.runtime_sessions t"
                " union all select row_to_json(t)::text from public.signals t"
            )

    assert report["status"] == "complete"
    assert client.requests[0].api_key == SECRET
    # Python steps run in processes started with an empty environment and no `os`.
    assert snooped["status"] == "error"
    assert "module 'os' is not available" in snooped["error"]
    assert len(stored) >= 6
    assert not [row for row in stored if SECRET in row["row"]]
    # capture_logs sees events before the redaction processor: none may carry the key at all.
    assert events and SECRET not in json.dumps(events, default=str)


async def test_real_litellm_client_inside_the_engine(database_url: str, litellm_client) -> None:
    """The real litellm client runs the step; respx (using="httpx") doubles OpenAI's chat
    completions endpoint."""
    reply = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": BILLING},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    with respx.mock(using="httpx", assert_all_mocked=True) as router:
        route = router.post(OPENAI_URL).mock(return_value=httpx.Response(200, json=reply))
        executors = llm_executor(litellm_client)
        async with Db(database_url) as db, running_engine(database_url, executors=executors):
            agent = await db.apply("triage", [PREPARE, CLASSIFY, ROUTE])
            report = await run_to_end(db, agent, TICKET)
            rows = await db.rows(analytics_query())

    assert report["status"] == "complete", report["error"]
    assert report["session"]["output"] == {"queue": "finance", "category": "billing"}
    body = json.loads(route.calls[0].request.content)
    assert body["messages"][1] == {"role": "user", "content": "Classify: I was charged twice."}
    metadata = report["session"]["step_results"][1]["metadata"]
    assert metadata["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    # litellm 1.110.2's bundled price for gpt-4o-mini: $0.15 / $0.60 per million tokens.
    assert metadata["cost_usd"] == pytest.approx(11 * 0.15e-6 + 7 * 0.60e-6)
    assert [(row["agent_id"], row["tokens"]) for row in rows] == [(agent, 18)]
    assert float(rows[0]["cost_usd"]) == pytest.approx(metadata["cost_usd"])


def test_an_engine_running_only_python_steps_never_imports_litellm(database_url: str) -> None:
    """Runs a whole engine in a fresh interpreter (other tests here do import litellm): a
    python-only agent runs to the end with the LLM executor wired in, and litellm stays out."""
    script = """
import asyncio, json, sys
from tests.support.engine import Db, python_step, running_engine
from tests.support.waiting import wait_for

async def main(url):
    async with Db(url) as db, running_engine(url):
        agent = await db.apply("py-only", [python_step("echo", "return input")])
        signal_id = await db.send(agent, {"a": 1})
        report = await wait_for(lambda: db.finished(signal_id), what="run")
    print(json.dumps({
        "status": report["status"],
        "llm_step_loaded": "engine.steps.llm" in sys.modules,
        "litellm": sorted(m for m in sys.modules if m.split(".")[0] == "litellm"),
    }))

asyncio.run(main(sys.argv[1]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, database_url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {"status": "complete", "llm_step_loaded": True, "litellm": []}
