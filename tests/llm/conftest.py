"""Fixtures for LLM tests: a guard that fails any test reaching a non-loopback host, litellm's
offline switches, and a shared litellm client closed at the end of the session."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from llm_network_guard import NetworkGuard

from engine.llm import protocol

# Before anything imports litellm: its import would otherwise try to fetch a price list.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_OFFLINE_MODE"] = "true"


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    guard = NetworkGuard()
    guard.install(monkeypatch)
    yield guard
    if guard.escapes:
        pytest.fail(f"test tried to reach the network: {guard.escapes}")


@pytest.fixture(scope="session")
async def litellm_client() -> AsyncIterator[protocol.LLMClient]:
    """The real litellm-backed client (imports litellm on first use)."""
    from engine.llm.client import LiteLLMClient

    client = LiteLLMClient()
    yield client
    await client.aclose()
