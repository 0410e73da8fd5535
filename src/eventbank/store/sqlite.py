"""The embedded engine: one SQLite file (see sqlite_file.py: WAL, ``synchronous=FULL``).

Writers take the database write lock up front (``BEGIN IMMEDIATE``), so expected-version checks
and inserts are serialised across threads and processes; ``UNIQUE(aggregate_id, version)``,
``UNIQUE(event_id)`` and the ``commands`` primary key are the backstop the checks rest on.
Because appends are serialised, ``position`` (the rowid) is assigned in commit order and the
global feed can never show position 11 before position 10 is visible.

Concurrent appends in one process are group-committed (store/group_commit.py): one
``BEGIN IMMEDIATE`` transaction, one fsync, each append under its own savepoint. Other processes
writing the same file still queue on the write lock as before.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from eventbank.canonical import canonical_json
from eventbank.sqlite_file import SqliteFile
from eventbank.store.contract import (
    CommandRecord,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreError,
    check_append,
    check_read_limit,
    recorded,
)
from eventbank.store.group_commit import DEFAULT_MAX, DEFAULT_WAIT_MS, GroupCommit

SCHEMA_VERSION = 1

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
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_EVENT_COLUMNS = (
    "event_id, aggregate_id, aggregate_type, version, event_type, schema_version, data, "
    "metadata, position, hash"
)


class SqliteEventStore:
    """The EventStore contract on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = 10.0,
        group_commit_max: int = DEFAULT_MAX,
        group_commit_wait_ms: float = DEFAULT_WAIT_MS,
    ):
        self.path = str(path)
        self.group_commit: GroupCommit[sqlite3.Connection] = GroupCommit(
            lambda: self._db.write_transaction(),
            max_batch=group_commit_max,
            max_wait_ms=group_commit_wait_ms,
        )
        self._db = SqliteFile(self.path, _MIGRATIONS, busy_timeout_s=busy_timeout_s)
        self._conn = self._db.conn

    def close(self) -> None:
        self._db.close()

    def schema_version(self) -> int:
        return self._conn().execute("SELECT version FROM schema_info").fetchone()[0]

    # ------------------------------------------------------------ writes

    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: CommandRecord | None = None,
    ) -> list[RecordedEvent]:
        check_append(events, expected_versions)
        return self.group_commit.run(
            lambda conn: write_batch(conn, events, expected_versions, command)
        )

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._db.write_transaction() as conn:
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?) ON CONFLICT (aggregate_id) DO UPDATE"
                " SET aggregate_type = excluded.aggregate_type, version = excluded.version,"
                " state_schema_version = excluded.state_schema_version, state = excluded.state"
                " WHERE excluded.version > snapshots.version",
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

    def read_stream(self, aggregate_id: str, after_version: int = 0) -> list[RecordedEvent]:
        rows = self._conn().execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE aggregate_id = ? AND version > ?"
            " ORDER BY version",
            (aggregate_id, after_version),
        )
        return [_recorded(row) for row in rows]

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        check_read_limit(limit)
        rows = self._conn().execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?",
            (after_position, limit),
        )
        return [_recorded(row) for row in rows]

    def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        row = (
            self._conn()
            .execute(
                "SELECT aggregate_id, aggregate_type, version, state_schema_version, state"
                " FROM snapshots WHERE aggregate_id = ?",
                (aggregate_id,),
            )
            .fetchone()
        )
        return Snapshot(row[0], row[1], row[2], row[3], json.loads(row[4])) if row else None


# One statement answers every check of an append: is the command known, where is each stream's
# head, which event ids are taken (few statements matter: each one hands the GIL to other threads).
_CHECK = (
    "SELECT (SELECT 1 FROM commands WHERE command_id = ?),"
    " (SELECT json_group_object(value, (SELECT COALESCE(MAX(version), 0) FROM events"
    " WHERE aggregate_id = streams.value)) FROM json_each(?) AS streams),"
    " (SELECT json_group_array(event_id) FROM events"
    " WHERE event_id IN (SELECT value FROM json_each(?)))"
)


def write_batch(
    conn: sqlite3.Connection,
    events: Sequence[NewEvent],
    expected_versions: Mapping[str, int],
    command: CommandRecord | None,
) -> list[RecordedEvent]:
    """Write one validated append inside the caller's open write transaction.

    Kept apart from transaction handling so that several commands' appends can share one
    transaction (group commit), each under its own savepoint.
    """
    ids = [event.event_id for event in events]
    command_id = command.command_id if command is not None else None
    known_command, heads, known_ids = conn.execute(
        _CHECK, (command_id, json.dumps(list(expected_versions)), json.dumps(ids))
    ).fetchone()
    if known_command:
        raise DuplicateCommand(command_id)  # type: ignore[arg-type]
    current = json.loads(heads)
    if stale := [sid for sid, expected in expected_versions.items() if current[sid] != expected]:
        raise ConcurrencyConflict(stale)
    if known_ids := json.loads(known_ids):
        raise DuplicateEvent(known_ids)
    rows = [
        value
        for event in events
        for value in (
            event.event_id, event.aggregate_id, event.aggregate_type, event.version,
            event.event_type, event.schema_version, canonical_json(event.data),
            canonical_json(event.metadata), event.hash,
        )
    ]  # fmt: skip
    try:
        position_of = dict(conn.execute(_insert_events(len(events)), rows).fetchall())
        if command is not None:
            conn.execute(
                "INSERT INTO commands (command_id, fingerprint, outcome) VALUES (?, ?, ?)",
                (command.command_id, command.fingerprint, canonical_json(command.outcome)),
            )
    except sqlite3.IntegrityError as exc:
        raise _integrity_error(exc, events, expected_versions, command) from None
    ordered = [position_of[event.event_id] for event in events]
    if ordered != sorted(ordered):  # VALUES rows are inserted in order; never rely blindly
        raise StoreError(f"SQLite numbered an append's events out of order: {ordered}")
    return [recorded(event, position) for event, position in zip(events, ordered, strict=True)]


@functools.lru_cache(maxsize=64)
def _insert_events(count: int) -> str:
    """One INSERT for ``count`` events; rows go in listed order, so positions follow it (the
    RETURNING order is unspecified, hence the event ids)."""
    rows = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return (
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type,"
        f" schema_version, data, metadata, hash) VALUES {rows} RETURNING event_id, position"
    )


def _integrity_error(
    exc: sqlite3.IntegrityError,
    events: Sequence[NewEvent],
    expected_versions: Mapping[str, int],
    command: CommandRecord | None,
) -> Exception:
    """Map a constraint failure (the backstop behind the explicit checks) to a contract error."""
    message = str(exc)
    if "events.event_id" in message:
        return DuplicateEvent([event.event_id for event in events])
    if "events.aggregate_id" in message:
        return ConcurrencyConflict(list(expected_versions))
    if "commands.command_id" in message and command is not None:
        return DuplicateCommand(command.command_id)
    return StoreError(f"SQLite refused the append: {message}")


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
