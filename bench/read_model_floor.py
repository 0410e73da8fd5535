"""The floor under the in-process bar: the engine alone, then the same with the read model's rows.

The in-process bar holds ``LedgerService`` at 16 clients to half of the engine alone
(bench/ceiling.py: the events and command records of 16 transfers per transaction, every row
built beforehand, nothing else). ``LedgerService`` also projects each group-commit batch into
the read models before it answers (inline projection, the default), and those rows are more
than the event store's: per transfer two balances updated, two movements, a transfer row and
two index entries, in the read store's own transaction, beside two events and a command record.
This measures both, one after the other, on a fresh store each, with every row built before
the clock starts and no logic: the engine alone, and the engine with the read model's rows
(the read store as eventbank opens it: on SQLite its own file with ``synchronous=NORMAL``, on
PostgreSQL the same database). If the second is below half the first, no implementation of
inline projection can meet the bar on this machine, whatever its Python costs.

    python -m bench.read_model_floor [--engines sqlite,postgresql] [--transfers 4000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.engines import open_engines
from bench.targets.raw_sql import RawPostgres, RawSql, RawSqlite
from bench.workload import ACCOUNTS, CONCURRENT, INITIAL_MINOR, account_id, on_cpu, plan
from bench.workload import client_cpu as scenario_cpu
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


@dataclass(frozen=True, slots=True)
class Floor:
    engine: str
    transfers: int
    per_transaction: int
    alone_per_s: float  # events and command records only (as bench/ceiling.py)
    alone_cpu_us: float  # this process's CPU per transfer
    with_read_model_per_s: float  # and the read model's rows, in the read store's transaction
    with_read_model_cpu_us: float

    @property
    def ratio(self) -> float:
        return self.with_read_model_per_s / self.alone_per_s


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
    yields what runs statements in it; ``mark`` is the driver's parameter mark."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[Any]],
        mark: str,
        account_ids: Sequence[str],
        initial_minor: int,
    ):
        self._transaction = transaction
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


def sqlite_reads(store_url: str, account_ids: Sequence[str], initial_minor: int) -> ReadWriter:
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

    return ReadWriter(transaction, "?", account_ids, initial_minor)


def postgres_reads(
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


def _timed(
    raw: RawSql, batches: list, writer: ReadWriter | None, cpu: int | None
) -> tuple[float, float]:
    """Write every batch (its events, then its read rows when ``writer`` is given); returns
    transfers/s and CPU µs per transfer."""
    transfers = sum(len(commands) for (_, commands), _ in batches)
    with on_cpu(cpu):
        wall, processor = time.perf_counter(), time.process_time()
        for (events, commands), read in batches:
            raw.write(events, commands)
            if writer is not None:
                writer.write(read)
        wall, processor = time.perf_counter() - wall, time.process_time() - processor
    return transfers / wall, processor / transfers * 1e6


def measure(engine: str, store_urls: Sequence[str], transfers: int, seed: int = 1,
            cpu: int | None = None) -> Floor:  # fmt: skip
    """The engine alone on the first fresh store, then with the read model's rows on the
    second; both write the same plan, 16 transfers per transaction."""
    results = []
    for store_url, with_reads in zip(store_urls, (False, True), strict=True):
        raw: RawSql = (RawSqlite if engine == "sqlite" else RawPostgres)(store_url, 16)
        accounts = [account_id(i) for i in range(ACCOUNTS)]
        raw.open_accounts(accounts, INITIAL_MINOR)
        writer = None
        if with_reads and isinstance(raw, RawPostgres):
            writer = postgres_reads(raw, store_url, accounts, INITIAL_MINOR)
        elif with_reads:
            writer = sqlite_reads(store_url, accounts, INITIAL_MINOR)
        reads = ReadModelRows(accounts, INITIAL_MINOR)
        per_client = plan(CONCURRENT, transfers, seed)
        work = [t for turn in itertools.zip_longest(*per_client) for t in turn if t is not None]
        chunks = [work[start : start + 16] for start in range(0, len(work), 16)]
        batches = [(raw.rows_of(chunk), reads.of(chunk)) for chunk in chunks]
        try:
            results.append(_timed(raw, batches, writer, cpu))
        finally:
            raw.close()
    (alone, alone_cpu), (read, read_cpu) = results
    return Floor(engine, len(work), 16, alone, alone_cpu, read, read_cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.read_model_floor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--transfers", type=int, default=4_000)
    args = parser.parse_args(argv)
    with open_engines(args.engines.split(",")) as engines:
        for engine in engines:
            with engine.fresh() as alone_url, engine.fresh() as reads_url:
                floor = measure(engine.name, [alone_url, reads_url], args.transfers,
                                cpu=scenario_cpu())  # fmt: skip
            print(f"{floor.engine}: {floor.transfers:,} transfers, 16 per transaction, one "
                  f"thread: the engine alone {floor.alone_per_s:,.0f}/s "
                  f"({floor.alone_cpu_us:.0f} µs of CPU each); with the read model's rows "
                  f"{floor.with_read_model_per_s:,.0f}/s ({floor.with_read_model_cpu_us:.0f} "
                  f"µs): {floor.ratio:.2f}x the engine alone", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
