"""Open a read-model store from a URL; the event store and read store are chosen independently.

- ``sqlite:///path.read.db`` — the default next to a SQLite event store (``X.db`` -> ``X.read.db``)
"""

from __future__ import annotations

from urllib.parse import urlsplit

from eventbank.domain.errors import InvalidInput
from eventbank.readmodels.contract import ReadStore
from eventbank.store.url import sqlite_path


def default_read_store_url(store_url: str) -> str:
    """Where read models live when no ``--read-store`` is given: beside the event store."""
    if urlsplit(store_url).scheme == "sqlite":
        path = sqlite_path(store_url)
        stem = path[: -len(".db")] if path.endswith(".db") else path
        return f"sqlite:///{stem}.read.db"
    raise InvalidInput(
        f"no default read store for {store_url!r}; pass --read-store (or EVENTBANK_READ_STORE)"
    )


def open_read_store(url: str) -> ReadStore:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from eventbank.readmodels.sqlite import SqliteReadStore

        return SqliteReadStore(sqlite_path(url))
    raise InvalidInput(f"unsupported read store URL {url!r}; expected sqlite:///PATH")
