"""The litellm-backed LLMClient: the only module that imports litellm, lazily and offline.

litellm is imported on the first call, in a worker thread (the import takes seconds and would
stall the event loop), after the environment switches that stop it fetching anything at import.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
from types import ModuleType
from typing import Any

from engine.llm import keys, protocol

# Set before the import: litellm reads them at import time to skip fetching its price map.
_OFFLINE_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}
# litellm's own timeout should fire first; this outer bound catches the cases where it does not.
_OUTER_TIMEOUT_GRACE_S = 2.0
_MESSAGE_LIMIT = 500

_PREFIXES = re.compile(r"^(?:litellm\.\w+:\s*|\w+Error:\s*|\w+(?:Exception|Error)\s+-\s*)+")
_HANDLE_WITH = re.compile(r"\.?\s*Handle with `litellm\.\w+`\.?\s*$")
# litellm's advice names its own switches (drop_params, reasoning_effort), which a step cannot set.
_DROP_PARAMS_ADVICE = re.compile(r"\s*To drop\b.*$", re.DOTALL)
_REASONING_EFFORT_CLAUSE = re.compile(r"\s+unless reasoning_effort[^.]*\.")

_import_lock = threading.Lock()
_module: ModuleType | None = None


def load_litellm() -> ModuleType:
    """Import litellm once, configured for offline use and quiet output."""
    global _module
    with _import_lock:
        if _module is None:
            os.environ.update(_OFFLINE_ENV)
            os.environ.setdefault("LITELLM_LOG", "ERROR")
            import litellm

            litellm.suppress_debug_info = True
            _module = litellm
    return _module


class LiteLLMClient:
    """An LLMClient that sends each request once through `litellm.acompletion`."""

    def __init__(self) -> None:
        self._litellm: ModuleType | None = None

    async def complete(self, request: protocol.LLMRequest) -> protocol.LLMResponse:
        litellm = await self._load()
        try:
            response = await asyncio.wait_for(
                litellm.acompletion(**_call_arguments(request)),
                timeout=request.timeout_s + _OUTER_TIMEOUT_GRACE_S,
            )
        except TimeoutError:
            raise protocol.LLMCallError(
                f"no answer within {request.timeout_s:g} s (stopped by Portico's outer limit)",
                status=408,
                retryable=True,
                kind="timeout",
            ) from None
        except Exception as error:
            raise _call_error(litellm, error, request) from None
        if not getattr(response, "choices", None):
            # An OpenAI-compatible server may answer 200 with no choices; that is the
            # provider's fault, not a Portico bug, so it becomes a step error.
            raise protocol.LLMCallError(
                "the provider answered without any choices (no text to use); check the "
                "model, or the server behind api_base",
                kind="bad_response",
            )
        return _to_response(response, request)

    async def aclose(self) -> None:
        """Close litellm's cached HTTP clients (call before the event loop ends)."""
        if self._litellm is not None:
            await self._litellm.close_litellm_async_clients()

    async def _load(self) -> ModuleType:
        if self._litellm is None:
            self._litellm = await asyncio.to_thread(load_litellm)
        return self._litellm


def _call_arguments(request: protocol.LLMRequest) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": request.model,
        "messages": [dict(message) for message in request.messages],
        "timeout": request.timeout_s,
        # Portico owns retries: litellm's wrapper retries 4xx too (or silently nothing without
        # tenacity) and the OpenAI SDK adds two hidden retries of its own.
        "num_retries": 0,
        "max_retries": 0,
        "api_key": request.api_key,
    }
    if request.temperature is not None:
        arguments["temperature"] = request.temperature
    if request.max_tokens is not None:
        # litellm renames this to max_completion_tokens for models that want that.
        arguments["max_tokens"] = request.max_tokens
    if request.api_base is not None:
        arguments["api_base"] = request.api_base
    return arguments


def _to_response(response: Any, request: protocol.LLMRequest) -> protocol.LLMResponse:
    choice = response.choices[0]
    usage = getattr(response, "usage", None)
    cost = (getattr(response, "_hidden_params", None) or {}).get("response_cost")
    if request.api_base is not None or isinstance(cost, bool) or not isinstance(cost, int | float):
        # A custom api_base serves its own models: the public price of the name is not its cost.
        cost = None
    return protocol.LLMResponse(
        text=choice.message.content or "",
        model=getattr(response, "model", None) or request.model,
        usage=protocol.Usage(
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            total_tokens=getattr(usage, "total_tokens", None),
        ),
        finish_reason=choice.finish_reason,
        cost_usd=float(cost) if cost is not None else None,
    )


def _call_error(
    litellm: ModuleType, error: Exception, request: protocol.LLMRequest
) -> protocol.LLMCallError:
    message = keys.redact(_provider_message(error), (request.api_key or "",))
    status = getattr(error, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(error, litellm.UnsupportedParamsError):
        cause = _REASONING_EFFORT_CLAUSE.sub(".", _DROP_PARAMS_ADVICE.sub("", message)).strip()
        fix = (
            "reasoning models (OpenAI's o-series and gpt-5 family) accept only temperature 1, "
            "so set it to 1 or leave it out"
            if "temperature" in cause
            else "remove or change that parameter"
        )
        return protocol.LLMCallError(
            f"model {request.model} does not accept the step's parameters: {cause} "
            f"Change the step config: {fix}.",
            status=status,
            kind="unsupported_params",
        )
    if isinstance(error, litellm.Timeout):
        return protocol.LLMCallError(
            f"no answer within {request.timeout_s:g} s; raise timeout_ms in the step config if "
            "the model needs longer",
            status=408,
            retryable=True,
            kind="timeout",
        )
    if status is None:
        return protocol.LLMCallError(
            f"{type(error).__name__}: {message}", retryable=False, kind="client_error"
        )
    if status >= 500 and getattr(error, "litellm_response_headers", None) is None:
        # litellm reports a refused or broken connection as a 500 with no response behind it
        # (no headers); saying "server error" would send the reader to the wrong place.
        where = request.api_base or request.model.partition("/")[0]
        return protocol.LLMCallError(
            f"no response from {where} ({message.rstrip('.')}); check the network or the server",
            retryable=True,
            kind="connection_error",
        )
    return protocol.LLMCallError(
        message,
        status=status,
        retryable=status == 429 or status >= 500,
        retry_after_s=_retry_after_s(error),
        kind="rate_limited" if status == 429 else "provider_error",
    )


def _provider_message(error: Exception) -> str:
    """The provider's own words, without litellm's class-name prefixes and advice."""
    text = str(getattr(error, "message", None) or error).strip()
    text = _HANDLE_WITH.sub("", _PREFIXES.sub("", text))
    if text.startswith("{"):
        try:
            body = json.loads(text)
            text = str(body["error"]["message"])
        except (ValueError, KeyError, TypeError):
            pass
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "…"


def _retry_after_s(error: Exception) -> float | None:
    headers = getattr(error, "litellm_response_headers", None) or getattr(
        getattr(error, "response", None), "headers", None
    )
    try:
        value = headers.get("retry-after") if headers is not None else None
        return float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        # An HTTP-date Retry-After, or headers of an unexpected shape: fall back to backoff.
        return None
