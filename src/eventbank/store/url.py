"""Open an event store from a URL, so every interface selects engines the same way.

- ``sqlite:///relative/path.db`` and ``sqlite:////absolute/path.db`` (the embedded default)
- ``postgresql://user:password@host:port/dbname`` (also ``postgres://``)
- ``dynamodb://TABLE?endpoint_url=http://127.0.0.1:8000&region=us-east-1``

SQLite and PostgreSQL URLs also take the group-commit settings ``group_commit_max`` and
``group_commit_wait_ms`` (store/group_commit.py), e.g.
``sqlite:///x.db?group_commit_wait_ms=1&group_commit_max=128``.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

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

        path_url, options = split_group_commit(url)
        if "?" in path_url:
            raise InvalidInput(
                f"unknown SQLite URL parameter(s) in {url!r}; "
                "only group_commit_max and group_commit_wait_ms are understood"
            )
        return SqliteEventStore(sqlite_path(path_url), **options)
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


def split_group_commit(url: str) -> tuple[str, dict[str, int | float]]:
    """``url`` without its group-commit query parameters, and those as engine keyword arguments.

    Other parameters are kept byte for byte (libpq reads PostgreSQL's); the values are checked
    by the engines' GroupCommit.
    """
    base, _, query = url.partition("?")
    kept, options = [], {}
    for piece in query.split("&") if query else []:
        key, _, text = piece.partition("=")
        parse = _GROUP_COMMIT_PARAMETERS.get(key)
        if parse is None:
            kept.append(piece)
            continue
        try:
            options[key] = parse(unquote(text))
        except ValueError:
            raise InvalidInput(f"{key} must be a number, not {unquote(text)!r}") from None
    return (f"{base}?{'&'.join(kept)}" if kept else base), options


_GROUP_COMMIT_PARAMETERS = {"group_commit_max": int, "group_commit_wait_ms": float}
