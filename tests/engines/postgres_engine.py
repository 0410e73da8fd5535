"""The PostgreSQL engine's fixtures: one throwaway server per session, a fresh database per test.

With ``EVENTBANK_TEST_PG_URL`` set (a role allowed to CREATE DATABASE), that server is used.
Otherwise the session starts its own PostgreSQL 15 cluster (``reliability/servers.py``:
``initdb`` + ``pg_ctl`` in a temp dir on a free loopback port, trust auth on loopback, fsync
left on) and stops and deletes it at the end, whatever happened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from reliability.servers import PostgresCluster, ServerError, fresh_database


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of a server on which tests may create and drop databases."""
    if url := os.environ.get("EVENTBANK_TEST_PG_URL"):
        yield url
        return
    with ExitStack() as stack:
        try:
            cluster = stack.enter_context(PostgresCluster())
        except ServerError as exc:
            pytest.fail(f"{exc}\nor set EVENTBANK_TEST_PG_URL to a server the tests may create "
                        "databases on", pytrace=False)  # fmt: skip
        yield cluster.url


@pytest.fixture
def postgres_store_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database per test for the event store."""
    with fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def postgres_read_store_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database of its own for the read models (the default, sharing the event store's
    database, is covered in tests/test_postgres_read_store.py)."""
    with fresh_database(postgres_server_url) as url:
        yield url
