"""Read models in their own SQLite file, next to the event store (``eventbank.db`` ->
``eventbank.read.db``).

A separate file rather than tables in the event store's file: SQLite has one writer per file,
so keeping projections apart means a projection write never holds the lock a payment needs,
and the read models can be deleted and rebuilt without touching the source of truth.

Commits are not fsynced one by one (``synchronous=NORMAL``; the event store keeps ``FULL``). In
WAL mode that loses nothing when the process dies (a committed transaction is in the WAL, in the
OS's cache), and on a power or kernel failure only the newest transactions since the WAL was
last synced: recovery keeps the WAL up to its first torn frame, so the file is as it was at an
earlier commit, rows and checkpoint together. Every row the kept checkpoint covers was committed
with it or before it, so it is there; whatever came after is re-applied by the runner from the
checkpoint, and the version guard makes that exactly once. What it saves: an fsync per
read-store commit, one per group-commit batch with inline projection (served transfers on the
benchmark machine: 585-657 against 756-793/s, docs/performance.md). tests/test_request_path.py
kills projecting processes and checks the read model against a replay.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eventbank.domain.canonical import canonical_json
from eventbank.engines.sql.checkpoints import move_checkpoint
from eventbank.engines.sql.transfer_rows import (
    T_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    TRANSFER_COLUMNS,
    index_rows,
    refolded,
    to_refold,
    transaction_from,
    transfer_from,
    transfer_values,
    which,
)
from eventbank.engines.sqlite.connection import SqliteFile
from eventbank.ports.read_store import (
    BalanceRow,
    Change,
    CurrencyTotal,
    Failure,
    ReadStoreError,
    TransactionRow,
    TransferIndex,
    TransferRow,
    check_accounts_page,
    check_transfers_page,
)

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE account_balances (
        account_id    TEXT PRIMARY KEY,
        owner         TEXT    NOT NULL,
        account_type  TEXT    NOT NULL,
        currency      TEXT    NOT NULL,
        balance_minor INTEGER NOT NULL,
        status        TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        updated_at    TEXT    NOT NULL
    );
    CREATE TABLE account_transactions (
        account_id          TEXT    NOT NULL,
        version             INTEGER NOT NULL,
        kind                TEXT    NOT NULL,
        amount_minor        INTEGER NOT NULL,
        currency            TEXT    NOT NULL,
        counterparty        TEXT,
        transfer_id         TEXT,
        balance_after_minor INTEGER NOT NULL,
        recorded_at         TEXT    NOT NULL,
        PRIMARY KEY (account_id, version)
    );
    CREATE INDEX account_transactions_by_transfer ON account_transactions (transfer_id)
        WHERE transfer_id IS NOT NULL;
    CREATE VIEW totals AS
        SELECT currency, SUM(status = 'OPEN') AS accounts_open, SUM(balance_minor) AS balance_minor
        FROM account_balances GROUP BY currency;
    CREATE TABLE projection_checkpoints (
        projection TEXT PRIMARY KEY,
        position   INTEGER NOT NULL
    );
    CREATE TABLE projection_failures (
        projection      TEXT    NOT NULL,
        aggregate_id    TEXT    NOT NULL,
        version         INTEGER NOT NULL,
        error           TEXT    NOT NULL,
        attempts        INTEGER NOT NULL,
        first_failed_at TEXT    NOT NULL,
        next_attempt_at TEXT    NOT NULL,
        PRIMARY KEY (projection, aggregate_id)
    );
    """,
    # 2: an exact totals view. SUM over 64-bit integers raises "integer overflow" once a
    # currency's total passes 2**63 - 1, and total() is a float; so each balance is split into
    # its high and low 32 bits, summed apart (neither sum can overflow below 2**31 rows per
    # currency), and joined in Python: balance_minor = (balance_high << 32) + balance_low.
    """
    DROP VIEW totals;
    CREATE VIEW totals AS
        SELECT currency, SUM(status = 'OPEN') AS accounts_open,
               SUM(balance_minor >> 32) AS balance_high,
               SUM(balance_minor & 4294967295) AS balance_low
        FROM account_balances GROUP BY currency;
    """,
    # 3: overdraft limits. Rows written before had none (no limit could be set): 0 is right.
    """
    ALTER TABLE account_balances ADD COLUMN overdraft_limit_minor INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: pending transfers. Rows written before had none (none could be made): 0 is right.
    """
    ALTER TABLE account_balances ADD COLUMN pending_debits_minor INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE account_balances ADD COLUMN pending_credits_minor INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: metadata, descriptions, reversals, and the transfers read model with its indexes (by
    # time, by account, by metadata pair; each in (created_at, transfer_id) order). Movements
    # written before had no metadata, description or reversal: empty is right. Transfers made
    # before are listed once the read models are rebuilt (``eventbank projections rebuild``).
    """
    ALTER TABLE account_transactions ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE account_transactions ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE account_transactions ADD COLUMN reverses TEXT;
    CREATE TABLE transfers (
        transfer_id    TEXT PRIMARY KEY,
        kind           TEXT    NOT NULL,
        currency       TEXT    NOT NULL,
        created_at     TEXT    NOT NULL,
        from_account   TEXT,
        to_account     TEXT,
        accounts       TEXT    NOT NULL,
        metadata       TEXT    NOT NULL,
        description    TEXT    NOT NULL,
        reverses       TEXT,
        held_minor     INTEGER NOT NULL,
        moved_minor    INTEGER NOT NULL,
        outcome        TEXT    NOT NULL,
        reversed_by    TEXT    NOT NULL,
        reversed_minor INTEGER NOT NULL
    );
    CREATE INDEX transfers_by_time ON transfers (created_at, transfer_id);
    CREATE INDEX transfers_by_original ON transfers (reverses) WHERE reverses IS NOT NULL;
    CREATE TABLE transfers_by_account (
        account_id  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        PRIMARY KEY (account_id, created_at, transfer_id)
    ) WITHOUT ROWID;
    CREATE TABLE transfers_by_meta (
        meta_key    TEXT NOT NULL,
        meta_value  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        transfer_id TEXT NOT NULL,
        PRIMARY KEY (meta_key, meta_value, created_at, transfer_id)
    ) WITHOUT ROWID;
    """,
)

