"""Agent files: valid ones load; invalid ones fail naming the file, the field and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine import agent_files, errors

REPO = Path(__file__).resolve().parents[2]


def test_example_agents_load_with_three_or_more_steps() -> None:
    definitions = [
        d for f in agent_files.expand([REPO / "examples" / "agents"]) for d in agent_files.load(f)
    ]
    assert len(definitions) >= 2
    assert all(len(d.steps) >= 3 for d in definitions)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\nsteps: [{name: s, type: python, config: {}}]", "steps.0.config.code"),
        ("name: x\nsteps: [{name: s, type: shell, config: {code: a}}]", "steps.0.type"),
        ("name: x\ncolour: red\nsteps: []", "colour"),
        (
            "name: x\nsteps: [{name: s, type: llm, config: {prompt_template: p, model: m, "
            "temperature: 3}}]",
            "temperature",
        ),
        ("steps: []", "name"),
    ],
)
def test_invalid_agent_files_name_the_problem(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(content)
    with pytest.raises(errors.ConfigurationError) as caught:
        agent_files.load(path)
    message = str(caught.value)
    assert str(path) in message and expected in message


def test_unreadable_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: [unclosed")
    with pytest.raises(errors.ConfigurationError, match=r"broken\.yaml"):
        agent_files.load(path)


def _llm_agent_file(tmp_path: Path, **config: object) -> Path:
    """An agent whose second step is an llm step with `config` (prompt and model defaulted)."""
    step = {"prompt_template": "Summarise {{ text }}", "model": "gpt-4o-mini", **config}
    path = tmp_path / "triage.json"
    path.write_text(
        json.dumps(
            {
                "name": "triage",
                "steps": [
                    {"name": "clean", "type": "python", "config": {"code": "return input"}},
                    {"name": "classify", "type": "llm", "config": step},
                ],
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (
            {"model": "claude"},
            "config.model: unknown model name 'claude': name a model as provider/model-id",
        ),
        (
            {"model": "llama/llama3"},
            "config.model: unknown provider 'llama' in model 'llama/llama3': name a model as",
        ),
        (
            {"prompt_template": "{{ a | upper }}"},
            "config.prompt_template: '{{ a | upper }}' is not a path. Templates substitute only "
            "paths into the input",
        ),
        (
            {"prompt_template": "Hi {{ name"},
            "config.prompt_template: the '{{' at character 3 has no closing '}}'",
        ),
        (
            {"system": "You are {{ role.upper() }}"},
            "config.system: '{{ role.upper() }}' is not a path",
        ),
    ],
)
def test_an_llm_step_that_could_never_run_is_refused_naming_file_agent_and_step(
    tmp_path: Path, config: dict[str, object], problem: str
) -> None:
    path = _llm_agent_file(tmp_path, **config)
    with pytest.raises(errors.ConfigurationError) as caught:
        agent_files.load(path)
    message = str(caught.value)
    assert message.startswith(f"agent file {path}, agent 'triage': step 2 'classify' (llm): ")
    assert problem in message
    assert message.endswith(
        "Fix the step config in the file and apply it again "
        "(docs/llm.md lists the model names and the template rules)"
    )


def test_every_problem_of_an_agent_is_named_at_once(tmp_path: Path) -> None:
    path = tmp_path / "agents.yaml"
    path.write_text(
        "- {name: fine, steps: []}\n"
        "- name: broken\n"
        "  steps:\n"
        "    - {name: a, type: llm, config: {model: gpt4, prompt_template: '{{ x }}'}}\n"
        "    - {name: b, type: llm, config: {model: gpt-4o, prompt_template: '{{ x | y }}',"
        " system: '{{ '}}\n"
    )
    with pytest.raises(errors.ConfigurationError) as caught:
        agent_files.load(path)
    message = str(caught.value)
    assert message.startswith(f"agent file {path} (agent #2), agent 'broken': ")
    assert "step 1 'a' (llm): config.model: unknown model name 'gpt4'" in message
    assert "step 2 'b' (llm): config.prompt_template: '{{ x | y }}' is not a path" in message
    assert "step 2 'b' (llm): config.system: the '{{' at character 0 has no closing" in message


@pytest.mark.parametrize(
    "config",
    [
        {"model": "claude-3"},
        {"model": "anthropic/claude-haiku-4-5", "system": "Be brief about {{ input.topic }}."},
        {"model": "openai/my-local-model", "api_base": "http://127.0.0.1:8000/v1"},
        {"prompt_template": 'Reply as JSON {"a": 1} about {{ items.0.sku }}; {% not a tag %}'},
        {"system": ""},
    ],
)
def test_valid_llm_steps_load(tmp_path: Path, config: dict[str, object]) -> None:
    (definition,) = agent_files.load(_llm_agent_file(tmp_path, **config))
    assert definition.steps[1].config["model"] == config.get("model", "gpt-4o-mini")


def test_checking_llm_steps_does_not_import_litellm(tmp_path: Path) -> None:
    """litellm is imported only when an LLM step runs; loading agent files must not do it."""
    path = _llm_agent_file(tmp_path, model="claude")
    example = REPO / "examples" / "agents_llm" / "support_triage_llm.yaml"
    probe = (
        "import sys\n"
        "from pathlib import Path\n"
        "from engine import agent_files, cli, errors\n"
        f"agent_files.load(Path({str(example)!r}))\n"
        "try:\n"
        f"    agent_files.load(Path({str(path)!r}))\n"
        "except errors.ConfigurationError:\n"
        "    pass\n"
        "else:\n"
        "    raise SystemExit('the unknown model was accepted')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'litellm'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
