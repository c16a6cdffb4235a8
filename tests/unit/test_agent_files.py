"""Agent files: valid ones load; invalid ones fail naming the file, the field and the fix."""

from __future__ import annotations

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
