"""The embedded engine: one SQLite file (see sqlite_file.py: WAL, ``synchronous=FULL``).

Writers take the database write lock up front (``BEGIN IMMEDIATE``), so expected-version checks
and inserts are serialised across threads and processes; ``UNIQUE(aggregate_id, version)``,
``UNIQUE(event_id)`` and the ``commands`` primary key are the backstop the checks rest on.
Because appends are serialised, ``position`` (the rowid) is assigned in commit order and the
global feed can never show position 11 before position 10 is visible.
"""

from __future__ import annotations

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

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0):
        self.path = str(path)
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
        with self._db.write_transaction() as conn:
            return write_batch(conn, events, expected_versions, command)

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
    if command is not None:
        known = conn.execute(
            "SELECT 1 FROM commands WHERE command_id = ?", (command.command_id,)
        ).fetchone()
        if known:
            raise DuplicateCommand(command.command_id)
    stale = [
        aggregate_id
        for aggregate_id, expected in expected_versions.items()
        if conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM events WHERE aggregate_id = ?", (aggregate_id,)
        ).fetchone()[0]
        != expected
    ]
    if stale:
        raise ConcurrencyConflict(stale)
    ids = [event.event_id for event in events]
    known_ids = [
        row[0]
        for row in conn.execute(
            f"SELECT event_id FROM events WHERE event_id IN ({','.join('?' * len(ids))})", ids
        )
    ]
    if known_ids:
        raise DuplicateEvent(known_ids)
    stored = []
    try:
        for event in events:
            (position,) = conn.execute(
                "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type,"
                " schema_version, data, metadata, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " RETURNING position",
                (
                    event.event_id,
                    event.aggregate_id,
                    event.aggregate_type,
                    event.version,
                    event.event_type,
                    event.schema_version,
                    canonical_json(event.data),
                    canonical_json(event.metadata),
                    event.hash,
                ),
            ).fetchone()
            stored.append(recorded(event, position))
        if command is not None:
            conn.execute(
                "INSERT INTO commands (command_id, fingerprint, outcome) VALUES (?, ?, ?)",
                (command.command_id, command.fingerprint, canonical_json(command.outcome)),
            )
    except sqlite3.IntegrityError as exc:
        raise _integrity_error(exc, events, expected_versions, command) from None
    return stored


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
