"""Fixtures for the SQL tests: a superuser connection, the engine as service_role, two users,
and a module-wide database for tests that each roll their own transaction back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.servers import Cluster
from tests.support.sql import Conn, Engine, connect, create_user


@pytest.fixture
def admin(any_database_url: str) -> Iterator[Conn]:
    """A superuser connection (autocommit) on a fresh migrated database."""
    with connect(any_database_url) as conn:
        yield conn


@pytest.fixture
def engine(any_database_url: str) -> Iterator[Engine]:
    """The engine's functions, called on a connection that runs as service_role."""
    with connect(any_database_url, role="service_role") as conn:
        yield Engine(conn)


@pytest.fixture
def user_a(admin: Conn) -> uuid.UUID:
    return create_user(admin, "a@example.test")


@pytest.fixture
def user_b(admin: Conn) -> uuid.UUID:
    return create_user(admin, "b@example.test")


@pytest.fixture(scope="module", params=["embedded", "system-pg15"])
def module_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """One migrated database per module and server, for tests that roll back what they do."""
    fixture = "embedded_cluster" if request.param == "embedded" else "system_pg15_cluster"
    cluster: Cluster = request.getfixturevalue(fixture)
    name = f"m_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        cluster.drop_database(name)


@pytest.fixture(scope="module")
def module_admin(module_database_url: str) -> Iterator[Conn]:
    with connect(module_database_url) as conn:
        yield conn