_BALANCE_COLUMNS = (
    "account_id, owner, account_type, currency, balance_minor, status, version, updated_at,"
    " overdraft_limit_minor, pending_debits_minor, pending_credits_minor"
)
# Each index as (rows, key condition, which table's (created_at, transfer_id) orders it).
_TRANSFER_INDEXES = {
    "time": ("transfers t", "", "t"),
    "account": ("transfers_by_account i JOIN transfers t USING (transfer_id)",
                "i.account_id = ? AND ", "i"),
    "meta": ("transfers_by_meta i JOIN transfers t USING (transfer_id)",
             "(i.meta_key, i.meta_value) = (?, ?) AND ", "i"),
}  # fmt: skip
_FAILURE_COLUMNS = (
    "projection, aggregate_id, version, error, attempts, first_failed_at, next_attempt_at"
)


class SqliteReadStore:
    """The ReadStore contract on one SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0):
        self.path = str(path)
        self._db = SqliteFile(
            self.path, _MIGRATIONS, busy_timeout_s=busy_timeout_s, synchronous="NORMAL"
        )
        self._conn = self._db.conn

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ writes

    def apply(
        self,
        projection: str,
        changes: Sequence[Change],
        checkpoint: int | None = None,
        *,
        only_from: int | None = None,
    ) -> None:
        with self._db.write_transaction() as conn:
            applied = _upsert_balances(conn, changes)
            moves = [change.transaction for change in applied if change.transaction is not None]
            refold = to_refold(moves)
            # what earlier batches wrote of these transfers; the rest of their movements is this
            # batch's own, folded as they are rather than written and read back
            by_transfer = _movements_of(conn, sorted({*refold[0], *refold[1]}))
            conn.executemany(
                f"INSERT INTO account_transactions ({TRANSACTION_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(t.account_id, t.version, t.kind, t.amount_minor, t.currency, t.counterparty,
                  t.transfer_id, t.balance_after_minor, t.recorded_at,
                  canonical_json(dict(t.metadata)), t.description, t.reverses)
                 for t in moves],
            )  # fmt: skip
            for move in moves:
                if move.transfer_id is not None:
                    by_transfer.setdefault(move.transfer_id, []).append(move)
            for transfer_ids in refold:  # the originals after the reversals' rows are written
                _refold(conn, transfer_ids, by_transfer)
            if checkpoint is not None:
                conn.execute(*move_checkpoint(projection, checkpoint, only_from, "?"))

    def save_failure(self, failure: Failure) -> None:
        with self._db.write_transaction() as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO projection_failures ({_FAILURE_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (failure.projection, failure.aggregate_id, failure.version, failure.error,
                 failure.attempts, failure.first_failed_at, failure.next_attempt_at),
            )  # fmt: skip

    def clear_failure(self, projection: str, aggregate_id: str) -> None:
        with self._db.write_transaction() as conn:
            conn.execute(
                "DELETE FROM projection_failures WHERE projection = ? AND aggregate_id = ?",
                (projection, aggregate_id),
            )

    def reset(self, projection: str) -> None:
        """Forget everything this projection wrote, so a rebuild starts from nothing."""
        with self._db.write_transaction() as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM projection_checkpoints WHERE projection = ?", (projection,))
            conn.execute("DELETE FROM projection_failures WHERE projection = ?", (projection,))

    # ------------------------------------------------------------ reads

    def checkpoint(self, projection: str) -> int:
        row = (
            self._conn()
            .execute(
                "SELECT position FROM projection_checkpoints WHERE projection = ?", (projection,)
            )
            .fetchone()
        )
        return row[0] if row else 0

    def balance(self, account_id: str) -> BalanceRow | None:
        return self.balances([account_id]).get(account_id)

    def balances(self, account_ids: Sequence[str]) -> dict[str, BalanceRow]:
        found: dict[str, BalanceRow] = {}
        ids = list(dict.fromkeys(account_ids))
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            rows = self._conn().execute(
                f"SELECT {_BALANCE_COLUMNS} FROM account_balances"
                f" WHERE account_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((r[0], BalanceRow(*r)) for r in rows)
        return found

    def all_balances(self) -> list[BalanceRow]:
        rows = self._conn().execute(
            f"SELECT {_BALANCE_COLUMNS} FROM account_balances ORDER BY account_id"
        )
        return [BalanceRow(*r) for r in rows]

    def accounts_page(self, after: str = "", limit: int = 100) -> list[BalanceRow]:
        """A range read of the primary key's index from ``after``: at most ``limit`` rows."""
        check_accounts_page(after, limit)
        rows = self._conn().execute(
            f"SELECT {_BALANCE_COLUMNS} FROM account_balances WHERE account_id > ?"
            " ORDER BY account_id LIMIT ?",
            (after, limit),
        )
        return [BalanceRow(*r) for r in rows]

    def transactions(
        self, account_id: str, after_version: int = 0, limit: int = 100
    ) -> list[TransactionRow]:
        rows = self._conn().execute(
            f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions"
            " WHERE account_id = ? AND version > ? ORDER BY version LIMIT ?",
            (account_id, after_version, limit),
        )
        return [transaction_from(r, json.loads) for r in rows]

    def transfer(self, transfer_id: str) -> list[TransactionRow]:
        """Both halves of one transfer (debit first), once projected."""
        rows = self._conn().execute(
            f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions WHERE transfer_id = ?"
            " ORDER BY kind DESC, account_id",
            (transfer_id,),
        )
        return [transaction_from(r, json.loads) for r in rows]

    def transfer_rows(self, transfer_ids: Sequence[str]) -> dict[str, TransferRow]:
        ids = list(dict.fromkeys(transfer_ids))
        found: dict[str, TransferRow] = {}
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            rows = self._conn().execute(
                f"SELECT {TRANSFER_COLUMNS} FROM transfers"
                f" WHERE transfer_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((r[0], transfer_from(r, json.loads)) for r in rows)
        return found

    def transfers_page(
        self, index: TransferIndex, after: tuple[str, str], before: str, limit: int
    ) -> list[TransferRow]:
        """A range read of one index (a primary key's, or ``transfers_by_time``)."""
        check_transfers_page(index, after, before, limit)
        name, by = which(index)
        rows_from, key, p = _TRANSFER_INDEXES[name]
        rows = self._conn().execute(
            f"SELECT {T_COLUMNS} FROM {rows_from} WHERE {key}"
            f"({p}.created_at, {p}.transfer_id) > (?, ?) AND {p}.created_at < ?"
            f" ORDER BY {p}.created_at, {p}.transfer_id LIMIT ?",
            (*by, *after, before, limit),
        )
        return [transfer_from(r, json.loads) for r in rows]

    def totals(self) -> list[CurrencyTotal]:
        """Exact at any size: the view's two 32-bit halves are joined as Python ints."""
        rows = self._conn().execute(
            "SELECT currency, accounts_open, balance_high, balance_low FROM totals"
            " ORDER BY currency"
        )
        return [CurrencyTotal(currency, n, (high << 32) + low) for currency, n, high, low in rows]

    def failures(self, projection: str) -> list[Failure]:
        rows = self._conn().execute(
            f"SELECT {_FAILURE_COLUMNS} FROM projection_failures WHERE projection = ?"
            " ORDER BY aggregate_id",
            (projection,),
        )
        return [Failure(*r) for r in rows]


# An absent row may only start at version 1 (anything else is a gap), and a present one only
# move one version up: a change the guard skips is a duplicate or a gap (_upsert_balances).
_UPSERT_BALANCE = (
    f"INSERT INTO account_balances ({_BALANCE_COLUMNS})"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11"
    " WHERE ?7 = 1 OR EXISTS (SELECT 1 FROM account_balances WHERE account_id = ?1)"
    " ON CONFLICT (account_id) DO UPDATE SET"
    " owner = excluded.owner, account_type = excluded.account_type,"
    " currency = excluded.currency, balance_minor = excluded.balance_minor,"
    " status = excluded.status, version = excluded.version,"
    " updated_at = excluded.updated_at,"
    " overdraft_limit_minor = excluded.overdraft_limit_minor,"
    " pending_debits_minor = excluded.pending_debits_minor,"
    " pending_credits_minor = excluded.pending_credits_minor"
    " WHERE account_balances.version = excluded.version - 1"
)


def _upsert_balances(conn: Any, changes: Sequence[Change]) -> list[Change]:
    """Write each change's row under the version guard; the changes written. A skipped one
    must be a duplicate (its row already there), else it is a gap and raises.

    All in one statement when every change applies, as they do but when the runner delivers
    again; otherwise that is undone and the rows written one by one to learn which applied."""
    values = [(r.account_id, r.owner, r.account_type, r.currency, r.balance_minor, r.status,
               r.version, r.updated_at, r.overdraft_limit_minor, r.pending_debits_minor,
               r.pending_credits_minor) for r in (change.row for change in changes)]  # fmt: skip
    conn.execute("SAVEPOINT balances")
    if conn.executemany(_UPSERT_BALANCE, values).rowcount == len(changes):
        conn.execute("RELEASE SAVEPOINT balances")
        return list(changes)
    conn.execute("ROLLBACK TO SAVEPOINT balances")
    conn.execute("RELEASE SAVEPOINT balances")
    applied = []
    for change, row_values in zip(changes, values, strict=True):
        if conn.execute(_UPSERT_BALANCE, row_values).rowcount:
            applied.append(change)
        else:
            _require_already_applied(conn, change.row)
    return applied


def _require_already_applied(conn: Any, row: BalanceRow) -> None:
    """A skipped change must be a duplicate; a row behind it would mean a gap slipped through."""
    current = conn.execute(
        "SELECT version FROM account_balances WHERE account_id = ?", (row.account_id,)
    ).fetchone()
    if current is None or current[0] < row.version:
        at = current[0] if current else 0
        raise ReadStoreError(
            f"gap in {row.account_id}: read model at v{at}, change is v{row.version}"
        )


def _movements_of(conn: Any, transfer_ids: Sequence[str]) -> dict[str, list[TransactionRow]]:
    """The movements of these transfers the read model holds, by transfer id."""
    found: dict[str, list[TransactionRow]] = {}
    for chunk in _chunks(transfer_ids):
        for m in conn.execute(f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions"
                              f" WHERE transfer_id IN ({','.join('?' * len(chunk))})",
                              chunk):  # fmt: skip
            found.setdefault(m[6], []).append(transaction_from(m, json.loads))
    return found


def _refold(conn: Any, transfer_ids: Sequence[str], moves: dict[str, list[TransactionRow]]) -> None:
    """Each transfer's row from all its movements (``moves``) and the reversals that name it,
    and its index entries (its time and metadata are its first movements', so they never
    move). An id with no movements (an original not in this read model) gets no row. A few
    statements for the whole batch, not a few per transfer."""
    reversals: dict[str, list[tuple[str, int]]] = {}
    for chunk in _chunks(transfer_ids):
        for original, reversal, moved in conn.execute(
            "SELECT reverses, transfer_id, moved_minor FROM transfers"
            f" WHERE reverses IN ({','.join('?' * len(chunk))}) ORDER BY transfer_id",
            chunk,
        ):
            reversals.setdefault(original, []).append((reversal, moved))
    rows = refolded(transfer_ids, moves, reversals)
    by_account, by_meta = index_rows(rows)
    conn.executemany(
        f"INSERT OR REPLACE INTO transfers ({TRANSFER_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [transfer_values(row) for row in rows],
    )
    conn.executemany("INSERT OR IGNORE INTO transfers_by_account VALUES (?, ?, ?)", by_account)
    conn.executemany("INSERT OR IGNORE INTO transfers_by_meta VALUES (?, ?, ?, ?)", by_meta)


def _chunks(ids: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """``ids`` in pieces that stay under SQLite's bound-parameter limit."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]
