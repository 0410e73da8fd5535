"""Where each engine's fresh stores come from, and what durability they run with.

SQLite: a temp file per store. PostgreSQL: a database per store on one throwaway cluster.
DynamoDB: a table per store, each on a DynamoDB Local of its own. Servers are started by
``reliability/servers.py`` unless one is given (``--pg-url``, ``--dynamodb-endpoint``). Every
store is dropped after its run, so each run starts empty.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import boto3
import psycopg
from botocore.exceptions import ClientError

from reliability.servers import (
    AWS_LOCAL_ENV,
    AWS_REGION,
    AWS_UNSET,
    DynamoDBLocal,
    PostgresCluster,
    fresh_database,
)

ENGINES = ("sqlite", "postgresql", "dynamodb")


class Engine(Protocol):
    name: str
    durability: str

    def fresh(self) -> AbstractContextManager[str]:
        """The URL of a new, empty store, removed afterwards."""
        ...


class SqliteStores:
    name = "sqlite"
    durability = "WAL, synchronous=FULL (a commit is on disk when it returns)"

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def fresh(self) -> Iterator[str]:
        folder = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            yield f"sqlite:///{folder / 'events.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)


class PostgresStores:
    name = "postgresql"

    def __init__(self, server_url: str):
        self.server_url = server_url
        with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as conn:
            settings = [
                f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
                for name in ("fsync", "synchronous_commit", "full_page_writes")
            ]
        self.durability = ", ".join(settings)

    def fresh(self) -> AbstractContextManager[str]:
        return fresh_database(self.server_url)


class DynamoStores:
    """A table per store; on a DynamoDB Local of its own unless an endpoint is given, since
    DynamoDB Local slows down as a server ages (a later run would pay for an earlier one)."""

    name = "dynamodb"

    def __init__(self, endpoint: str | None):
        self.endpoint = endpoint
        self.durability = "DynamoDB Local in memory (throughput only, no durability), " + (
            f"at {endpoint}" if endpoint else "a fresh server per store"
        )
        for key in AWS_UNSET:  # DynamoDB Local takes any key; never reach a real account
            os.environ.pop(key, None)
        os.environ.update(AWS_LOCAL_ENV)

    @contextmanager
    def fresh(self) -> Iterator[str]:
        table = f"bench-{uuid.uuid4().hex[:12]}"
        if self.endpoint is None:
            with DynamoDBLocal() as server:
                yield server.store_url(table)
            return
        try:
            yield f"dynamodb://{table}?endpoint_url={self.endpoint}&region={AWS_REGION}"
        finally:
            client = boto3.client("dynamodb", endpoint_url=self.endpoint, region_name=AWS_REGION)
            for name in (table, f"{table}-read"):  # and its read models', if any were made
                with suppress(ClientError):
                    client.delete_table(TableName=name)
            client.close()


@contextmanager
def open_engines(
    names: Sequence[str], *, pg_url: str | None = None, dynamodb_endpoint: str | None = None
) -> Iterator[list[Engine]]:
    """The engines named, in order, with their servers running until the block ends."""
    with ExitStack() as stack:
        engines: list[Engine] = []
        for name in names:
            if name == "sqlite":
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="eb-bench-"))
                engines.append(SqliteStores(Path(folder)))
            elif name == "postgresql":
                url = pg_url or stack.enter_context(PostgresCluster()).url
                engines.append(PostgresStores(url))
            elif name == "dynamodb":
                engines.append(DynamoStores(dynamodb_endpoint))
            else:
                raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")
        yield engines


def engine_of(store_url: str) -> str:
    """The engine name of a store URL, as the report spells it."""
    scheme = urlsplit(store_url).scheme
    return "postgresql" if scheme == "postgres" else scheme
