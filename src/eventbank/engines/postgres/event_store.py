"""The PostgreSQL engine: psycopg 3 over a connection pool; every append is one transaction.

Global order without skipped events (docs/architecture.md)
----------------------------------------------------------
``position`` comes from an identity sequence, and ``nextval`` is not transactional: if appends
ran concurrently, a transaction could take position 10, another take 11 and commit first, and a
reader paging ``position > 9`` would see 11, move its cursor past 10 and never see it.

Technique chosen: **appends are serialised**. Every append transaction first takes one
transaction-level advisory lock (``pg_advisory_xact_lock``); PostgreSQL releases it only after
the commit is visible to others. So positions are handed out in commit order, a visible
position implies every smaller position that will ever exist is visible too (gaps left by
rolled-back appends are never filled), and the feed is the plain ``position > after ORDER BY
position``. Under the lock the expected-version checks are exact, as with SQLite's
``BEGIN IMMEDIATE``; the unique constraints stay as the backstop.

Cost: one append transaction at a time per database. Each holds the lock for its checks,
inserts and commit flush (fsync), so PostgreSQL cannot group the commits of concurrent writers
itself; instead this engine group-commits (engines/sql/group_commit.py): concurrent appends in one
process share one transaction, which takes the lock once, checks and inserts the whole batch in
three statements (engines/sql/screening.py) and flushes once. A writer waits at most
``lock_timeout_s`` for the lock and then gets ``StoreUnavailable`` (retryable). Reads, snapshots
and command look-ups never take the lock.

Rejected alternative: recording ``pg_current_xact_id()`` per row and reading only below
``pg_snapshot_xmin(pg_current_snapshot())`` keeps writers concurrent, but positions are not
taken in transaction-id order, so with a single ``after_position`` cursor it still skips: xid
100 writes position 10, xid 101 takes 11, xid 100 writes 12 and commits; a reader below xmin 101
returns 10 and 12 and never sees 11 (tests/test_postgres_engine.py catches this every run). It
needs an ``(xid, position)`` cursor, and its feed would not follow commit order.

Payloads are stored in ``json`` columns (not ``jsonb``) as canonical JSON text, so they read
back exactly as written (big integers, key order, ``\\u0000``) and match the SQLite engine.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager

import psycopg
from psycopg.types.json import Json

from eventbank.domain.canonical import canonical_json
from eventbank.engines.postgres import connection as pg
from eventbank.engines.postgres.json_rows import insert_rows, rows_param
from eventbank.engines.sql.group_commit import (
    DEFAULT_MAX,
    DEFAULT_WAIT_MS,
    GroupCommit,
    split_group_commit,
)
from eventbank.engines.sql.screening import (
    COMMAND_COLUMNS,
    EVENT_COLUMNS,
    STORED_EVENT_COLUMNS,
    Dialect,
    Head,
    QueuedAppends,
    Wanted,
    command_rows,
    event_rows,
    write_appends,
)
from eventbank.ports.event_store import (
    GENESIS_HASH,
    CommandRecord,
    NewEvent,
    RecordedEvent,
    Snapshot,
    by_stream,
    check_max_version,
    check_read_limit,
    check_snapshots_read,
    check_stream_ids,
    check_stream_read,
    check_streams_read,
)

SCHEMA_VERSION = 2

# Advisory locks are keyed (namespace, key) per database; the namespace is "evnt" in ASCII.
_LOCK_NAMESPACE = 0x65766E74
_MIGRATION_LOCK = 1
_APPEND_LOCK = 2

# Migration N brings the schema from version N-1 to N. Append only; never edit a shipped one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id       text   NOT NULL,
        aggregate_id   text   NOT NULL,
        aggregate_type text   NOT NULL,
        version        bigint NOT NULL CHECK (version >= 1),
        event_type     text   NOT NULL,
        schema_version bigint NOT NULL,
        data           json   NOT NULL,
        metadata       json   NOT NULL,
        hash           text   NOT NULL,
        CONSTRAINT events_event_id_key UNIQUE (event_id),
        CONSTRAINT events_stream_version_key UNIQUE (aggregate_id, version)
    );
    CREATE TABLE commands (
        command_id  text NOT NULL CONSTRAINT commands_pkey PRIMARY KEY,
        fingerprint text NOT NULL,
        outcome     json NOT NULL
    );
    CREATE TABLE snapshots (
        aggregate_id         text   PRIMARY KEY,
        aggregate_type       text   NOT NULL,
        version              bigint NOT NULL,
        state_schema_version bigint NOT NULL,
        state                json   NOT NULL
    );
    """,
    # 2: every snapshot is kept, keyed by (stream, version), so a past instant folds from the
    # snapshot nearest below it (application/statements.py); the rows already there stay.
    """
    ALTER TABLE snapshots DROP CONSTRAINT snapshots_pkey;
    ALTER TABLE snapshots ADD CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_id, version);
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


class PostgresEventStore(QueuedAppends):
    """The EventStore contract on one PostgreSQL database (created tables live in it)."""

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 10,
        connect_timeout_s: int = 10,
        lock_timeout_s: float = 10.0,
        group_commit_max: int = DEFAULT_MAX,
        group_commit_wait_ms: float = DEFAULT_WAIT_MS,
    ):
        self.lock_timeout_s = lock_timeout_s
        self.group_commit: GroupCommit[psycopg.Connection] = GroupCommit(
            self._append_transaction,
            functools.partial(write_appends, dialect=DIALECT),
            max_batch=group_commit_max,
            max_wait_ms=group_commit_wait_ms,
        )
        self._migrate(conninfo, connect_timeout_s)
        self._pool = pg.open_pool(
            conninfo,
            name="eventbank",
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            lock_timeout_s=lock_timeout_s,
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresEventStore:
        """``postgresql://user:password@host:port/dbname?…``: the group-commit parameters are
        taken out (engines/sql/group_commit.py) and libpq reads the rest as it is."""
        conninfo, options = split_group_commit(url)
        return cls(conninfo, **options)

    # ------------------------------------------------------------ connections

    def _connection(self) -> AbstractContextManager[psycopg.Connection]:
        """A pooled connection; driver errors become contract errors, never raw psycopg ones."""
        return pg.connection(self._pool)

    @contextmanager
    def _append_transaction(self) -> Iterator[psycopg.Connection]:
        """One transaction holding the append lock, so positions follow commit order. BEGIN
        and the lock go in one message (``connection.run_together``): one round trip, not two;
        the screening read and the inserts stay prepared statements, whose plans the server
        keeps (docs/performance.md, "Groups that wait for the clients just answered")."""
        with self._connection() as conn, pg.rolled_back_on_error(conn):
            lock = ("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _APPEND_LOCK))
            pg.run_together(conn, [("BEGIN", ()), lock])
            yield conn
            conn.execute("COMMIT")

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------ schema

    def _migrate(self, conninfo: str, connect_timeout_s: int) -> None:
        """Create or upgrade the schema; the advisory lock lets concurrent first opens queue."""
        pg.migrate(
            conninfo,
            _MIGRATIONS,
            version_table="schema_info",
            lock=(_LOCK_NAMESPACE, _MIGRATION_LOCK),
            component="eventbank",
            connect_timeout_s=connect_timeout_s,
            lock_timeout_s=self.lock_timeout_s,
        )

    def schema_version(self) -> int:
        with self._connection() as conn:
            return int(pg.one_row(conn.execute("SELECT version FROM schema_info"))[0])

    # ------------------------------------------------------------ writes

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Kept beside the older ones; at a version already saved, only a newer state schema
        replaces it (the state at a version is the same fact, maybe in a newer shape)."""
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO snapshots (aggregate_id, aggregate_type, version,"
                " state_schema_version, state) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (aggregate_id, version) DO UPDATE"
                " SET aggregate_type = excluded.aggregate_type,"
                " state_schema_version = excluded.state_schema_version, state = excluded.state"
                " WHERE excluded.state_schema_version > snapshots.state_schema_version",
                (
                    snapshot.aggregate_id,
                    snapshot.aggregate_type,
                    snapshot.version,
                    snapshot.state_schema_version,
                    _json(snapshot.state),
                ),
            )

    # ------------------------------------------------------------ reads

    def find_command(self, command_id: str) -> CommandRecord | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT command_id, fingerprint, outcome FROM commands WHERE command_id = %s",
                (command_id,),
            ).fetchone()
        return CommandRecord(*row) if row else None

    def read_stream(
        self,
        aggregate_id: str,
        after_version: int = 0,
        *,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        check_stream_read(after_version, limit, backwards)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {STORED_EVENT_COLUMNS} FROM events WHERE aggregate_id = %s"
                f" AND version > %s ORDER BY version {'DESC' if backwards else 'ASC'} LIMIT %s",
                (aggregate_id, after_version, limit),  # LIMIT NULL: no limit
            ).fetchall()
        return [RecordedEvent(*row) for row in rows]

    def read_streams(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """One statement, a condition per stream: for the few streams of a command, 20 % less
        CPU than passing them as arrays (psycopg's array dumpers)."""
        check_streams_read(after_versions)
        if not after_versions:
            return {}
        wanted = " OR ".join(["(aggregate_id = %s AND version > %s)"] * len(after_versions))
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {STORED_EVENT_COLUMNS} FROM events WHERE {wanted}"
                " ORDER BY aggregate_id, version",
                [value for pair in after_versions.items() for value in pair],
            ).fetchall()
        return by_stream(RecordedEvent(*row) for row in rows)

    def stream_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids in ascending order of the database's collation: one index probe per id."""
        check_stream_ids(after, limit)
        with self._connection() as conn:
            rows = conn.execute(_STREAM_IDS, (after, limit)).fetchall()
        return [row[0] for row in rows]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The global feed; safe with a plain position cursor because appends are serialised."""
        check_read_limit(limit)
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {STORED_EVENT_COLUMNS} FROM events WHERE position > %s"
                " ORDER BY position LIMIT %s",
                (after_position, limit),
            ).fetchall()
        return [RecordedEvent(*row) for row in rows]

    def last_position(self) -> int | None:
        """The newest position (0 when empty): one probe of the primary key's index."""
        with self._connection() as conn:
            row = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
        return int(row[0]) if row else 0

    def load_snapshot(self, aggregate_id: str, max_version: int | None = None) -> Snapshot | None:
        """The newest at or below ``max_version`` (None: the newest): one primary-key probe."""
        check_max_version(max_version)
        with self._connection() as conn:
            row = conn.execute(
                "SELECT aggregate_id, aggregate_type, version, state_schema_version, state"
                " FROM snapshots WHERE aggregate_id = %s AND version <= %s"
                " ORDER BY version DESC LIMIT 1",
                (aggregate_id, _NEWEST if max_version is None else max_version),
            ).fetchone()
        return Snapshot(*row) if row else None

    def load_snapshots(self, aggregate_ids: Sequence[str]) -> dict[str, Snapshot]:
        """One statement: each stream's newest row, a primary-key probe per stream."""
        check_snapshots_read(aggregate_ids)
        if not aggregate_ids:
            return {}
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT ON (aggregate_id) aggregate_id, aggregate_type, version,"
                " state_schema_version, state FROM snapshots WHERE aggregate_id = ANY(%s)"
                " ORDER BY aggregate_id, version DESC",
                (list(aggregate_ids),),
            ).fetchall()
        return {row[0]: Snapshot(*row) for row in rows}


