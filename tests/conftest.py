"""Shared fixtures: real PostgreSQL (embedded, and system PostgreSQL 15 for SQL tests), one
fresh database per test cloned from a template with the migrations applied unchanged."""

from __future__ import annotations

import os

# litellm reads these at import; set before anything can import it.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import uuid
from collections.abc import Iterator

import pytest

from tests.support.servers import Cluster, SystemPostgres15, start_embedded_cluster


@pytest.fixture(scope="session")
def embedded_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    cluster = start_embedded_cluster(tmp_path_factory.mktemp("pg"))
    cluster.prepare_template()
    return cluster


@pytest.fixture(scope="session")
def system_pg15_cluster() -> Iterator[Cluster]:
    if not SystemPostgres15.available():
        pytest.skip("Debian's postgresql-15 is not installed here")
    server = SystemPostgres15()
    try:
        cluster = server.start()
        cluster.prepare_template()
        yield cluster
    finally:
        server.stop()


def _fresh_database(cluster: Cluster) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = cluster.create_database(name)
    try:
        yield url
    finally:
        cluster.drop_database(name)


@pytest.fixture
def database_url(embedded_cluster: Cluster) -> Iterator[str]:
    """A fresh, migrated database on the embedded server."""
    yield from _fresh_database(embedded_cluster)


@pytest.fixture(params=["embedded", "system-pg15"])
def any_database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, migrated database on each real server available: SQL tests run on both."""
    cluster_fixture = "embedded_cluster" if request.param == "embedded" else "system_pg15_cluster"
    yield from _fresh_database(request.getfixturevalue(cluster_fixture))
