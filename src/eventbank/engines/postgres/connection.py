"""What the PostgreSQL event store and read-model store share: the pool, error mapping, migrations.

Both may live in one database (the read store's default), so each keeps its own schema-version
table and migration lock; everything else about talking to PostgreSQL is done once, here.

Every wait has a deadline
-------------------------
A server that stops answering (paused, overloaded past help, or behind a network that drops
everything) must cost a caller a few seconds and a ``StoreUnavailable``, never a hang. Each
bound below is a default for what the store URL does not set; the URL's libpq parameters
override any of them (``?connect_timeout=3&keepalives_idle=30``, and the server settings through
``options``: ``?options=-c%20statement_timeout%3D60s``, or ``PGOPTIONS``), ours being put first
in ``options`` so that the URL's come later and win.

- ``statement_timeout`` (5 s, ``STATEMENT_TIMEOUT_S``): the server ends any one statement, lock
  waits included (``lock_timeout``, the stores' ``lock_timeout_s``, matters only below it). The
  service's statements take milliseconds; a rebuild's DELETE of a very large read model may
  need it raised in the URL of the command that runs it.
- ``idle_in_transaction_session_timeout`` (10 s): the server ends the session of a client that
  vanished mid-transaction (a dropped network sends no FIN), so the append lock it held is not
  held for the hours TCP takes to notice.
- The client's own deadline on every answer (``DeadlineConnection``): the server's timeouts are
  worthless when the server is stopped (SIGSTOP, a VM paused) and TCP cannot tell, since the
  server's kernel still acknowledges whatever is sent and answers keepalive probes. So every
  round trip of a pooled connection has ``statement_timeout`` + ``ANSWER_MARGIN_S`` (2 s, so
  the server's own timeout, which leaves the connection usable, fires first whenever it can),
  read from the server once per connection, so a URL that raises the timeout raises this too
  (and ``statement_timeout=0`` turns both off). When it passes, ``AnswerDeadlines`` shuts the
  socket down: the wait ends at once with ``NoAnswer`` (an ``OperationalError``, so
  ``StoreUnavailable``), the pool drops the connection, and whatever the statement was, its
  outcome is unknown to the caller exactly as with a lost connection: a COMMIT sent before the
  pause is carried out when the server resumes. ``StoreUnavailable`` says so, and a retry is
  safe because every command is recorded under its id in the same transaction as its events.
  The idle check before a loan has ``CHECK_ANSWER_S`` (2 s): an empty query.
- TCP keepalives (idle 5 s, then every 2 s, 3 probes) and ``tcp_user_timeout`` (11 s): a peer
  that is gone (a dropped network, a dead host) is detected while a connection idles in the
  pool, or when what was sent is never acknowledged.
- ``connect_timeout`` (the stores' ``connect_timeout_s``, 10 s): a connection attempt, startup
  included; the pool makes them in the background.
- A pool checkout waits at most ``CHECKOUT_TIMEOUT_S`` (5 s), then ``StoreUnavailable``.

So while the server is paused, a request answers 503 after about 7 s (one round trip's
deadline, or a checkout and one idle check), and the pool reconnects by itself once it resumes.
Migrations have no statement timeout and no client deadline (DDL may take its time, and they run
only when a store is opened); they have the rest.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.abc import PQGen
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import SchemaTooNew, StoreError, StoreUnavailable

# psycopg_pool backs off between reconnection attempts (1 s, 2 s, 4 s …) until this runs out,
# then leaves the next request to start afresh. Its default (5 minutes) let the backoff grow to
# a minute while a server was down, so the pool stayed empty about that long after it returned.
RECONNECT_TIMEOUT_S = 5.0


# A pooled connection idle longer than this is checked (one round trip) before it is lent.
CHECK_IDLE_AFTER_S = 1.0

# The deadlines (module docstring): defaults for what the store URL does not set.
STATEMENT_TIMEOUT_S = 5.0
IDLE_IN_TRANSACTION_TIMEOUT_S = 10.0
ANSWER_MARGIN_S = 2.0  # the client's deadline on an answer: statement_timeout + this
CHECK_ANSWER_S = 2.0  # the deadline on the idle check's empty query, and on configuring
CHECKOUT_TIMEOUT_S = 5.0
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
              "keepalives_count": 3, "tcp_user_timeout": 11_000}  # fmt: skip
_ENVIRONMENT = {"connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS"}  # libpq reads

RV = TypeVar("RV")


def open_pool(
    conninfo: str,
    *,
    name: str,
    pool_size: int,
    connect_timeout_s: int,
    lock_timeout_s: float,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    checkout_timeout_s: float = CHECKOUT_TIMEOUT_S,
    check_idle_after_s: float = CHECK_IDLE_AFTER_S,
) -> ConnectionPool[DeadlineConnection]:
    """Autocommit connections whose every wait is bounded (module docstring), checked before
    use if idle."""
    idle = IdleCheck(check_idle_after_s)
    parameters = connection_parameters(
        conninfo,
        connect_timeout_s=connect_timeout_s,
        lock_timeout_s=lock_timeout_s,
        statement_timeout_s=statement_timeout_s,
    )
    return ConnectionPool(
        conninfo,
        connection_class=DeadlineConnection,
        min_size=1,
        max_size=pool_size,
        timeout=checkout_timeout_s,
        kwargs={"autocommit": True, **parameters},
        configure=set_answer_deadline,
        check=idle.check,
        reset=idle.returned,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        name=name,
        open=True,
    )


def connection_parameters(
    conninfo: str,
    *,
    connect_timeout_s: int,
    lock_timeout_s: float,
    statement_timeout_s: float | None,
) -> dict[str, Any]:
    """The libpq parameters added to ``conninfo``: each default only where neither the URL nor
    libpq's environment variable sets it; the server settings (no ``statement_timeout`` if
    None) go first in ``options``, before the URL's own, which therefore win."""
    given = conninfo_to_dict(conninfo)

    def chosen(key: str) -> str:
        return str(given.get(key) or os.environ.get(_ENVIRONMENT.get(key, ""), "") or "")

    added: dict[str, Any] = {key: value for key, value in KEEPALIVES.items() if not chosen(key)}
    if not chosen("connect_timeout"):
        added["connect_timeout"] = connect_timeout_s
    settings = {"lock_timeout": lock_timeout_s, "statement_timeout": statement_timeout_s,
                "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_TIMEOUT_S}  # fmt: skip
    ours = " ".join(f"-c {name}={round(seconds * 1000)}ms"
                    for name, seconds in settings.items() if seconds is not None)  # fmt: skip
    added["options"] = f"{ours} {chosen('options')}".strip()
    return added


def set_answer_deadline(conn: DeadlineConnection) -> None:
    """Give a new connection its deadline on answers: its ``statement_timeout`` (whatever set
    it) plus ``ANSWER_MARGIN_S``; none if that is 0 (off)."""
    conn.answer_within_s = CHECK_ANSWER_S
    statement_timeout_ms = one_row(
        conn.execute("SELECT setting::float8 FROM pg_settings WHERE name = 'statement_timeout'")
    )[0]
    off = statement_timeout_ms == 0
    conn.answer_within_s = None if off else statement_timeout_ms / 1000 + ANSWER_MARGIN_S


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the connection's deadline, which closed it."""


class DeadlineConnection(psycopg.Connection[TupleRow]):
    """A connection whose every round trip (a statement, a COMMIT, a check) waits at most
    ``answer_within_s`` for the server (None: forever), then fails with ``NoAnswer``.

    psycopg does all of a connection's network I/O in ``wait``; while one runs, the
    connection's socket is watched by ``DEADLINES``, which shuts it down once the deadline
    passes, so the wait ends as on a lost connection. That uses only the socket, not libpq's
    state, which belongs to the waiting thread: a thread other than the owner may do nothing
    else to a connection."""

    answer_within_s: float | None = None

    def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        within = self.answer_within_s
        try:
            fd = self.pgconn.socket
        except psycopg.OperationalError:  # already closed: psycopg raises its own error
            within = None
        if within is None:
            return super().wait(gen, *args, **kwargs)
        with DEADLINES.watch(fd, within) as watch:
            try:
                return super().wait(gen, *args, **kwargs)
            except psycopg.OperationalError as exc:
                if watch.cut:
                    raise NoAnswer(
                        f"no answer from PostgreSQL within {within:g} s, so the connection "
                        "was closed"
                    ) from exc
                raise


class _Watch:
    __slots__ = ("due", "fd", "cut")

    def __init__(self, due: float, fd: int):
        self.due, self.fd, self.cut = due, fd, False


class AnswerDeadlines:
    """One daemon thread that shuts down the socket of each watched wait whose deadline passed.

    A socket is shut down only while its wait is still registered, under the lock the waiter
    needs to unregister: so it is still that connection's (a connection is closed only after
    its wait), never a reused file descriptor. Registering costs a lock and a set insertion per
    round trip; the thread sleeps until the earliest deadline and is woken only when a new one
    comes sooner (rarely: every deadline is now + the same few seconds)."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the thread is not copied, nor a lock

    def _reset(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._watches: set[_Watch] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, fd: int, within_s: float) -> Iterator[_Watch]:
        watch = _Watch(time.monotonic() + within_s, fd)
        with self._changed:
            self._watches.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="eventbank-postgres-deadlines", daemon=True
                )
                self._thread.start()
            elif watch.due < self._wake_at:
                self._changed.notify()
        try:
            yield watch
        finally:
            with self._changed:
                self._watches.discard(watch)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for watch in [watch for watch in self._watches if watch.due <= now]:
                    self._watches.discard(watch)
                    watch.cut = True
                    _shut_down(watch.fd)
                self._wake_at = min((watch.due for watch in self._watches), default=math.inf)
                self._changed.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _shut_down(fd: int) -> None:
    """End both directions of the socket ``fd`` (a duplicate is closed, the original is the
    connection's to close): a wait on it wakes at once and reads end-of-file."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    with sock, suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


DEADLINES = AnswerDeadlines()


class IdleCheck:
    """Checks a connection before it is lent only if it sat idle in the pool for ``after_s``.

    Why: a server restart leaves the pool holding dead connections, and checking them first
    costs no command a failure; but checking every loan was one round trip per batch (0.75 ms
    of a 6 ms group commit at 16 clients). A connection in steady use is known to be alive;
    should it die between two uses anyway, the write fails as ``StoreUnavailable``, which the
    service retries, as it does for a connection lost mid-write.
    """

    def __init__(self, after_s: float):
        self.after_s = after_s
        self._returned: weakref.WeakKeyDictionary[DeadlineConnection, float] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def returned(self, conn: DeadlineConnection) -> None:
        with self._lock:
            self._returned[conn] = time.monotonic()

    def check(self, conn: DeadlineConnection) -> None:
        """An empty query, answered within ``CHECK_ANSWER_S``: else the pool drops the
        connection and tries the next, until its checkout timeout."""
        with self._lock:
            returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > self.after_s:
            within = conn.answer_within_s
            conn.answer_within_s = min(within or math.inf, CHECK_ANSWER_S)
            try:
                ConnectionPool.check_connection(conn)
            finally:
                conn.answer_within_s = within


@contextmanager
def connection(pool: ConnectionPool[DeadlineConnection]) -> Iterator[DeadlineConnection]:
    """A pooled connection; driver errors become contract errors, never raw psycopg ones."""
    connected = False  # whether the failure came after the pool lent a connection
    try:
        with pool.connection() as conn:
            connected = True
            yield conn
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(_unavailable(exc, connected=connected)) from None
    except psycopg.Error as exc:
        raise StoreError(f"PostgreSQL refused the operation: {exc}") from None


# A statement and its parameters (``%s`` placeholders).
Statement = tuple[str, Sequence[Any]]


def run_together(conn: psycopg.Connection[Any], statements: Sequence[Statement]) -> list[list[Any]]:
    """Run ``statements`` in order in one round trip, and return each one's rows (none for one
    that returns none).

    They go as one simple-query message, with their parameters bound by psycopg on the client
    (``ClientCursor``: each value quoted as a literal by libpq's escaping, never pasted in as
    text). PostgreSQL runs the statements of one message in one transaction of their own, or in
    the transaction a ``BEGIN`` among them opens; the first that fails ends the message, and
    raises here. Why: psycopg's pipeline sends the same statements without waiting for each
    answer, but pays in Python for each one (a cursor, a wait on the socket, a bound
    execution): as messages, a projected batch's statements cost about a third less client
    CPU (docs/performance.md, "PostgreSQL's read model in two messages"). What a message gives
    up is a plan kept between executions: the server plans each statement again. (Nothing is
    prepared by name, which a pooler in transaction mode could not carry.)"""
    cursor = psycopg.ClientCursor(conn)
    cursor.execute("; ".join(sql for sql, _ in statements),
                   [value for _, params in statements for value in params])  # fmt: skip
    results: list[list[Any]] = []
    for _ in statements:
        results.append(cursor.fetchall() if cursor.description is not None else [])
        cursor.nextset()
    return results


@contextmanager
def rolled_back_on_error(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """For a transaction the caller's statements begin and commit (``run_together``): should
    anything raise between, roll it back before the connection returns to its pool. (A
    connection that cannot is closed by the pool.)"""
    try:
        yield
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with suppress(psycopg.Error):
                conn.execute("ROLLBACK")
        raise


def migrate(
    conninfo: str,
    migrations: Sequence[str],
    *,
    version_table: str,
    lock: tuple[int, int],
    component: str,
    connect_timeout_s: int,
    lock_timeout_s: float,
) -> None:
    """Create or upgrade a schema; the advisory lock ``lock`` lets concurrent first opens queue.

    Migration N brings the schema recorded in ``version_table`` from version N-1 to N.
    """
    connected = False
    try:
        parameters = connection_parameters(
            conninfo,
            connect_timeout_s=connect_timeout_s,
            lock_timeout_s=lock_timeout_s,
            statement_timeout_s=None,  # DDL may take its time: see the module docstring
        )
        with psycopg.connect(conninfo, autocommit=True, **parameters) as conn:
            connected = True
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", lock)
                _apply_migrations(conn, migrations, version_table, component)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(_unavailable(exc, connected=connected)) from None
    except psycopg.Error as exc:
        if not connected:  # libpq refused the connection string itself
            reason = _first_line(exc)
            raise InvalidInput(f"invalid PostgreSQL connection string: {reason}") from None
        raise StoreError(f"PostgreSQL refused the schema migration: {exc}") from None


def one_row(cursor: psycopg.Cursor[Any]) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, a scalar select)."""
    row = cursor.fetchone()
    if row is None:
        raise StoreError("PostgreSQL returned no row where a query always returns one")
    return row


def _apply_migrations(
    conn: psycopg.Connection, migrations: Sequence[str], version_table: str, component: str
) -> None:
    """Bring the schema to ``len(migrations)``; needs no CREATE privilege when already there."""
    table = sql.Identifier(version_table)
    if one_row(conn.execute("SELECT to_regclass(%s)", (version_table,)))[0] is None:
        conn.execute(sql.SQL("CREATE TABLE {} (version bigint NOT NULL)").format(table))
        conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (0)").format(table))
    current = one_row(conn.execute(sql.SQL("SELECT version FROM {}").format(table)))[0]
    target = len(migrations)
    if current > target:
        info = conn.info
        raise SchemaTooNew(
            f"PostgreSQL database {info.dbname!r} on {info.host}:{info.port} has {component} "
            f"schema version {current}, newer than this eventbank understands ({target}); "
            "upgrade eventbank"
        )
    for script in migrations[current:]:
        conn.execute(script)
    if current < target:
        conn.execute(sql.SQL("UPDATE {} SET version = %s").format(table), (target,))


def _unavailable(exc: psycopg.Error, *, connected: bool) -> str:
    """One line for StoreUnavailable: what failed, and what became of the operation. Without a
    connection nothing was sent, so a read is not told about interrupted writes; with one, the
    operation may have been a write whose fate the lost connection hides."""
    if not connected:
        return f"PostgreSQL is unavailable ({_first_line(exc)}); nothing was read or written"
    return (
        f"PostgreSQL is unavailable: the connection was lost ({_first_line(exc)}); a write in "
        "progress was rolled back or its outcome is unknown, and retrying the command is safe"
    )


def _first_line(exc: psycopg.Error) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
