"""The embedded engine: one SQLite file (connection.py: WAL, ``synchronous=FULL``).

Writers take the database write lock up front (``BEGIN IMMEDIATE``), so expected-version checks
and inserts are serialised across threads and processes; ``UNIQUE(aggregate_id, version)``,
``UNIQUE(event_id)`` and the ``commands`` primary key are the backstop the checks rest on.
Because appends are serialised, ``position`` (the rowid) is assigned in commit order and the
global feed can never show position 11 before position 10 is visible.

Concurrent appends in one process are group-committed (engines/sql/group_commit.py): one
``BEGIN IMMEDIATE`` transaction, three statements and one fsync for the whole batch, each
append screened alone (engines/sql/screening.py). Other processes writing the same file still queue
on the write lock as before.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from eventbank.domain.canonical import canonical_json
from eventbank.engines.sql.group_commit import DEFAULT_MAX, DEFAULT_WAIT_MS, GroupCommit
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
from eventbank.engines.sqlite.connection import SqliteFile
from eventbank.ports.event_store import (
    GENESIS_HASH,
    CommandRecord,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreError,
    by_stream,
    check_max_version,
    check_read_limit,
    check_snapshots_read,
    check_stream_ids,
    check_stream_read,
    check_streams_read,
)

SCHEMA_VERSION = 2

# Migration N brings the schema from version N-1 to N. Append only; never edit a shipped one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        position       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT    NOT NULL UNIQUE,
        aggregate_id   TEXT    NOT NULL,
        aggregate_type TEXT    NOT NULL,
        version        INTEGER NOT NULL CHECK (version >= 1),
        event_type     TEXT    NOT NULL,
        schema_version INTEGER NOT NULL,
        data           TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        hash           TEXT    NOT NULL,
        UNIQUE (aggregate_id, version)
    );
    CREATE TABLE commands (
        command_id  TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        outcome     TEXT NOT NULL
    );
    CREATE TABLE snapshots (
        aggregate_id         TEXT PRIMARY KEY,
        aggregate_type       TEXT    NOT NULL,
        version              INTEGER NOT NULL,
        state_schema_version INTEGER NOT NULL,
        state                TEXT    NOT NULL
    );
    """,
    # 2: every snapshot is kept, keyed by (stream, version), so a past instant folds from the
    # snapshot nearest below it (application/statements.py); the newest one per stream stays.
    """
    CREATE TABLE snapshot_history (
        aggregate_id         TEXT    NOT NULL,
        aggregate_type       TEXT    NOT NULL,
        version              INTEGER NOT NULL,
        state_schema_version INTEGER NOT NULL,
        state                TEXT    NOT NULL,
        PRIMARY KEY (aggregate_id, version)
    );
    INSERT INTO snapshot_history SELECT aggregate_id, aggregate_type, version,
        state_schema_version, state FROM snapshots;
    DROP TABLE snapshots;
    ALTER TABLE snapshot_history RENAME TO snapshots;
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION


class SqliteEventStore(QueuedAppends):
    """The EventStore contract on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 10.0,
        group_commit_max: int = DEFAULT_MAX,
        group_commit_wait_ms: float = DEFAULT_WAIT_MS,
        create: bool = True,
    ):
        """``create=False``: a missing file is ``NoSuchStore``, and none is created."""
        self.path = str(path)
        self.group_commit: GroupCommit[sqlite3.Connection] = GroupCommit(
            lambda: self._db.write_transaction(),
            functools.partial(write_appends, dialect=DIALECT),
            max_batch=group_commit_max,
            max_wait_ms=group_commit_wait_ms,
        )
        self._db = SqliteFile(self.path, _MIGRATIONS, busy_timeout_s=busy_timeout_s, create=create)
        self._conn = self._db.conn

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return self._conn().execute("SELECT version FROM schema_info").fetchone()[0]

    # ------------------------------------------------------------ writes

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Kept beside the older ones; at a version already saved, only a newer state schema
        replaces it (the state at a version is the same fact, maybe in a newer shape)."""
        with self._db.write_transaction() as conn:
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (aggregate_id, version) DO UPDATE"
                " SET aggregate_type = excluded.aggregate_type,"
                " state_schema_version = excluded.state_schema_version, state = excluded.state"
                " WHERE excluded.state_schema_version > snapshots.state_schema_version",
                (
                    snapshot.aggregate_id,
                    snapshot.aggregate_type,
                    snapshot.version,
                    snapshot.state_schema_version,
                    canonical_json(snapshot.state),
                ),
            )

    # ------------------------------------------------------------ reads

    def find_command(self, command_id: str) -> CommandRecord | None:
        row = (
            self._conn()
            .execute(
                "SELECT command_id, fingerprint, outcome FROM commands WHERE command_id = ?",
                (command_id,),
            )
            .fetchone()
        )
        return CommandRecord(row[0], row[1], json.loads(row[2])) if row else None

    def read_stream(
        self,
        aggregate_id: str,
        after_version: int = 0,
        *,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        check_stream_read(after_version, limit, backwards)
        rows = self._conn().execute(
            f"SELECT {STORED_EVENT_COLUMNS} FROM events WHERE aggregate_id = ? AND version > ?"
            f" ORDER BY version {'DESC' if backwards else 'ASC'} LIMIT ?",
            (aggregate_id, after_version, -1 if limit is None else limit),  # -1: no limit
        )
        return [_recorded(row) for row in rows]

    def read_streams(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """One statement: the streams and versions as a VALUES list, joined to the events."""
        check_streams_read(after_versions)
        if not after_versions:
            return {}
        wanted = ", ".join(["(?, ?)"] * len(after_versions))
        rows = self._conn().execute(
            f"WITH wanted(stream, after_version) AS (VALUES {wanted})"
            f" SELECT {STORED_EVENT_COLUMNS} FROM wanted JOIN events ON aggregate_id = stream"
            " AND version > after_version ORDER BY aggregate_id, version",
            [value for pair in after_versions.items() for value in pair],
        )
        return by_stream(_recorded(row) for row in rows)

    def stream_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Ids in ascending (binary) order: one index probe per id (see _STREAM_IDS)."""
        check_stream_ids(after, limit)
        rows = self._conn().execute(_STREAM_IDS, (after, limit)).fetchall()
        return [row[0] for row in rows]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        check_read_limit(limit)
        rows = self._conn().execute(
            f"SELECT {STORED_EVENT_COLUMNS} FROM events"
            " WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )
        return [_recorded(row) for row in rows]

    def last_position(self) -> int | None:
        """The newest position (0 when empty): the rowid's end, one B-tree step."""
        return self._conn().execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]

    def load_snapshot(self, aggregate_id: str, max_version: int | None = None) -> Snapshot | None:
        """The newest at or below ``max_version`` (None: the newest): one primary-key probe."""
        check_max_version(max_version)
        row = (
            self._conn()
            .execute(
                "SELECT aggregate_id, aggregate_type, version, state_schema_version, state"
                " FROM snapshots WHERE aggregate_id = ? AND version <= ?"
                " ORDER BY version DESC LIMIT 1",
                (aggregate_id, _NEWEST if max_version is None else max_version),
            )
            .fetchone()
        )
        return _snapshot(row) if row else None

    def load_snapshots(self, aggregate_ids: Sequence[str]) -> dict[str, Snapshot]:
        """One statement: each stream's newest row (SQLite takes a group's bare columns from
        the row its max() picked)."""
        check_snapshots_read(aggregate_ids)
        if not aggregate_ids:
            return {}
        rows = self._conn().execute(
            "SELECT aggregate_id, aggregate_type, max(version), state_schema_version, state"
            f" FROM snapshots WHERE aggregate_id IN ({', '.join('?' * len(aggregate_ids))})"
            " GROUP BY aggregate_id",
            list(aggregate_ids),
        )
        return {row[0]: _snapshot(row) for row in rows}


