"""One SQLite file opened the way eventbank needs it, shared by the event store and read models.

WAL journal and ``synchronous=FULL`` (a commit is on disk when it returns; the read store, which
is rebuilt from the events, asks for ``NORMAL``: read_store.py says why that loses nothing), one
connection per thread for reads, writes under ``BEGIN IMMEDIATE`` (the write lock is taken up
front, so check-then-write is race-free across threads and processes, waiting up to
``busy_timeout_s``), and numbered migrations recorded in ``schema_info``. Temporary storage is
kept in memory (``temp_store=MEMORY``): a multi-row INSERT inside a transaction keeps a statement
journal, and on disk that was a temporary file created, written page by page and deleted in
every batch (strace: a third of a batch's system calls). It only ever undoes a statement;
durability is the WAL's.

Every write in a process goes through one connection, one transaction at a time. Why: SQLite
drops a connection's page cache whenever another connection has written, so writes spread over
per-thread connections (group commit's leader is whichever caller came first) each began by
re-reading the index pages they touch; one writer keeps them cached. And the process's writers
queue on a lock that wakes the next one at once, where SQLite's busy handler polls by sleeping.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import SchemaTooNew, StoreError, StoreUnavailable


class NoSuchStore(StoreError, InvalidInput):
    """Opened with ``create=False`` and there is no file: nothing was created. Bad input (a
    wrong path, or the wrong directory), not an outage."""

    code = "store_not_found"

    def __init__(self, path: str, hint: str | None = None):
        self.path = os.path.abspath(path)
        super().__init__(f"no eventbank store at {self.path}" + (f" ({hint})" if hint else ""))


class _Held:
    """A thread's read connection, in that thread's locals: when the thread ends they are
    dropped, and with them this, which a finalizer watches (a connection takes no weak
    reference itself)."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn


class SqliteFile:
    def __init__(
        self,
        path: str,
        migrations: Sequence[str],
        *,
        busy_timeout_s: float = 10.0,
        create: bool = True,
        synchronous: str = "FULL",
    ):
        """Open ``path`` and bring it to ``len(migrations)``; migration N moves N-1 to N. With
        ``create=False`` a missing file is ``NoSuchStore`` and none is made: SQLite is asked to
        open it read-write only (``mode=rw``), so nothing creates it between check and open.
        ``synchronous``: ``FULL`` (the event store: every commit fsynced) or ``NORMAL``."""
        if synchronous not in ("FULL", "NORMAL"):
            raise InvalidInput(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.synchronous = synchronous
        self.path = path
        self.create = create
        self.busy_timeout_s = busy_timeout_s
        self.schema_version = len(migrations)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # held for a whole write transaction
        self._writer: sqlite3.Connection | None = None
        self._migrate(migrations)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, for reads; closed once the thread has ended, so threads
        that come and go (a batch's settler, a pool's worker) do not each leave one open."""
        held = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = _Held(self._open())
            weakref.finalize(held, self._forget, held.conn)  # runs when the thread's locals go
        return held.conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        conn.close()

    def _open(self) -> sqlite3.Connection:
        target, uri = self.path, False
        if not self.create:
            target, uri = Path(self.path).absolute().as_uri() + "?mode=rw", True
        try:
            conn = sqlite3.connect(
                target,
                timeout=self.busy_timeout_s,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # the writer serves every thread; close() may too
                uri=uri,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA temp_store=MEMORY")
        except sqlite3.Error as exc:
            if not self.create and not os.path.exists(self.path):
                raise NoSuchStore(self.path) from None
            raise StoreUnavailable(f"cannot open SQLite file {self.path!r}: {exc}") from None
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def write_transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT on the process's one write connection, rolled back on any
        error; lock waits become retryable."""
        with self._writing:
            if self._writer is None:
                self._writer = self._open()
            conn = self._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"SQLite write lock not acquired: {exc}") from None
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise StoreUnavailable(
                        f"SQLite write failed and was rolled back: {exc}"
                    ) from None
                raise

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
            self._writer = None
        self._local = threading.local()

    def _migrate(self, migrations: Sequence[str]) -> None:
        with self.write_transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_info").fetchone()
            current = row[0] if row else 0
            if current > self.schema_version:
                raise SchemaTooNew(
                    f"{self.path} has schema version {current}, newer than this eventbank "
                    f"understands ({self.schema_version}); upgrade eventbank"
                )
            for script in migrations[current:]:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_info (version) VALUES (?)", (self.schema_version,))
            else:
                conn.execute("UPDATE schema_info SET version = ?", (self.schema_version,))
