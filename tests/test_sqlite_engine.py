"""SQLite-specific behaviour: durability settings, crashes mid-append, schema versions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from eventbank.application.service import LedgerService
from eventbank.engines.sqlite.event_store import SCHEMA_VERSION, SqliteEventStore
from eventbank.ports.event_store import SchemaTooNew, StoreError


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "ledger.db"


def open_pair(path) -> LedgerService:
    service = LedgerService(SqliteEventStore(path))
    service.open_account("acc-1", owner="Ann", account_type="CHECKING", initial_deposit="100")
    service.open_account("acc-2", owner="Bob", account_type="CHECKING")
    return service


def write_connection(store: SqliteEventStore) -> sqlite3.Connection:
    """The connection every write of this process goes through (engines/sqlite/connection.py)."""
    with store._db.write_transaction() as conn:
        return conn


def test_connections_are_wal_fully_synchronous_with_temporary_storage_in_memory(db_path):
    store = SqliteEventStore(db_path)
    for conn in (store._conn(), write_connection(store)):
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY


def test_a_process_killed_inside_the_append_leaves_neither_half(db_path):
    """The writer dies (os._exit) after inserting the debit and before the credit."""
    open_pair(db_path).store.close()
    script = textwrap.dedent(f"""
        import os
        from eventbank.application.service import LedgerService
        from eventbank.engines.sqlite.event_store import SqliteEventStore
        store = SqliteEventStore({str(db_path)!r})
        with store._db.write_transaction() as conn:  # the connection every write goes through
            pass
        conn.create_function("crash", 0, lambda: os._exit(9))
        conn.execute("CREATE TEMP TRIGGER crash BEFORE INSERT ON events "
                     "WHEN NEW.aggregate_id = 'acc-2' BEGIN SELECT crash(); END")
        LedgerService(store).transfer("acc-1", "acc-2", "60", command_id="t-crash")
        print("survived")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    assert "survived" not in done.stdout

    service = LedgerService(SqliteEventStore(db_path))
    assert [len(service.store.read_stream(a)) for a in ("acc-1", "acc-2")] == [2, 1]
    assert service.store.find_command("t-crash") is None
    service.transfer("acc-1", "acc-2", "60", command_id="t-crash")
    assert service.transfer("acc-1", "acc-2", "60", command_id="t-crash").replayed
    assert [service.get_account(a).balance_minor for a in ("acc-1", "acc-2")] == [4000, 6000]


def test_a_statement_failing_inside_the_append_rolls_back_the_whole_transfer(db_path):
    service = open_pair(db_path)
    write_connection(service.store).execute(
        "CREATE TEMP TRIGGER refuse BEFORE INSERT ON events WHEN NEW.aggregate_id = 'acc-2' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    with pytest.raises(StoreError, match="disk says no"):
        service.transfer("acc-1", "acc-2", "60")
    assert [len(service.store.read_stream(a)) for a in ("acc-1", "acc-2")] == [2, 1]


def test_a_schema_newer_than_this_release_is_refused_clearly(db_path):
    SqliteEventStore(db_path).close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE schema_info SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match="newer than this eventbank understands"):
        SqliteEventStore(db_path)


def test_opening_twice_keeps_one_schema_record(db_path):
    SqliteEventStore(db_path).close()
    store = SqliteEventStore(db_path)
    assert store.schema_version() == SCHEMA_VERSION
    assert store._conn().execute("SELECT COUNT(*) FROM schema_info").fetchone()[0] == 1


def open_files(folder) -> int:
    """How many files under ``folder`` this process has open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder))
    return count


def test_threads_that_come_and_go_leave_no_connection_open(db_path):
    """Each thread reads on a connection of its own; once the thread has ended it is closed.
    (A batch's settler and the HTTP pool's workers are such threads: before, each left its
    connection open, a few thousand files within seconds of served load.) SQLite keeps a
    closed connection's file open while others hold locks on it, to reuse, so the count of open
    files settles after the first round instead of growing with every thread."""
    store = SqliteEventStore(db_path)

    def round_of_threads() -> None:
        readers = [threading.Thread(target=store.read_all, args=(0, 1)) for _ in range(20)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()

    round_of_threads()
    settled = open_files(db_path.parent)
    for _ in range(5):
        round_of_threads()
    # Before, 2 more per thread (the file and its WAL): 200. Now a few, as SQLite reuses them;
    # under load a thread's locals (and its connection) may go a moment after join returns.
    assert open_files(db_path.parent) - settled <= 40
    store.close()
