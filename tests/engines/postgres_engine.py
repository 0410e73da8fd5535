"""The PostgreSQL engine's fixtures: one throwaway server per session, a fresh database per test.

With ``EVENTBANK_TEST_PG_URL`` set (a role allowed to CREATE DATABASE), that server is used.
Otherwise the session starts its own PostgreSQL 15 cluster (``reliability/servers.py``:
``initdb`` + ``pg_ctl`` in a temp dir on a free loopback port, trust auth on loopback, fsync
left on) and stops and deletes it at the end, whatever happened.

``CREATE DATABASE`` takes about 0.2 s here (it copies and syncs the template), so a background
thread keeps ``DATABASES_AHEAD`` empty databases made before the tests that will take them, and
another drops each after its test. A test still gets a database no one else has used.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from urllib.parse import urlsplit

import pytest

from reliability.servers import PostgresCluster, ServerError, create_database, drop_database

DATABASES_AHEAD = 2


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


class FreshDatabases:
    """New, empty databases on one server, each made a little ahead of the test that takes it and
    dropped behind it, by two background threads (one creates, as two ``CREATE DATABASE`` from
    one template may not run at once; one drops)."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="create-database")
        self._dropper = ThreadPoolExecutor(1, thread_name_prefix="drop-database")
        self._ahead: deque[Future[str]] = deque(self._make() for _ in range(DATABASES_AHEAD))
        self._drops: list[Future[None]] = []

    def _make(self) -> Future[str]:
        return self._maker.submit(create_database, self.server_url)

    @contextmanager
    def fresh(self) -> Iterator[str]:
        """The URL of a database no one has used, dropped (connections closed) afterwards."""
        url = self._ahead.popleft().result()
        self._ahead.append(self._make())
        try:
            yield url
        finally:
            self._drops.append(self._dropper.submit(self._drop, url))

    def _drop(self, url: str) -> None:
        drop_database(self.server_url, urlsplit(url).path.lstrip("/"))

    def close(self) -> None:
        """Drop the databases made ahead and never taken; a drop that failed fails here."""
        while self._ahead:
            with suppress(Exception):  # a creation that failed has failed its test already
                self._drop(self._ahead.popleft().result())
        self._maker.shutdown()
        self._dropper.shutdown()
        for drop in self._drops:
            drop.result()


@pytest.fixture(scope="session")
def postgres_databases(postgres_server_url: str) -> Iterator[FreshDatabases]:
    databases = FreshDatabases(postgres_server_url)
    yield databases
    databases.close()


@pytest.fixture
def postgres_store_url(postgres_databases: FreshDatabases) -> Iterator[str]:
    """A fresh, empty database per test for the event store."""
    with postgres_databases.fresh() as url:
        yield url


@pytest.fixture(scope="module")
def postgres_module_store_url(postgres_databases: FreshDatabases) -> Iterator[str]:
    """A fresh database shared by the tests of one module (see conftest's module_store_url)."""
    with postgres_databases.fresh() as url:
        yield url


@pytest.fixture
def postgres_read_store_url(postgres_databases: FreshDatabases) -> Iterator[str]:
    """A fresh database of its own for the read models (the default, sharing the event store's
    database, is covered in tests/test_postgres_read_store.py)."""
    with postgres_databases.fresh() as url:
        yield url