def _snapshot(row: tuple[str, str, int, int, str]) -> Snapshot:
    """A snapshot from its row (its state is stored as JSON text)."""
    return Snapshot(row[0], row[1], row[2], row[3], json.loads(row[4]))


_NEWEST = 2**63 - 1  # above every version: SQLite's largest integer


# The distinct stream ids after ``?``, at most ``?``: a loose index scan over
# UNIQUE(aggregate_id, version), each step one probe for the next id, however long the streams.
_STREAM_IDS = (
    "WITH RECURSIVE ids(id, n) AS ("
    " SELECT (SELECT aggregate_id FROM events WHERE aggregate_id > ?1"
    " ORDER BY aggregate_id LIMIT 1), 1"
    " UNION ALL SELECT (SELECT aggregate_id FROM events WHERE aggregate_id > ids.id"
    " ORDER BY aggregate_id LIMIT 1), n + 1 FROM ids WHERE ids.id IS NOT NULL AND n < ?2)"
    " SELECT id FROM ids WHERE id IS NOT NULL"
)


# One statement answers every check of a batch: which command ids are known, where is each
# stream's head, which event ids are taken (screening.py decides each append from that).
_CHECK = (
    "SELECT (SELECT json_group_array(command_id) FROM commands"
    " WHERE command_id IN (SELECT value FROM json_each(?))),"
    " (SELECT json_group_object(value, (SELECT json_array(version, hash) FROM events"
    " WHERE aggregate_id = streams.value ORDER BY version DESC LIMIT 1))"
    " FROM json_each(?) AS streams),"
    " (SELECT json_group_array(event_id) FROM events"
    " WHERE event_id IN (SELECT value FROM json_each(?)))"
)


