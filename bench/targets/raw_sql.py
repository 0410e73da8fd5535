"""The raw-SQL floor: eventbank's rows inserted straight into eventbank's schema.

No domain logic, no version checks, no hashing: what the same durable writes cost on their own.
With batch size 1 every transfer is its own transaction; batched, a client commits many
transfers per transaction (the most any group commit could gain). The schema is created by
eventbank's own engine, so tables, constraints and indexes are exactly the ones it writes to.
"""

from __future__ import annotations

import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence

import psycopg

from bench.targets import rows
from bench.workload import Transfer
from eventbank.engines.postgres.event_store import PostgresEventStore
from eventbank.engines.sqlite.event_store import SqliteEventStore
from eventbank.engines.urls import sqlite_path


class RawSql(ABC):
    """What both floors share: build the rows, then ``write`` them in one transaction."""

    system = "raw"
    engine: str
    events_per_transfer = 2

    def __init__(self, store_url: str, batch_size: int):
        self.store_url = store_url
        self.batch_size = batch_size
        self.variant = "1 tx per transfer" if batch_size == 1 else f"batched, {batch_size}/tx"
        self._versions = rows.Versions()

    def open_accounts(self, account_ids: Sequence[str], initial_minor: int) -> None:
        self._versions.take(account_ids, 2)
        opened = [rows.opening(account, initial_minor) for account in account_ids]
        self.write([e for events, _ in opened for e in events], [c for _, c in opened])

    def transfer_batch(self, transfers: Sequence[Transfer]) -> int:
        self.write(*self.rows_of(transfers))
        return 0  # nothing is checked, so nothing conflicts

    def rows_of(
        self, transfers: Sequence[Transfer]
    ) -> tuple[list[rows.EventRow], list[rows.CommandRow]]:
        """The transfers' events and command records, at the next versions of their accounts."""
        events, commands = [], []
        for t in transfers:
            before = self._versions.take([t.source, t.target])
            written, command = rows.transfer(t, *before)
            events += written
            commands.append(command)
        return events, commands

    @abstractmethod
    def write(self, events: list[rows.EventRow], commands: list[rows.CommandRow]) -> None:
        """Insert the rows in one durable transaction."""


class RawSqlite(RawSql):
    """sqlite3 in WAL mode with ``synchronous=FULL``, as eventbank. SQLite has one writer, so
    clients queue on a lock instead of on SQLite's sleeping busy handler."""

    engine = "sqlite"

    def __init__(self, store_url: str, batch_size: int):
        super().__init__(store_url, batch_size)
        path = sqlite_path(store_url)
        SqliteEventStore(path).close()
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA temp_store=MEMORY")
        self._lock = threading.Lock()

    def write(self, events: list[rows.EventRow], commands: list[rows.CommandRow]) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    f"INSERT INTO events ({rows.EVENT_COLUMNS}) VALUES ({', '.join('?' * 9)})",
                    [e.values() for e in events],
                )
                self._conn.executemany(
                    f"INSERT INTO commands ({rows.COMMAND_COLUMNS}) VALUES (?, ?, ?)",
                    [c.values() for c in commands],
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


class RawPostgres(RawSql):
    """psycopg, one connection per client; PostgreSQL runs the transactions concurrently."""

    engine = "postgresql"

    def __init__(self, store_url: str, batch_size: int):
        super().__init__(store_url, batch_size)
        PostgresEventStore.from_url(store_url).close()
        self._local = threading.local()
        self._connections: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    def connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = psycopg.connect(self.store_url, autocommit=True)
            with self._lock:
                self._connections.append(conn)
        return conn

    def write(self, events: list[rows.EventRow], commands: list[rows.CommandRow]) -> None:
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO events ({rows.EVENT_COLUMNS}) VALUES ({', '.join(['%s'] * 9)})",
                [e.values() for e in events],
            )
            cursor.executemany(
                f"INSERT INTO commands ({rows.COMMAND_COLUMNS}) VALUES (%s, %s, %s)",
                [c.values() for c in commands],
            )

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
