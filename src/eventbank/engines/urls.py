"""Open the event store and the read store from URLs, so every interface selects engines alike.

Event store URLs:

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the embedded default)
- ``postgresql://user:password@host:port/dbname`` (also ``postgres://``)
- ``dynamodb://TABLE?endpoint_url=http://127.0.0.1:8000&region=us-east-1``

SQLite and PostgreSQL URLs also take the group-commit settings ``group_commit_max`` and
``group_commit_wait_ms`` (``engines/sql/group_commit.py``), e.g.
``sqlite:///x.db?group_commit_wait_ms=1&group_commit_max=128``.

The read store is chosen independently; when none is given, read models live beside the events:

- ``sqlite:///X.db``           -> ``sqlite:///X.read.db`` (a separate file: one writer per file)
- ``postgresql://…/db``        -> the same database (read-model tables next to the events)
- ``dynamodb://TABLE?…``       -> ``dynamodb://TABLE-read?…`` (a table of its own)

Engines are imported lazily, so the embedded default needs no server driver at all.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from eventbank.domain.errors import InvalidInput
from eventbank.engines.sql.group_commit import split_group_commit
from eventbank.ports.event_store import EventStore
from eventbank.ports.read_store import ReadStore

DEFAULT_STORE_URL = "sqlite:///eventbank.db"


def open_store(url: str) -> EventStore:
    """The engine named by ``url``'s scheme, opened (and migrated) and ready to use."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventbank.engines.sqlite.event_store import SqliteEventStore

        path_url, options = split_group_commit(url)
        if "?" in path_url:
            raise InvalidInput(
                f"unknown SQLite URL parameter(s) in {url!r}; "
                "only group_commit_max and group_commit_wait_ms are understood"
            )
        return SqliteEventStore(sqlite_path(path_url), **options)
    if scheme in ("postgresql", "postgres"):
        from eventbank.engines.postgres.event_store import PostgresEventStore

        return PostgresEventStore.from_url(url)
    if scheme == "dynamodb":
        from eventbank.engines.dynamodb.event_store import DynamoEventStore

        return DynamoEventStore.from_url(url)
    raise InvalidInput(
        f"unsupported store URL {url!r}; expected sqlite:///PATH, postgresql://… or dynamodb://TABLE"
    )


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///PATH[?…]`` URL (``sqlite:////abs`` for absolute paths)."""
    prefix = "sqlite:///"
    path = url[len(prefix) :].partition("?")[0]
    if not url.startswith(prefix) or not path:
        raise InvalidInput(
            f"invalid SQLite URL {url!r}; use sqlite:///relative.db or sqlite:////abs.db"
        )
    if path == ":memory:":
        raise InvalidInput("in-memory SQLite is not supported: the ledger must be durable")
    return path


def default_read_store_url(store_url: str) -> str:
    """Where read models live when no ``--read-store`` is given: beside the event store."""
    parts = urlsplit(store_url)
    if parts.scheme == "sqlite":
        path = sqlite_path(store_url)
        stem = path[: -len(".db")] if path.endswith(".db") else path
        return f"sqlite:///{stem}.read.db"
    if parts.scheme in ("postgresql", "postgres"):
        return split_group_commit(store_url)[0]  # group-commit options are the event store's
    if parts.scheme == "dynamodb":
        return urlunsplit(parts._replace(netloc=f"{parts.netloc}-read"))
    raise InvalidInput(f"no default read store for {store_url!r}; pass --read-store")


def open_read_store(url: str) -> ReadStore:
    """The read-model engine named by ``url``'s scheme, opened and migrated (imported lazily)."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventbank.engines.sqlite.read_store import SqliteReadStore

        return SqliteReadStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from eventbank.engines.postgres.read_store import PostgresReadStore

        return PostgresReadStore.from_url(url)
    if scheme == "dynamodb":
        from eventbank.engines.dynamodb.read_store import DynamoReadStore

        return DynamoReadStore.from_url(url)
    raise InvalidInput(
        f"unsupported read store URL {url!r}; expected sqlite:///PATH, postgresql://… "
        "or dynamodb://TABLE"
    )
