"""Open an event store from a URL, so every interface selects engines the same way.

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the embedded default)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from eventbank.domain.errors import InvalidInput
from eventbank.store.contract import EventStore

DEFAULT_STORE_URL = "sqlite:///eventbank.db"


def open_store(url: str) -> EventStore:
    """The engine named by ``url``'s scheme, opened (and migrated) and ready to use."""
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventbank.store.sqlite import SqliteEventStore

        return SqliteEventStore(sqlite_path(url))
    raise InvalidInput(f"unsupported store URL {url!r}; expected sqlite:///PATH")


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
