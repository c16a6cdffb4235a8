"""The example LLM agent examples/agents_llm/support_triage_llm.yaml and its demo signal: valid,
kept where the demo looks for key-gated examples, and its three steps fit together. Its python
steps run as plain functions here (doubling the sandbox) and its LLM step runs through LLMStep
with a FakeClient (doubling the provider)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Literal

from llm_fakes import FakeClient, answer, context, llm_step

from engine import agent_files, demo, models
from engine.llm import templates
from engine.steps.llm import LLMStep, key_variables_needed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
LLM_DIR = EXAMPLES / demo.LLM_AGENTS_DIR
EXAMPLE = LLM_DIR / "support_triage_llm.yaml"
SIGNALS = LLM_DIR / "signals" / "signals.yaml"


def load() -> models.AgentDefinition:
    (definition,) = agent_files.load(EXAMPLE)
    return definition


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
    assert key_variables_needed(agent.steps) == {"OPENAI_API_KEY"}


def test_the_demo_runs_an_llm_example_only_when_its_key_is_set() -> None:
    # Every agent in examples/agents/ runs without a key.
    for path in agent_files.expand([EXAMPLES / "agents"]):
        for definition in agent_files.load(path):
            assert key_variables_needed(definition.steps) == set(), path
    assert agent_files.expand([LLM_DIR]) == [EXAMPLE], "only agents in the LLM examples folder"
    assert demo.agent_dirs(EXAMPLES) == [EXAMPLES / "agents", LLM_DIR]
    assert SIGNALS in demo.signal_files(EXAMPLES)
    definitions = [
        d for f in agent_files.expand(demo.agent_dirs(EXAMPLES)) for d in agent_files.load(f)
    ]
    assert demo.missing_keys(definitions, {}) == {"support-triage-llm": ["OPENAI_API_KEY"]}
    # A key of another provider does not help this agent; its own key does.
    assert demo.missing_keys(definitions, {"ANTHROPIC_API_KEY": "sk-ant"}) != {}
    assert demo.missing_keys(definitions, {"OPENAI_API_KEY": "sk-test"}) == {}
    assert demo.missing_keys(definitions, {"OPENAI_API_KEY": ""}) != {}


async def test_example_signal_runs_through_the_steps() -> None:
    """FakeClient doubles the provider; the python steps run unsandboxed as plain functions."""
    agent = load()
    (signal,) = demo.load_signals(SIGNALS)
    assert (signal.type, signal.agent) == (models.SignalType.RUN, agent.name)
    first, second, third = agent.steps
    ticket = run_python(first.config["code"], signal.payload)
    client = FakeClient(
        answer('{"category": "billing", "urgency": "high", "summary": "Double charge."}')
    )
    outcome = await LLMStep(client, environ={"OPENAI_API_KEY": "sk-test"}).execute(
        llm_step(second.config), ticket, context()
    )
    assert outcome.ok, outcome.error
    prompt = client.requests[0].messages[-1]["content"]
    assert "Classify this ticket from Ada." in prompt
    assert "Subject: Charged twice" in prompt
    assert '{"category": "billing" or "bug"' in prompt
    routed = run_python(third.config["code"], outcome.output)
    assert routed == {
        "queue": "finance",
        "category": "billing",
        "urgency": "high",
        "summary": "Double charge.",
        "page_on_call": False,
    }


def test_key_variables_needed_skips_python_api_base_and_unknown_models() -> None:
    def step(type_: Literal["python", "llm"], **config: Any) -> models.StepDefinition:
        return models.StepDefinition(name="s", type=type_, config=config)

    steps = [
        step("python", code="return 1"),
        step("llm", model="claude-3", prompt_template="x"),
        step("llm", model="openai/local", prompt_template="x", api_base="http://127.0.0.1/v1"),
        step("llm", model="no-such-model", prompt_template="x"),
    ]
    assert key_variables_needed(steps) == {"ANTHROPIC_API_KEY"}