_NEWEST = 2**63 - 1  # above every version: bigint's largest


# The distinct stream ids after the first parameter, at most the second: a loose index scan over
# events_stream_version_key, each step one probe for the next id, however long the streams.
_STREAM_IDS = (
    "WITH RECURSIVE ids(id, n) AS ("
    " SELECT (SELECT aggregate_id FROM events WHERE aggregate_id > %s"
    " ORDER BY aggregate_id LIMIT 1), 1"
    " UNION ALL SELECT (SELECT aggregate_id FROM events WHERE aggregate_id > ids.id"
    " ORDER BY aggregate_id LIMIT 1), n + 1 FROM ids WHERE ids.id IS NOT NULL AND n < %s)"
    " SELECT id FROM ids WHERE id IS NOT NULL"
)


# One round trip answers every check of a batch: which command ids are known, where is each
# named stream's head (in the order given; one index probe each), which event ids are taken.
_CHECK = (
    "SELECT ARRAY(SELECT command_id FROM commands WHERE command_id = ANY(%b::text[])),"
    " (SELECT json_agg(json_build_array(head.version, head.hash) ORDER BY n)"
    " FROM unnest(%b::text[]) WITH ORDINALITY AS given(stream, n) LEFT JOIN LATERAL"
    " (SELECT version, hash FROM events WHERE aggregate_id = given.stream"
    " ORDER BY version DESC LIMIT 1) AS head ON true),"
    " ARRAY(SELECT event_id FROM events WHERE event_id = ANY(%b::text[]))"
)


