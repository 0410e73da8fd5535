"""Open an event store from a URL, so every interface selects engines the same way.

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the embedded default)
- ``postgresql://user:password@host:port/dbname`` (also ``postgres://``)
- ``dynamodb://TABLE?endpoint_url=http://127.0.0.1:8000&region=us-east-1``
"""

from __future__ import annotations

from urllib.parse import urlsplit

from eventbank.domain.errors import InvalidInput
from eventbank.store.contract import EventStore

DEFAULT_STORE_URL = "sqlite:///eventbank.db"


def open_store(url: str) -> EventStore:
    """The engine named by ``url``'s scheme, opened (and migrated) and ready to use.

    Engines are imported lazily so that the embedded default needs no server driver at all.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventbank.store.sqlite import SqliteEventStore

        return SqliteEventStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from eventbank.store.postgres import PostgresEventStore

        return PostgresEventStore.from_url(url)
    if scheme == "dynamodb":
        from eventbank.store.dynamodb import DynamoEventStore

        return DynamoEventStore.from_url(url)
    raise InvalidInput(
        f"unsupported store URL {url!r}; expected sqlite:///PATH, postgresql://… or dynamodb://TABLE"
    )


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///PATH`` URL (``sqlite:////abs`` for absolute paths)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise InvalidInput(
            f"invalid SQLite URL {url!r}; use sqlite:///relative.db or sqlite:////abs.db"
        )
    path = url[len(prefix) :]
    if path == ":memory:":
        raise InvalidInput("in-memory SQLite is not supported: the ledger must be durable")
    return path
