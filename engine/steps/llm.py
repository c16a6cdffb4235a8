"""The `llm` step: render the prompt from the step's input, ask a model, return its answer.

The model is reached through an `LLMClient` (engine.llm.protocol); the default one imports
litellm on first use, so engines and tests that never run an LLM step never import it.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import structlog

from engine import models
from engine.llm import keys, models_alias, output, protocol, retry, templates
from engine.llm.options import LLMOptions
from engine.steps.base import StepContext, StepOutcome

log = structlog.get_logger(__name__)

_ACCEPTED_KEYS = ", ".join(models.LLMConfig.model_fields)

_STATUS_HINTS: dict[int, str] = {
    401: "check the API key in {key_variable}",
    403: "the key in {key_variable} may not have access to this model",
    404: "check the model id; " + models_alias.how_to_name(),
    429: "the provider is rate limiting: try again later, or raise the engine's LLM retry count",
}


class StepConfigError(ValueError):
    """A step that cannot be sent as it is configured on this engine."""


@dataclass(frozen=True)
class _Call:
    request: protocol.LLMRequest
    config: models.LLMConfig
    key_variable: str


class LLMStep:
    """StepExecutor for `type: llm`. Never raises for a problem of the step: bad config,
    template, model name, missing key, provider error or unparsable reply all become a
    StepOutcome error.

    `client` defaults to the litellm-backed one, created on first use. Settings come from
    `options` and/or keyword arguments named like LLMOptions fields (`max_attempts=5`), the
    keywords winning. `environ` is where provider keys are read (default: the process
    environment); `sleep` and `jitter` are the retry backoff's, injectable for tests.
    """

    def __init__(
        self,
        client: protocol.LLMClient | None = None,
        *,
        options: LLMOptions | None = None,
        environ: Mapping[str, str] | None = None,
        sleep: retry.Sleep = asyncio.sleep,
        jitter: retry.Jitter = random.random,
        **settings: Any,
    ) -> None:
        self._client = client
        base = options.model_dump() if options is not None else {}
        # Validated here, so a misspelt setting fails at engine start, not at the first step.
        self._options = LLMOptions.model_validate({**base, **settings})
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._jitter = jitter

    @property
    def options(self) -> LLMOptions:
        return self._options

    @property
    def client(self) -> protocol.LLMClient:
        if self._client is None:
            from engine.llm.client import LiteLLMClient

            self._client = LiteLLMClient()
        return self._client

    async def aclose(self) -> None:
        """Release the client's HTTP connections; call on engine shutdown."""
        if self._client is not None:
            await self._client.aclose()

    async def execute(
        self, step: models.Step, step_input: models.JsonValue, context: StepContext
    ) -> StepOutcome:
        try:
            call = self._prepare(step, step_input)
        except (
            StepConfigError,
            templates.TemplateError,
            models_alias.UnknownModelError,
            keys.MissingKeyError,
        ) as error:
            return StepOutcome(error=str(error))
        retry_notes: list[str] = []
        try:
            response, attempts = await retry.call_with_retries(
                lambda: self.client.complete(call.request),
                self._options.retry_policy(),
                sleep=self._sleep,
                jitter=self._jitter,
                on_retry=lambda attempt, error, delay: retry_notes.append(
                    f"attempt {attempt} failed ({_status_phrase(error)}: {error.message}); "
                    f"retrying in {delay:.2f} s"
                ),
            )
        except retry.CallFailed as failed:
            _log_failure(step, context, call, failed)
            return StepOutcome(
                error=_failure_message(call, failed),
                logs="\n".join(retry_notes),
                metadata={"requested_model": call.request.model, "attempts": failed.attempts},
            )
        return _outcome(step, context, call, response, attempts, "\n".join(retry_notes))

    def _prepare(self, step: models.Step, step_input: models.JsonValue) -> _Call:
        config = _validated_config(step.config)
        model = models_alias.resolve(config.model)
        api_key, key_variable = self._api_key(model, config.api_base)
        limit = self._options.max_prompt_chars
        messages: list[dict[str, str]] = []
        if config.system is not None:
            system = templates.render(config.system, step_input, max_chars=limit, field="system")
            messages.append({"role": "system", "content": system})
        prompt = templates.render(config.prompt_template, step_input, max_chars=limit)
        messages.append({"role": "user", "content": prompt})
        request = protocol.LLMRequest(
            model=model.litellm_id,
            messages=tuple(messages),
            timeout_s=self._options.timeout_s(config.timeout_ms),
            temperature=config.temperature,
            max_tokens=config.max_tokens or self._options.default_max_tokens,
            api_base=config.api_base,
            api_key=api_key,
        )
        return _Call(request=request, config=config, key_variable=key_variable)

    def _api_key(self, model: models_alias.ModelId, api_base: str | None) -> tuple[str, str]:
        variable = keys.key_variable(model.provider)
        if api_base is None:
            return keys.provider_key(model.provider, self._environ), variable
        if not self._options.allow_api_base:
            raise StepConfigError(
                "api_base is not allowed on this engine; remove api_base from the step config "
                "or ask the engine's operator to allow it"
            )
        if _is_trusted(api_base, self._options.trusted_api_bases):
            return keys.provider_key(model.provider, self._environ), variable
        # An api_base chosen by the agent's author never receives the engine's keys.
        return keys.NO_KEY, variable