def _json(value: object) -> Json:
    """A json parameter holding the canonical JSON of ``value``."""
    return Json(canonical_json(value), str)


def _read_state(
    conn: psycopg.Connection, need: Wanted
) -> tuple[set[str], dict[str, Head], set[str]]:
    known, heads, taken = pg.one_row(
        conn.execute(_CHECK, (need.command_ids, need.streams, need.event_ids))
    )
    pairs = zip(need.streams, heads or [], strict=True)
    by_stream = {stream: (version, hash_) if version else (0, GENESIS_HASH)
                 for stream, (version, hash_) in pairs}  # fmt: skip
    return set(known), by_stream, set(taken)


_CONSTRAINTS = {"events_event_id_key": "event_id", "events_stream_version_key": "stream_version",
                "commands_pkey": "command_id"}  # fmt: skip


_INSERT_EVENTS = insert_rows(
    "events", EVENT_COLUMNS,
    ("text", "text", "text", "bigint", "text", "bigint", "json", "json", "text"),
    "RETURNING event_id, position",
)  # fmt: skip
_INSERT_COMMANDS = insert_rows("commands", COMMAND_COLUMNS, ("text", "text", "json"))


def _insert_events(conn: psycopg.Connection, events: Sequence[NewEvent]) -> list[int]:
    """RETURNING order is unspecified, so each position comes back with its event's id."""
    rows = conn.execute(_INSERT_EVENTS, rows_param(event_rows(events))).fetchall()
    position_of: dict[str, int] = dict(rows)
    return [position_of[event.event_id] for event in events]


def _insert_commands(conn: psycopg.Connection, commands: Sequence[CommandRecord]) -> None:
    conn.execute(_INSERT_COMMANDS, rows_param(command_rows(commands)))


def _constraint(exc: Exception) -> str | None:
    """Which of our unique constraints a ``psycopg.IntegrityError`` broke, if any."""
    diag = getattr(exc, "diag", None)
    return _CONSTRAINTS.get(diag.constraint_name or "") if diag is not None else None


DIALECT = Dialect(
    "PostgreSQL", _read_state, _insert_events, _insert_commands, psycopg.IntegrityError, _constraint
)
