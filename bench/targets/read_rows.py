"""The read model's rows of the engine-alone transfers, and their writing, with no logic.

eventbank projects each group-commit batch into the read models before it answers (inline
projection, the default), so its in-process figures include these rows: per transfer two
balances updated, two movements, a transfer row and two index entries, in the read store's own
transaction, beside the event store's two events and command record. ``bench/ceiling.py``
writes them after each engine-alone transaction when asked (``read_model=True``), to show how
much of the engine alone those rows take. A reference, not a bound: it writes them serially,
with ``executemany``, where eventbank overlaps a batch's projection with the next batch's
append and, on PostgreSQL, inserts each table's rows in one statement from arrays.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg

from bench.targets.raw_sql import RawPostgres, RawSql
from eventbank.engines.postgres.read_store import PostgresReadStore
from eventbank.engines.sql.transfer_rows import TRANSACTION_COLUMNS, TRANSFER_COLUMNS
from eventbank.engines.sqlite.read_store import SqliteReadStore
from eventbank.engines.urls import default_read_store_url, sqlite_path

PROJECTION = "accounts"
BALANCE_COLUMNS = (
    "account_id, owner, account_type, currency, balance_minor, status, version, updated_at"
)
CREATED_AT = "2026-12-07T00:00:00.000000Z"

# The read rows of a batch: balances (balance, version, time, account), movements, transfer
# rows, index entries, and the checkpoint to move to.
ReadRows = tuple[list[tuple], list[tuple], list[tuple], list[tuple], int]


class ReadModelRows:
    """The read model's rows of each transfer, built with no logic: each account's version and
    balance are tracked here, as ``rows.Versions`` tracks the events' versions."""

    def __init__(self, account_ids: Sequence[str], initial_minor: int):
        self._state = {account: (2, initial_minor) for account in account_ids}
        self._position = 2 * len(account_ids)

    def of(self, transfers: Sequence) -> ReadRows:
        balances, moves, rows, index = [], [], [], []
        for t in transfers:
            transfer_id = str(uuid.uuid4())
            for account, sign, other, kind in ((t.source, -1, t.target, "transfer_out"),
                                               (t.target, 1, t.source, "transfer_in")):  # fmt: skip
                version, balance = self._state[account]
                version, balance = version + 1, balance + sign * t.amount_minor
                self._state[account] = (version, balance)
                balances.append((balance, version, CREATED_AT, account))
                moves.append((account, version, kind, sign * t.amount_minor, "USD", other,
                              transfer_id, balance, CREATED_AT, "{}", "", None))  # fmt: skip
                index.append((account, CREATED_AT, transfer_id))
            rows.append((transfer_id, "transfer", "USD", CREATED_AT, t.source, t.target,
                         json.dumps([t.source, t.target]), "{}", "", None, 0, t.amount_minor,
                         "posted", "[]", 0))  # fmt: skip
            self._position += 2
        return balances, moves, rows, index, self._position


class ReadWriter:
    """The read store's writes of a batch, in one transaction: ``transaction()`` opens one and
    yields what runs statements in it; ``mark`` is the driver's parameter mark; ``close``
    closes what the writer opened (nothing where it borrows the raw floor's connection)."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Any]],
        mark: str,
        account_ids: Sequence[str],
        initial_minor: int,
        close: Callable[[], None] = lambda: None,
    ):
        self._transaction = transaction
        self.close = close
        self._statements = [
            f"UPDATE account_balances SET balance_minor = {mark}, version = {mark},"
            f" updated_at = {mark} WHERE account_id = {mark}",
            f"INSERT INTO account_transactions ({TRANSACTION_COLUMNS})"
            f" VALUES ({', '.join([mark] * 12)})",
            f"INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES ({', '.join([mark] * 15)})",
            "INSERT INTO transfers_by_account (account_id, created_at, transfer_id)"
            f" VALUES ({mark}, {mark}, {mark})",
        ]
        self._checkpoint = (
            f"UPDATE projection_checkpoints SET position = {mark} WHERE projection = {mark}"
        )
        with self._transaction() as db:  # the accounts as opened, untimed
            db.executemany(
                f"INSERT INTO account_balances ({BALANCE_COLUMNS})"
                f" VALUES ({mark}, 'Bench', 'CHECKING', 'USD', {mark}, 'OPEN', 2, {mark})",
                [(account, initial_minor, CREATED_AT) for account in account_ids],
            )
            db.execute(f"INSERT INTO projection_checkpoints VALUES ({mark}, 0)", (PROJECTION,))

    def write(self, read: ReadRows) -> None:
        *tables, position = read
        with self._transaction() as db:
            for statement, values in zip(self._statements, tables, strict=True):
                db.executemany(statement, values)
            db.execute(self._checkpoint, (position, PROJECTION))


def _sqlite_reads(store_url: str, account_ids: Sequence[str], initial_minor: int) -> ReadWriter:
    """The read store's own file, as eventbank opens it (WAL, ``synchronous=NORMAL``)."""
    path = sqlite_path(default_read_store_url(store_url))
    SqliteReadStore(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")

    @contextmanager
    def transaction() -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    return ReadWriter(transaction, "?", account_ids, initial_minor, close=conn.close)


def _postgres_reads(
    raw: RawPostgres, store_url: str, account_ids: Sequence[str], initial_minor: int
) -> ReadWriter:
    """The read models in the event store's database (the default), on the raw floor's
    connection."""
    PostgresReadStore.from_url(store_url).close()
    conn = raw.connection()

    @contextmanager
    def transaction() -> Iterator[psycopg.Cursor]:
        with conn.transaction(), conn.cursor() as cursor:
            yield cursor

    return ReadWriter(transaction, "%s", account_ids, initial_minor)


def read_writer(raw: RawSql, account_ids: Sequence[str], initial_minor: int) -> ReadWriter:
    """The read store beside ``raw``'s event store, as eventbank opens it by default."""
    if isinstance(raw, RawPostgres):
        return _postgres_reads(raw, raw.store_url, account_ids, initial_minor)
    return _sqlite_reads(raw.store_url, account_ids, initial_minor)