def _read_state(
    conn: sqlite3.Connection, need: Wanted
) -> tuple[set[str], dict[str, Head], set[str]]:
    row = conn.execute(_CHECK, (json.dumps(need.command_ids), json.dumps(need.streams),
                                json.dumps(need.event_ids))).fetchone()  # fmt: skip
    heads = {stream: (head[0], head[1]) if head else (0, GENESIS_HASH)
             for stream, head in json.loads(row[1]).items()}  # fmt: skip
    return set(json.loads(row[0])), heads, set(json.loads(row[2]))


def _constraint(exc: Exception) -> str | None:
    message = str(exc)
    for column, constraint in _CONSTRAINTS.items():
        if column in message:
            return constraint
    return None


_CONSTRAINTS = {"events.event_id": "event_id", "events.aggregate_id": "stream_version",
                "commands.command_id": "command_id"}  # fmt: skip


def _insert_events(conn: sqlite3.Connection, events: Sequence[NewEvent]) -> list[int]:
    """Inserted without RETURNING: Python's sqlite3 fetches RETURNING rows one step at a time,
    handing the GIL to other threads at each, while the batch's callers wait. The rows took
    consecutive rowids ending at ``lastrowid`` (AUTOINCREMENT under the write lock); one
    statement reads back which events hold those positions, so that is checked, not assumed."""
    cursor = _insert_rows(conn, "events", EVENT_COLUMNS, event_rows(events))
    last = cursor.lastrowid or 0
    first = last - len(events) + 1
    (ids,) = conn.execute(_IDS_BETWEEN, (first, last)).fetchone()
    if json.loads(ids) != [event.event_id for event in events]:
        raise StoreError(f"SQLite did not give a batch's events positions {first} to {last}")
    return list(range(first, last + 1))


_IDS_BETWEEN = (
    "SELECT json_group_array(event_id) FROM"
    " (SELECT event_id FROM events WHERE position BETWEEN ? AND ? ORDER BY position)"
)


def _insert_commands(conn: sqlite3.Connection, commands: Sequence[CommandRecord]) -> None:
    _insert_rows(conn, "commands", COMMAND_COLUMNS, command_rows(commands))


def _insert_rows(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], rows: list[tuple]
) -> sqlite3.Cursor:
    """One multi-row INSERT of ``rows`` (SQLite inserts them in the order listed)."""
    values = [value for row in rows for value in row]
    return conn.execute(_insert_statement(table, columns, len(rows)), values)


@functools.lru_cache(maxsize=256)
def _insert_statement(table: str, columns: tuple[str, ...], rows: int) -> str:
    row = "(" + ", ".join(["?"] * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


DIALECT = Dialect(
    "SQLite", _read_state, _insert_events, _insert_commands, sqlite3.IntegrityError, _constraint
)


def _recorded(row: tuple) -> RecordedEvent:
    return RecordedEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        json.loads(row[7]),
        row[8],
        row[9],
    )
