"""PostgreSQL-specific behaviour, on a real server: the feed under concurrent writers, killed
connections, the constraint backstop, lock waits, and schema versions.

Tests that must stall an append mid-transaction hold a conflicting row in a second, uncommitted
transaction: the append's explicit checks cannot see it, so it writes its events and then waits
on the unique index, where the test can terminate it or let the conflicting row commit.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import psycopg
import pytest

from eventbank.application.service import LedgerService
from eventbank.engines.postgres import connection as pg
from eventbank.engines.postgres.event_store import (
    _APPEND_LOCK,
    _LOCK_NAMESPACE,
    SCHEMA_VERSION,
    PostgresEventStore,
)
from eventbank.ports.event_store import (
    CommandRecord,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    SchemaTooNew,
    StoreUnavailable,
)
from tests.factories import new_event

WRITERS = 8
APPENDS_PER_WRITER = 25
MAX_COMMIT_DELAY_S = 0.004


class SlowCommitStore(PostgresEventStore):
    """Sleeps a random moment after writing and before committing: the window in which a
    transaction holds a position that is not visible yet."""

    @contextmanager
    def _append_transaction(self) -> Iterator[psycopg.Connection]:
        with super()._append_transaction() as conn:
            yield conn
            conn.execute("SELECT pg_sleep(%s)", (random.uniform(0, MAX_COMMIT_DELAY_S),))


def test_a_reader_following_the_feed_sees_every_event_once_in_order(postgres_store_url):
    """The feed never skips (docs/architecture.md): concurrent writers, each slow to commit.

    Verified to fail without the engine's append lock (its ``pg_advisory_xact_lock`` line
    removed, leaving the naive ``position > after ORDER BY position`` feed): 5 runs of 5 failed,
    skipping 87 to 131 of the 296 events. The rejected xid technique (a ``pg_current_xact_id()``
    column, ``xid < pg_snapshot_xmin(pg_current_snapshot())`` added to that feed, no lock) also
    failed 5 runs of 5, skipping 2 to 5 events.
    """
    writers = [SlowCommitStore.from_url(postgres_store_url) for _ in range(WRITERS)]
    reader = PostgresEventStore.from_url(postgres_store_url)
    writers_done = threading.Event()
    seen = []

    def write(index: int) -> int:
        one, two = f"w{index}-a", f"w{index}-b"
        versions = {one: 0, two: 0}
        for n in range(APPENDS_PER_WRITER):
            streams = [one, two] if n % 2 else [one]
            expected = {s: versions[s] for s in streams}
            writers[index].append([new_event(s, versions[s] + 1) for s in streams], expected)
            for s in streams:
                versions[s] += 1
        return sum(versions.values())

    def follow() -> None:
        after = 0
        while True:
            finished = writers_done.is_set()  # before polling: an empty poll then means caught up
            page = reader.read_all(after, limit=random.randint(1, 20))
            seen.extend(page)
            if page:
                after = page[-1].position
            elif finished:
                return

    follower = threading.Thread(target=follow)
    follower.start()
    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            written = sum(pool.map(write, range(WRITERS)))
    finally:
        writers_done.set()
        follower.join(timeout=60)
    with psycopg.connect(postgres_store_url) as conn:
        table = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY position")]
    positions = [event.position for event in seen]
    assert positions == sorted(set(positions)), "the reader saw an event twice or out of order"
    assert len(table) == written
    skipped = set(table) - {event.event_id for event in seen}
    assert not skipped, f"the feed skipped {len(skipped)} of {len(table)} events"
    assert [event.event_id for event in seen] == table
    for handle in [*writers, reader]:
        handle.close()


def _blocked_append_pid(admin: psycopg.Connection, dbname: str, other_than: int = 0) -> int:
    """The backend of an append waiting on a row lock (a unique-index conflict) in ``dbname``."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO %%' AND pid <> %s",
            (dbname, other_than),
        ).fetchone()
        if row:
            return row[0]
        time.sleep(0.01)
    pytest.fail("the append never blocked on the conflicting row")


