"""Open a read-model store from a URL; the event store and read store are chosen independently.

Defaults, when no ``--read-store`` is given, keep read models beside the events:

- ``sqlite:///X.db``           -> ``sqlite:///X.read.db`` (a separate file: one writer per file)
- ``postgresql://…/db``        -> the same database (read-model tables next to the events)
- ``dynamodb://TABLE?…``       -> ``dynamodb://TABLE-read?…`` (a table of its own)
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from eventbank.domain.errors import InvalidInput
from eventbank.readmodels.contract import ReadStore
from eventbank.store.url import split_group_commit, sqlite_path


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
        from eventbank.readmodels.sqlite import SqliteReadStore

        return SqliteReadStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from eventbank.readmodels.postgres import PostgresReadStore

        return PostgresReadStore.from_url(url)
    if scheme == "dynamodb":
        from eventbank.readmodels.dynamodb import DynamoReadStore

        return DynamoReadStore.from_url(url)
    raise InvalidInput(
        f"unsupported read store URL {url!r}; expected sqlite:///PATH, postgresql://… "
        "or dynamodb://TABLE"
    )