def key_variables_needed(steps: Iterable[models.StepDefinition]) -> set[str]:
    """The environment variables the LLM steps among `steps` read provider keys from, so a
    caller (the demo) can skip an agent whose keys are not set. A step with its own api_base
    needs none; an unknown model name is skipped, since running the step explains it."""
    needed: set[str] = set()
    for step in steps:
        if step.type != "llm" or "api_base" in step.config:
            continue
        try:
            model = models_alias.resolve(str(step.config.get("model", "")))
        except models_alias.UnknownModelError:
            continue
        needed.add(keys.key_variable(model.provider))
    return needed


def _is_trusted(api_base: str, trusted: tuple[str, ...]) -> bool:
    # Whole path segments only: "http://llm.local" must not trust "http://llm.local.evil.example".
    base = api_base.rstrip("/")
    return any(base == t.rstrip("/") or base.startswith(t.rstrip("/") + "/") for t in trusted)


def _validated_config(config: dict[str, Any]) -> models.LLMConfig:
    try:
        return models.LLMConfig.model_validate(config)
    except pydantic.ValidationError as error:
        problems = []
        for detail in error.errors():
            where = ".".join(str(part) for part in detail["loc"])
            # pydantic puts "Value error, " before a validator's own words.
            words = str(detail["msg"]).removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden":
                problems.append(
                    f"unknown config key {where!r} (llm steps accept: {_ACCEPTED_KEYS})"
                )
            else:
                problems.append(f"config.{where}: {words}" if where else f"config: {words}")
        raise StepConfigError("invalid llm step config: " + "; ".join(problems)) from None


def _outcome(
    step: models.Step,
    context: StepContext,
    call: _Call,
    response: protocol.LLMResponse,
    attempts: int,
    logs: str,
) -> StepOutcome:
    metadata = {
        "usage": response.usage.as_dict(),
        "model": response.model,
        "requested_model": call.request.model,
        "finish_reason": response.finish_reason,
        "cost_usd": response.cost_usd,
        "attempts": attempts,
    }
    log.info(
        "llm_call_finished",
        step_id=str(step.id),
        session_id=str(context.session_id),
        model=response.model,
        attempts=attempts,
        # Not `total_tokens`: the log redactor hides any field whose name contains "token".
        usage=response.usage.as_dict(),
        cost_usd=response.cost_usd,
    )
    if call.config.response_format == "text":
        return StepOutcome(output=response.text, logs=logs, metadata=metadata)
    try:
        value = output.parse_json(response.text, response.finish_reason)
    except output.OutputError as error:
        return StepOutcome(error=str(error), logs=logs, metadata=metadata)
    return StepOutcome(output=value, logs=logs, metadata=metadata)


def _failure_message(call: _Call, failed: retry.CallFailed) -> str:
    error = failed.error
    if error.kind == "unsupported_params":
        return error.message
    tries = f"{failed.attempts} attempt{'s' if failed.attempts != 1 else ''}"
    message = f"LLM call to {call.request.model} failed after {tries}: "
    message += f"{_status_phrase(error)}: {error.message}"
    hint = _STATUS_HINTS.get(error.status or 0)
    if hint is not None and not (call.request.api_base and error.status in (401, 403)):
        message += f" ({hint.format(key_variable=call.key_variable)})"
    elif not error.retryable:
        message += " (not retried: the provider refused the request as it is)"
    return message


def _status_phrase(error: protocol.LLMCallError) -> str:
    if error.status is None:
        return error.kind.replace("_", " ")
    return f"status {error.status} ({protocol.describe_status(error.status)})"


def _log_failure(
    step: models.Step, context: StepContext, call: _Call, failed: retry.CallFailed
) -> None:
    log.warning(
        "llm_call_failed",
        step_id=str(step.id),
        session_id=str(context.session_id),
        model=call.request.model,
        attempts=failed.attempts,
        status=failed.error.status,
        kind=failed.error.kind,
    )
