"""The example agent examples/agents/support_triage_llm.yaml: valid, and its three steps fit
together. Its python steps run as plain functions here (doubling the sandbox) and its LLM step
runs through LLMStep with a FakeClient (doubling the provider)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml
from llm_fakes import FakeClient, answer, context, llm_step

from engine import models
from engine.llm import templates
from engine.steps.llm import LLMStep

# Wherever the demo keeps its key-gated examples (examples/agents/ or examples/agents_llm/).
(EXAMPLE,) = (Path(__file__).resolve().parents[2] / "examples").glob("*/support_triage_llm.yaml")


def load() -> models.AgentDefinition:
    return models.AgentDefinition.model_validate(yaml.safe_load(EXAMPLE.read_text()))


def run_python(code: str, step_input: Any) -> Any:
    namespace: dict[str, Any] = {}
    exec("def step(input):\n" + textwrap.indent(code, "    "), namespace)  # noqa: S102
    return namespace["step"](step_input)


def test_example_is_a_valid_agent_with_python_llm_python() -> None:
    agent = load()
    assert [step.type for step in agent.steps] == ["python", "llm", "python"]
    configs = [step.validated_config() for step in agent.steps]
    llm = configs[1]
    assert isinstance(llm, models.LLMConfig)
    assert templates.validate(llm.prompt_template) == [
        "ticket.customer",
        "ticket.subject",
        "ticket.body",
    ]


async def test_example_steps_chain() -> None:
    agent = load()
    first, second, third = agent.steps
    ticket = run_python(
        first.config["code"],
        {"id": 42, "customer": "Ada", "subject": "Charged twice", "body": "Two charges."},
    )
    client = FakeClient(
        answer('{"category": "billing", "urgency": "high", "summary": "Double charge."}')
    )
    outcome = await LLMStep(client, environ={"OPENAI_API_KEY": "sk-test"}).execute(
        llm_step(second.config), ticket, context()
    )
    assert outcome.ok, outcome.error
    prompt = client.requests[0].messages[-1]["content"]
    assert "Classify this ticket from Ada." in prompt
    assert '{"category": "billing" or "bug"' in prompt
    routed = run_python(third.config["code"], outcome.output)
    assert routed == {
        "queue": "finance",
        "category": "billing",
        "urgency": "high",
        "summary": "Double charge.",
        "page_on_call": False,
    }
