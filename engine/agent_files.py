"""Agent files (YAML or JSON) → validated AgentDefinitions, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from engine import errors, models


def load(path: Path) -> list[models.AgentDefinition]:
    """One file holds one agent, or a list of agents."""
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise errors.ConfigurationError(f"cannot read agent file {path}: {exc}") from exc
    items = document if isinstance(document, list) else [document]
    definitions = []
    for index, item in enumerate(items):
        where = f"{path}" + (f" (agent #{index + 1})" if len(items) > 1 else "")
        location: tuple[object, ...] = ()
        try:
            definition = models.AgentDefinition.model_validate(item)
            for number, step in enumerate(definition.steps):
                location = ("steps", number, "config")
                step.validated_config()
        except ValidationError as exc:
            raise errors.ConfigurationError(
                f"agent file {where} is not a valid agent: {_describe(exc, location)}. Expected "
                "name, description, is_active and steps: a list of {name, type: python|llm, config}"
            ) from exc
        definitions.append(definition)
    return definitions


def expand(paths: list[Path]) -> list[Path]:
    """Files as given; directories become their *.yaml, *.yml and *.json files, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml", ".json"})
            )
        else:
            files.append(path)
    return files


def _describe(exc: ValidationError, prefix: tuple[object, ...]) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in (*prefix, *e['loc'])) or 'agent'}: {e['msg']}"
        for e in exc.errors()
    )
