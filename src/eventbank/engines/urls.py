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

A URL is checked before any engine sees it: one that cannot be what it claims to be (a port
that is no number, an unknown scheme, two slashes after ``sqlite:``, a parameter libpq does
not know) is ``InvalidInput`` that says what a valid one looks like, never a driver's
exception or an "unavailable" store.

``create=False`` opens only a store that exists: for SQLite a missing file is
``NoSuchStore`` (InvalidInput) and nothing is created. PostgreSQL's database must exist in
any case (its tables are created in it); DynamoDB tables are created when missing either way.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from eventbank.domain.errors import InvalidInput
from eventbank.engines.sql.group_commit import split_group_commit
from eventbank.ports.event_store import EventStore
from eventbank.ports.read_store import ReadStore

DEFAULT_STORE_URL = "sqlite:///eventbank.db"

SQLITE_FORM = "sqlite:///relative.db or sqlite:////abs.db"
POSTGRES_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
DYNAMODB_FORM = "dynamodb://TABLE?endpoint_url=http://HOST:PORT&region=REGION (both optional)"
VALID_FORMS = f"{SQLITE_FORM}, {POSTGRES_FORM}, or {DYNAMODB_FORM}"

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")  # botocore's own check
_PASSWORD = re.compile(r"(://[^/?#@:]*:)[^/?#@]*@")


def open_store(url: str, *, create: bool = True) -> EventStore:
    """The engine named by ``url``'s scheme, opened (and migrated) and ready to use; with
    ``create=False`` only a store that exists (see the module's docstring)."""
    scheme = check_store_url(url).scheme
    if scheme == "sqlite":
        from eventbank.engines.sqlite.event_store import SqliteEventStore

        path_url, options = split_group_commit(url)
        return SqliteEventStore(sqlite_path(path_url), create=create, **options)
    if scheme in ("postgresql", "postgres"):
        from eventbank.engines.postgres.event_store import PostgresEventStore

        return PostgresEventStore.from_url(url)
    from eventbank.engines.dynamodb.event_store import DynamoEventStore

    return DynamoEventStore.from_url(url)


def check_store_url(url: str, kind: str = "store") -> SplitResult:
    """``url`` split, once it is known to be a well-formed URL of a supported engine;
    otherwise InvalidInput naming the valid forms. ``kind`` names it in messages."""
    shown = without_password(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"malformed {kind} URL {shown!r} ({exc}); use {VALID_FORMS}") from None
    if parts.scheme == "sqlite":
        path_url, _ = split_group_commit(url)
        if "?" in path_url:
            raise InvalidInput(
                f"unknown SQLite URL parameter(s) in {shown!r}; "
                "only group_commit_max and group_commit_wait_ms are understood"
            )
        sqlite_path(path_url)
    elif parts.scheme in ("postgresql", "postgres"):
        _check_postgres_url(url, shown)
    elif parts.scheme == "dynamodb":
        _check_dynamodb_url(parts, shown)
    else:
        raise InvalidInput(f"unsupported {kind} URL {shown!r}; use {VALID_FORMS}")
    return parts


def _check_postgres_url(url: str, shown: str) -> None:
    """What libpq would refuse only when connecting (so it read as an outage): its own URL
    parse, and the port and sslmode values."""
    from psycopg import Error as PsycopgError
    from psycopg.conninfo import conninfo_to_dict

    def invalid(reason: str) -> InvalidInput:
        return InvalidInput(f"invalid PostgreSQL URL {shown!r}: {reason}; use {POSTGRES_FORM}"
                            "[?sslmode=…&connect_timeout=…]")  # fmt: skip

    conninfo, _ = split_group_commit(url)
    try:
        params = conninfo_to_dict(conninfo)
    except PsycopgError as exc:
        raise invalid(str(exc).strip().splitlines()[0]) from None
    for port in str(params.get("port", "")).split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise invalid(f"port {port!r} is not a number from 1 to 65535")
    if "sslmode" in params and params["sslmode"] not in SSL_MODES:
        raise invalid(f"sslmode must be one of {', '.join(SSL_MODES)}")
    timeout = str(params.get("connect_timeout", "0"))
    if not timeout.lstrip("-").isdigit():
        raise invalid(f"connect_timeout must be a whole number of seconds, not {timeout!r}")


def _check_dynamodb_url(parts: SplitResult, shown: str) -> None:
    """What botocore would raise as a bare ValueError: the endpoint's form and port, the
    region's form (the table name and the parameters' names are the engine's to check)."""

    def invalid(reason: str) -> InvalidInput:
        return InvalidInput(f"invalid DynamoDB URL {shown!r}: {reason}; use {DYNAMODB_FORM}")

    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "endpoint_url" in params:
        endpoint = params["endpoint_url"]
        try:
            split = urlsplit(endpoint)
            split.port  # noqa: B018 - raises ValueError for a port that is no port
        except ValueError as exc:
            raise invalid(f"endpoint_url {endpoint!r}: {exc}") from None
        if split.scheme not in ("http", "https") or not split.hostname:
            raise invalid(f"endpoint_url {endpoint!r} is not http(s)://HOST[:PORT]")
    if "region" in params and not _REGION.fullmatch(params["region"]):
        raise invalid(f"region {params['region']!r} is not a region name (e.g. us-east-1)")


def without_password(url: str) -> str:
    """``url`` fit to print or to put in a message: a password in it becomes ``***`` (even in
    a URL too malformed to parse)."""
    return _PASSWORD.sub(r"\1***@", url, count=1)


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///PATH[?…]`` URL (``sqlite:////abs`` for absolute paths)."""
    prefix = "sqlite:///"
    path = url[len(prefix) :].partition("?")[0]
    if not url.startswith(prefix) or not path:
        raise InvalidInput(f"invalid SQLite URL {url!r}; use {SQLITE_FORM}")
    if path == ":memory:":
        raise InvalidInput("in-memory SQLite is not supported: the ledger must be durable")
    return path


def default_read_store_url(store_url: str) -> str:
    """Where read models live when no ``--read-store`` is given: beside the event store."""
    parts = check_store_url(store_url)
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
    scheme = check_store_url(url, "read store").scheme
    if scheme == "sqlite":
        from eventbank.engines.sqlite.read_store import SqliteReadStore

        return SqliteReadStore(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from eventbank.engines.postgres.read_store import PostgresReadStore

        return PostgresReadStore.from_url(url)
    from eventbank.engines.dynamodb.read_store import DynamoReadStore

    return DynamoReadStore.from_url(url)
