"""Sandbox fixtures: real worker processes (no database). A module shares one pool where the
test is about the language layer; tests about state across runs take fresh tenants or pools.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from engine.sandbox.pool import SandboxPool
from engine.sandbox.process import BOOT_DIR
from engine.sandbox.settings import SandboxSettings
from tests.sandbox.escape import Escapes, escapes

FAST = SandboxSettings(pool_size=2, default_timeout_ms=5_000)


@pytest_asyncio.fixture(scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    """One started pool for the whole test module."""
    sandbox = SandboxPool(FAST)
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.close()


@pytest.fixture
def tenant() -> str:
    """A tenant no other test has used."""
    return f"tenant-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def boot_modules() -> Iterator[None]:
    """The worker's boot modules importable in this process, for unit tests of pure logic
    (they run here unconfined: only functions without side effects are tested this way)."""
    sys.path.insert(0, str(BOOT_DIR))
    try:
        yield
    finally:
        sys.path.remove(str(BOOT_DIR))


@pytest_asyncio.fixture
async def escaped() -> AsyncIterator[Escapes]:
    """Escaped workers (plain Python inside the real confinement), killed after the test."""
    async with escapes() as started:
        yield started