def _dbname(url: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(url)["dbname"]


def test_a_connection_killed_mid_append_writes_nothing_and_is_store_unavailable(
    postgres_store_url,
):
    store = PostgresEventStore.from_url(postgres_store_url)
    transfer = [new_event("acc-1", 1), new_event("acc-2", 1)]
    command = CommandRecord("t-kill", "f" * 64, {"kind": "transfer"})
    with (
        psycopg.connect(postgres_store_url) as blocker,
        psycopg.connect(postgres_store_url, autocommit=True) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        blocker.execute("INSERT INTO commands VALUES ('t-kill', 'blocker', '{}')")
        append = pool.submit(store.append, transfer, {"acc-1": 0, "acc-2": 0}, command)
        pid = _blocked_append_pid(admin, _dbname(postgres_store_url))
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable, match="connection was lost"):
            append.result(timeout=20)
        blocker.rollback()
    assert store.read_stream("acc-1") == store.read_stream("acc-2") == []
    assert store.read_all() == [] and store.find_command("t-kill") is None
    store.append(transfer, {"acc-1": 0, "acc-2": 0}, command)  # the pool recovered
    assert [e.aggregate_id for e in store.read_all()] == ["acc-1", "acc-2"]
    store.close()


def test_a_transfer_killed_mid_append_is_retried_and_moves_money_once(postgres_store_url):
    store = PostgresEventStore.from_url(postgres_store_url)
    service = LedgerService(store)
    service.open_account("acc-1", owner="Ann", account_type="CHECKING", initial_deposit="100")
    service.open_account("acc-2", owner="Bob", account_type="CHECKING")
    with (
        psycopg.connect(postgres_store_url) as blocker,
        psycopg.connect(postgres_store_url, autocommit=True) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        blocker.execute("INSERT INTO commands VALUES ('t-retry', 'blocker', '{}')")
        transfer = pool.submit(service.transfer, "acc-1", "acc-2", "60", command_id="t-retry")
        killed = _blocked_append_pid(admin, _dbname(postgres_store_url))
        admin.execute("SELECT pg_terminate_backend(%s)", (killed,))
        _blocked_append_pid(admin, _dbname(postgres_store_url), other_than=killed)  # the retry
        assert [len(store.read_stream(a)) for a in ("acc-1", "acc-2")] == [2, 1]  # no half
        blocker.rollback()
        assert not transfer.result(timeout=20).replayed
    assert service.transfer("acc-1", "acc-2", "60", command_id="t-retry").replayed
    assert [service.get_account(a).balance_minor for a in ("acc-1", "acc-2")] == [4000, 6000]
    assert [len(store.read_stream(a)) for a in ("acc-1", "acc-2")] == [3, 2]
    store.close()


_EVENT_ROW = (
    "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type,"
    " schema_version, data, metadata, hash)"
    " VALUES (%s, %s, 'Test', 1, 'Happened', 1, '{}', '{}', 'h')"
)


@pytest.mark.parametrize(
    ("sql", "params", "error"),
    [
        (_EVENT_ROW, ("other-id", "b"), ConcurrencyConflict),  # b's version 1, taken
        (_EVENT_ROW, ("e-b", "z"), DuplicateEvent),  # b's event id, in another stream
        ("INSERT INTO commands VALUES ('cmd', 'f', '{}')", (), DuplicateCommand),
    ],
)
def test_the_constraints_back_up_the_checks(postgres_store_url, sql, params, error):
    """A row the checks could not see (uncommitted, written without the append lock) commits
    while the append waits on the unique index: the constraint refuses, mapped as SQLite does."""
    store = PostgresEventStore.from_url(postgres_store_url)
    events = [new_event("a", 1, event_id="e-a"), new_event("b", 1, event_id="e-b")]
    with (
        psycopg.connect(postgres_store_url) as blocker,
        psycopg.connect(postgres_store_url, autocommit=True) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        blocker.execute(sql, params)
        append = pool.submit(store.append, events, {"a": 0, "b": 0}, CommandRecord("cmd", "f", {}))
        _blocked_append_pid(admin, _dbname(postgres_store_url))
        blocker.commit()
        with pytest.raises(error):
            append.result(timeout=20)
    assert store.read_stream("a") == []  # the append's first event went with it
    store.close()


def test_a_deadlock_is_rolled_back_and_retryable_not_a_raw_driver_error(postgres_store_url):
    """The append waits on the blocker's command row; the blocker then waits on the append lock.
    PostgreSQL aborts the session whose deadlock check finds the cycle, once, deadlock_timeout
    after it began to wait (a check that finds none is not repeated): the append's sessions
    check after 3 s, the blocker's after 60 s, so the append is the one aborted however long the
    blocker takes to come and wait (on a busy machine it once took longer than the default 1 s)."""
    with psycopg.connect(postgres_store_url, autocommit=True) as setup:
        setup.execute(
            f"ALTER DATABASE \"{_dbname(postgres_store_url)}\" SET deadlock_timeout = '3s'"
        )
    store = PostgresEventStore.from_url(postgres_store_url)
    with (
        psycopg.connect(postgres_store_url) as blocker,
        psycopg.connect(postgres_store_url, autocommit=True) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        blocker.execute("SET deadlock_timeout = '60s'")
        blocker.execute("INSERT INTO commands VALUES ('cmd', 'f', '{}')")
        append = pool.submit(
            store.append, [new_event("a", 1)], {"a": 0}, CommandRecord("cmd", "f", {})
        )
        _blocked_append_pid(admin, _dbname(postgres_store_url))
        blocker.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_NAMESPACE, _APPEND_LOCK))
        with pytest.raises(StoreUnavailable, match="deadlock detected"):
            append.result(timeout=20)
        blocker.rollback()
    assert store.read_all() == [] and store.find_command("cmd") is None
    store.close()


def test_a_writer_stuck_behind_the_append_lock_gets_a_retryable_error(postgres_store_url):
    store = PostgresEventStore(postgres_store_url, lock_timeout_s=0.2)
    with psycopg.connect(postgres_store_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, _APPEND_LOCK))
        with pytest.raises(StoreUnavailable, match="lock timeout"):
            store.append([new_event("s1", 1)], {"s1": 0})
    store.append([new_event("s1", 1)], {"s1": 0})  # the lock died with its session
    store.close()


def test_an_unreachable_server_is_store_unavailable():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(StoreUnavailable, match="PostgreSQL is unavailable"):
        PostgresEventStore.from_url(f"postgresql://postgres@127.0.0.1:{port}/nothing")


def test_concurrent_first_opens_all_succeed(postgres_store_url):
    """Without the migration lock, the losers fail on pg_type's unique index (seen every run)."""
    start = threading.Barrier(6)

    def open_store(_: int) -> PostgresEventStore:
        start.wait(timeout=20)
        return PostgresEventStore.from_url(postgres_store_url)

    with ThreadPoolExecutor(6) as pool:
        stores = list(pool.map(open_store, range(6)))
    assert {store.schema_version() for store in stores} == {SCHEMA_VERSION}
    for store in stores:
        store.close()


def _cli(url: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    read_store = f"sqlite:///{tmp_path / 'read.db'}"
    main = "from eventbank.cli import main; main()"
    command = [sys.executable, "-c", main, "--store", url, "--read-store", read_store]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def test_init_twice_is_idempotent(postgres_store_url, tmp_path):
    first = _cli(postgres_store_url, tmp_path, "init")
    assert first.returncode == 0, first.stderr
    store = PostgresEventStore.from_url(postgres_store_url)
    store.append([new_event("s1", 1)], {"s1": 0})
    alias = postgres_store_url.replace("postgresql://", "postgres://", 1)
    second = _cli(alias, tmp_path, "init")
    assert second.returncode == 0, second.stderr
    assert "event store ready" in second.stdout
    assert [e.version for e in store.read_stream("s1")] == [1]
    with psycopg.connect(postgres_store_url) as conn:
        assert conn.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
    store.close()


def test_a_schema_newer_than_this_release_is_refused_clearly(postgres_store_url, tmp_path):
    PostgresEventStore.from_url(postgres_store_url).close()
    with psycopg.connect(postgres_store_url) as conn:
        conn.execute("UPDATE schema_info SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match="newer than this eventbank understands"):
        PostgresEventStore.from_url(postgres_store_url)
    refused = _cli(postgres_store_url, tmp_path, "init")
    assert refused.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1}, newer than" in refused.stderr
    assert "upgrade eventbank" in refused.stderr


def _terminate_other_backends(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (_dbname(url),),
        )


def test_a_pooled_connection_is_checked_before_use_only_after_sitting_idle(postgres_store_url):
    """pg.IdleCheck: one in steady use is lent as it is (a dead one then fails the write as
    StoreUnavailable, which the service retries); one idle longer than the limit is checked
    first, so a server restart during a quiet spell costs no request a failure."""
    pool = pg.open_pool(postgres_store_url, name="idle-check", pool_size=1, connect_timeout_s=5,
                        lock_timeout_s=5, check_idle_after_s=3)  # fmt: skip
    try:
        with pg.connection(pool) as conn:
            conn.execute("SELECT 1")
        _terminate_other_backends(postgres_store_url)
        with pytest.raises(StoreUnavailable), pg.connection(pool) as conn:
            conn.execute("SELECT 1")  # lent at once, unchecked: it was just in use
        with pg.connection(pool) as conn:  # the pool has replaced the broken one
            conn.execute("SELECT 1")
        _terminate_other_backends(postgres_store_url)
        time.sleep(3.5)  # idle past the limit: checked, found dead, replaced before the loan
        with pg.connection(pool) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


# ---------------------------------------------------------------- statements sent as one message

TRICKY = 'it\'s 100%s; DROP TABLE kept; -- \\ $1 \u00e9\u20ac \U0001f4b8 "q"'


def test_statements_run_together_in_one_message_in_order_with_values_quoted(postgres_store_url):
    """pg.run_together: each statement's own rows, in order; values quoted by the client, so no
    text in them runs as SQL; one transaction per message unless a BEGIN opens one, and the
    first failure ends the message and rolls back what it wrote."""
    pool = pg.open_pool(postgres_store_url, name="together", pool_size=1, connect_timeout_s=5,
                        lock_timeout_s=5)  # fmt: skip
    echo = ("SELECT %s::text, %s::bigint", (TRICKY, 2**62))
    try:
        with pg.connection(pool) as conn:
            conn.execute("CREATE TABLE kept (x int)")
            assert pg.run_together(conn, [echo, ("INSERT INTO kept VALUES (%s)", (1,)), echo]) == [
                [(TRICKY, 2**62)],
                [],
                [(TRICKY, 2**62)],
            ]
            assert pg.run_together(conn, [("SELECT %s::text[]", (["a'b", "c,d", ""],))]) == [
                [(["a'b", "c,d", ""],)]
            ]
            with pytest.raises(psycopg.errors.DivisionByZero):
                pg.run_together(
                    conn, [("INSERT INTO kept VALUES (%s)", (2,)), ("SELECT 1 / 0", ())]
                )
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]  # the 2 undone
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            # a transaction the messages open, left by an error between them: rolled back
            with pytest.raises(RuntimeError, match="a gap"), pg.rolled_back_on_error(conn):
                pg.run_together(conn, [("BEGIN", ()), ("INSERT INTO kept VALUES (%s)", (3,))])
                raise RuntimeError("a gap")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            assert conn.execute("SELECT x FROM kept").fetchall() == [(1,)]
    finally:
        pool.close()


# ---------------------------------------------------------------- a server that stops answering


class FreezingProxy:
    """A TCP relay to the server that can stop passing bytes either way (``frozen``): to a
    client, a server that hangs or a network that drops everything. Its kernel still accepts
    connections and acknowledges what is sent, as a paused server's does, so neither TCP nor
    the server's own timeouts end a wait: only the client's deadlines can."""

    def __init__(self, conninfo: str):
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
        host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
        self._upstream = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        self._flowing.clear()
        try:
            yield
        finally:
            self._flowing.set()  # what was held is passed on, as a resumed server reads it

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        with suppress(OSError):  # the listener was closed
            while True:
                client, _ = self._listener.accept()
                if isinstance(self._upstream, str):
                    upstream = socket.socket(socket.AF_UNIX)
                    upstream.connect(self._upstream)
                else:
                    upstream = socket.create_connection(self._upstream)
                self._sockets += [client, upstream]
                for source, target in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._relay, args=(source, target), daemon=True).start()

    def _relay(self, source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                target.sendall(data)
        with suppress(OSError):
            target.shutdown(socket.SHUT_WR)


def test_a_server_that_stops_answering_costs_a_bounded_wait_and_then_recovers(
    postgres_store_url,
):
    """pg.DeadlineConnection: its deadline on an answer follows the statement_timeout the URL
    sets (after eventbank's default, so it wins): 2 s + 2 s. Frozen, the leader's BEGIN gets
    no answer, its connection is closed at the deadline and every queued append shares the
    failure, retryably; none is written, and once the traffic flows the pool goes on by itself.
    Without the deadline each append waits as long as the freeze lasts."""
    proxy = FreezingProxy(postgres_store_url)
    conninfo = psycopg.conninfo.make_conninfo(
        postgres_store_url, host="127.0.0.1", port=proxy.port, options="-c statement_timeout=2000"
    )
    store = PostgresEventStore(conninfo, pool_size=1)  # just used: lent without a check
    try:
        with store._connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("2s",)
            assert conn.answer_within_s == 4.0
        store.append([new_event("before", 1)], {"before": 0})
        streams = [f"s{n}" for n in range(4)]
        with ThreadPoolExecutor(len(streams)) as pool, proxy.frozen():
            started = time.monotonic()
            appends = [pool.submit(store.append, [new_event(s, 1)], {s: 0}) for s in streams]
            for append in appends:
                with pytest.raises(StoreUnavailable, match="no answer from PostgreSQL within 4 s"):
                    append.result(timeout=20)
            assert time.monotonic() - started < 7.5  # one deadline, not one per append
        store.append([new_event("after", 1)], {"after": 0})
        assert [event.aggregate_id for event in store.read_all()] == ["before", "after"]
        assert store.group_commit.in_flight == 0
    finally:
        store.close()
        proxy.close()


def test_the_deadline_defaults_yield_to_the_store_url():
    """Each libpq parameter the URL sets is left alone; eventbank's server settings go first in
    ``options``, so the URL's own come later and win."""
    url = (
        "postgresql://u@db.example/ledger?connect_timeout=3&keepalives_idle=30"
        "&options=-c%20statement_timeout%3D60s"
    )
    added = pg.connection_parameters(
        url, connect_timeout_s=10, lock_timeout_s=2.5, statement_timeout_s=5
    )
    assert added == {
        "keepalives": 1, "keepalives_interval": 2, "keepalives_count": 3,
        "tcp_user_timeout": 11_000,
        "options": "-c lock_timeout=2500ms -c statement_timeout=5000ms"
                   " -c idle_in_transaction_session_timeout=10000ms -c statement_timeout=60s",
    }  # fmt: skip
    bare = pg.connection_parameters(
        "postgresql://u@db.example/ledger", connect_timeout_s=10, lock_timeout_s=10,
        statement_timeout_s=None,
    )  # fmt: skip
    assert bare["connect_timeout"] == 10 and bare["keepalives_idle"] == 5
    assert "statement_timeout" not in bare["options"]
