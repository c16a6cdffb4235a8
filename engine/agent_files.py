"""Agent files (YAML or JSON) → validated AgentDefinitions, with errors that name the file.

Beyond what the database checks, an llm step's model name and templates are checked here, so a
step that could never run is refused when its file is applied rather than when a signal reaches
it. These checks use engine.llm.models_alias and engine.llm.templates, which never import litellm.
Python step code is not compiled here: untrusted code is only ever compiled in the sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from engine import errors, models
from engine.llm import models_alias, templates


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
        configs: list[models.PythonConfig | models.LLMConfig] = []
        try:
            definition = models.AgentDefinition.model_validate(item)
            for number, step in enumerate(definition.steps):
                location = ("steps", number, "config")
                configs.append(step.validated_config())
        except ValidationError as exc:
            raise errors.ConfigurationError(
                f"agent file {where} is not a valid agent: {_describe(exc, location)}. Expected "
                "name, description, is_active and steps: a list of {name, type: python|llm, config}"
            ) from exc
        problems = [
            f"step {number + 1} {step.name!r} (llm): {problem}"
            for number, (step, config) in enumerate(zip(definition.steps, configs, strict=True))
            if isinstance(config, models.LLMConfig)
            for problem in llm_step_problems(config)
        ]
        if problems:
            raise errors.ConfigurationError(
                f"agent file {where}, agent {definition.name!r}: "
                + "; ".join(problems)
                + ". Fix the step config in the file and apply it again "
                "(docs/llm.md lists the model names and the template rules)"
            )
        definitions.append(definition)
    return definitions


def llm_step_problems(config: models.LLMConfig) -> list[str]:
    """What stops an llm step from ever running, whatever its input: an unknown model name, or a
    template (prompt_template, system) with a tag that is not a path or a `{{` never closed.
    Each problem names the config key and says how to fix it. Imports no litellm."""
    problems: list[str] = []
    try:
        models_alias.resolve(config.model)
    except models_alias.UnknownModelError as exc:
        problems.append(f"config.model: {exc}")
    fields = {"prompt_template": config.prompt_template, "system": config.system}
    for field, template in fields.items():
        if template is None:
            continue
        try:
            templates.validate(template, field=f"config.{field}")
        except templates.TemplateError as exc:
            problems.append(str(exc))
    return problems


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
