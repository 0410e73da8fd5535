"""Read models on PostgreSQL: by default in the event store's own database, beside ``events``.

Same tables and semantics as the SQLite read store. Unlike SQLite, PostgreSQL lets two
projection processes write at once, so ``apply`` relies on row locks rather than a file lock:

- Each upsert is guarded by ``version = excluded.version - 1`` and locks its row, whether it
  applies or is skipped, until commit; a second process delivering the same change waits, then
  sees the committed version and skips it as a duplicate. Nothing is double counted.
- A batch's changes are applied in account-id order (each account keeping its own order), so two
  batches always take their row locks in the same order and cannot deadlock each other. They go
  in rounds, one statement each: every account's first change, then every second one, and so
  on (one statement may not update a row twice); every row is locked in the first.
- A batch is two messages (``connection.run_together``), two round trips, not one per
  statement (one more when it reverses a transfer, one more when a change was delivered
  twice): BEGIN, the balances, the movements and the reads of the transfers to fold again go
  in the first; the transfer rows, checkpoint and COMMIT in the last. A movement is written
  with ``ON CONFLICT DO NOTHING``: one whose change is skipped as delivered twice is there
  already, and one whose change is a gap is rolled back with it.
- A batch commits with ``synchronous_commit = off`` (for its own transaction only; the event
  store's commits keep waiting for their flush), as the SQLite read store commits with
  ``synchronous=NORMAL``: its COMMIT does not wait for the WAL to reach the disk. A crash of the
  server can then lose the newest read-model commits, never an event. What it keeps is an
  earlier commit, rows and checkpoint together (the WAL is replayed in order, up to what was
  flushed; on a server the event store shares, each of its commits flushes all WAL written
  before it), so every row its checkpoint covers is there, and the runner re-applies the rest
  from the checkpoint, exactly once by the version guard (tests/test_chaos.py crashes the
  server under load). What it saves: a wait for a flush in each batch of the inline
  projection, which a command's answer waits for (docs/performance.md).

Its schema version is recorded in ``read_schema_info``, apart from the event store's
``schema_info``, since both may share a database. Ids and currencies use the "C" collation, so
listings sort by code point, as on SQLite, whatever the database's locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from eventbank.domain.canonical import canonical_json
from eventbank.engines.postgres import connection as pg
from eventbank.engines.postgres.json_rows import insert_rows, rows_param
from eventbank.engines.sql.checkpoints import move_checkpoint
from eventbank.engines.sql.transfer_rows import (
    T_COLUMNS,
    TABLES,
    TRANSACTION_COLUMNS,
    TRANSACTION_NAMES,
    TRANSFER_COLUMNS,
    TRANSFER_NAMES,
    index_rows,
    refolded,
    to_refold,
    transaction_from,
    transfer_from,
    transfer_values,
    which,
)
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

SCHEMA_VERSION = 4

# Advisory locks are keyed (namespace, key) per database; the namespace is "read" in ASCII.
_LOCKTRANSFER_NAMESPACE = 0x72656164
_MIGRATION_LOCK = 1
_TRANSFER_LOCKS = 0x7872656C  # "xrel": one transaction-scoped lock per transfer id's hash

# Migration N brings the schema from version N-1 to N. Append only; never edit a shipped one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE account_balances (
        account_id    text COLLATE "C" PRIMARY KEY,
        owner         text   NOT NULL,
        account_type  text   NOT NULL,
        currency      text   COLLATE "C" NOT NULL,
        balance_minor bigint NOT NULL,
        status        text   NOT NULL,
        version       bigint NOT NULL,
        updated_at    text   NOT NULL
    );
    CREATE TABLE account_transactions (
        account_id          text   COLLATE "C" NOT NULL,
        version             bigint NOT NULL,
        kind                text   COLLATE "C" NOT NULL,
        amount_minor        bigint NOT NULL,
        currency            text   NOT NULL,
        counterparty        text,
        transfer_id         text,
        balance_after_minor bigint NOT NULL,
        recorded_at         text   NOT NULL,
        PRIMARY KEY (account_id, version)
    );
    CREATE INDEX account_transactions_by_transfer ON account_transactions (transfer_id)
        WHERE transfer_id IS NOT NULL;
    -- sum() of bigint is numeric: a total cannot overflow, and it is read back as an exact int.
    CREATE VIEW totals AS
        SELECT currency, count(*) FILTER (WHERE status = 'OPEN') AS accounts_open,
               sum(balance_minor) AS balance_minor
        FROM account_balances GROUP BY currency;
    CREATE TABLE projection_checkpoints (
        projection text   PRIMARY KEY,
        position   bigint NOT NULL
    );
    CREATE TABLE projection_failures (
        projection      text   NOT NULL,
        aggregate_id    text   COLLATE "C" NOT NULL,
        version         bigint NOT NULL,
        error           text   NOT NULL,
        attempts        bigint NOT NULL,
        first_failed_at text   NOT NULL,
        next_attempt_at text   NOT NULL,
        PRIMARY KEY (projection, aggregate_id)
    );
    """,
    # 2: overdraft limits. Rows written before had none (no limit could be set): 0 is right.
    """
    ALTER TABLE account_balances ADD COLUMN overdraft_limit_minor bigint NOT NULL DEFAULT 0;
    """,
    # 3: pending transfers. Rows written before had none (none could be made): 0 is right.
    """
    ALTER TABLE account_balances ADD COLUMN pending_debits_minor bigint NOT NULL DEFAULT 0,
                                 ADD COLUMN pending_credits_minor bigint NOT NULL DEFAULT 0;
    """,
    # 4: metadata, descriptions, reversals, and the transfers read model with its indexes (by
    # time, by account, by metadata pair; each in (created_at, transfer_id) order). Movements
    # written before had no metadata, description or reversal: empty is right. Transfers made
    # before are listed once the read models are rebuilt (``eventbank projections rebuild``).
    """
    ALTER TABLE account_transactions ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}',
                                     ADD COLUMN description text NOT NULL DEFAULT '',
                                     ADD COLUMN reverses text;
    CREATE TABLE transfers (
        transfer_id    text   COLLATE "C" PRIMARY KEY,
        kind           text   NOT NULL,
        currency       text   NOT NULL,
        created_at     text   COLLATE "C" NOT NULL,
        from_account   text,
        to_account     text,
        accounts       jsonb  NOT NULL,
        metadata       jsonb  NOT NULL,
        description    text   NOT NULL,
        reverses       text   COLLATE "C",
        held_minor     bigint NOT NULL,
        moved_minor    bigint NOT NULL,
        outcome        text   NOT NULL,
        reversed_by    jsonb  NOT NULL,
        reversed_minor bigint NOT NULL
    );
    CREATE INDEX transfers_by_time ON transfers (created_at, transfer_id);
    CREATE INDEX transfers_by_original ON transfers (reverses) WHERE reverses IS NOT NULL;
    CREATE TABLE transfers_by_account (
        account_id  text COLLATE "C" NOT NULL,
        created_at  text COLLATE "C" NOT NULL,
        transfer_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (account_id, created_at, transfer_id)
    );
    CREATE TABLE transfers_by_meta (
        meta_key    text COLLATE "C" NOT NULL,
        meta_value  text COLLATE "C" NOT NULL,
        created_at  text COLLATE "C" NOT NULL,
        transfer_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (meta_key, meta_value, created_at, transfer_id)
    );
    """,
)
assert len(_MIGRATIONS) == SCHEMA_VERSION

_BALANCE_NAMES = ("account_id", "owner", "account_type", "currency", "balance_minor", "status",
                  "version", "updated_at", "overdraft_limit_minor", "pending_debits_minor",
                  "pending_credits_minor")  # fmt: skip
_BALANCE_COLUMNS = ", ".join(_BALANCE_NAMES)
# Each index as (rows, key condition, which table's (created_at, transfer_id) orders it).
_TRANSFER_INDEXES = {
    "time": ("transfers t", "", "t"),
    "account": ("transfers_by_account i JOIN transfers t USING (transfer_id)",
                "i.account_id = %s AND ", "i"),
    "meta": ("transfers_by_meta i JOIN transfers t USING (transfer_id)",
             "i.meta_key = %s AND i.meta_value = %s AND ", "i"),
}  # fmt: skip
_FAILURE_COLUMNS = (
    "projection, aggregate_id, version, error, attempts, first_failed_at, next_attempt_at"
)

# Each change's row under the version guard: its account id returned only when it was written;
# a skipped one (guard false) returns none. An absent row may only start at version 1: anything
# else is a gap. The check for a row looks up each of the batch's accounts by its key: without
# ``OFFSET 0`` PostgreSQL may choose to hash the whole table once per statement instead (it did
# below about 12,000 accounts, a full scan of the table in every projected batch).
_UPSERT_BALANCES = insert_rows(
    "account_balances", _BALANCE_NAMES,
    ("text", "text", "text", "text", "bigint", "text", "bigint", "text", "bigint", "bigint",
     "bigint"),
    "ON CONFLICT (account_id) DO UPDATE SET "
    + ", ".join(f"{name} = excluded.{name}" for name in _BALANCE_NAMES[1:])
    + " WHERE account_balances.version = excluded.version - 1 RETURNING account_id",
    where="batch.version = 1 OR EXISTS (SELECT 1 FROM account_balances known"
    " WHERE known.account_id = batch.account_id OFFSET 0)",
)  # fmt: skip


class PostgresReadStore:
    """The ReadStore contract on one PostgreSQL database."""

    def __init__(
        self,
        conninfo: str,
        *,
        pool_size: int = 10,
        connect_timeout_s: int = 10,
        lock_timeout_s: float = 10.0,
    ):
        pg.migrate(
            conninfo,
            _MIGRATIONS,
            version_table="read_schema_info",
            lock=(_LOCKTRANSFER_NAMESPACE, _MIGRATION_LOCK),
            component="eventbank read-model",
            connect_timeout_s=connect_timeout_s,
            lock_timeout_s=lock_timeout_s,
        )
        self._pool = pg.open_pool(
            conninfo,
            name="eventbank-reads",
            pool_size=pool_size,
            connect_timeout_s=connect_timeout_s,
            lock_timeout_s=lock_timeout_s,
        )

    @classmethod
    def from_url(cls, url: str) -> PostgresReadStore:
        """``postgresql://user:password@host:port/dbname?…``; libpq reads the URL as it is."""
        return cls(url)

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------ writes

    def apply(
        self,
        projection: str,
        changes: Sequence[Change],
        checkpoint: int | None = None,
        *,
        only_from: int | None = None,
    ) -> None:
        # One lock order for every batch (see above); the sort is stable, so each account's
        # changes keep their order.
        ordered = sorted(changes, key=lambda change: change.row.account_id)
        # a change skipped as delivered twice has its movement there already: not written again
        moves = [change.transaction for change in ordered if change.transaction is not None]
        rounds, turns = _balance_rounds(ordered)
        touched, originals = to_refold(moves)
        first: list[pg.Statement] = [("BEGIN", ()), ("SET LOCAL synchronous_commit = off", ())]
        first += [(_UPSERT_BALANCES, rows_param(rows)) for rows in rounds]
        if moves:
            first.append(_insert_transactions(moves))
        if touched:  # each transfer's lock before its movements are read (_refold_reads)
            first.append(_lock_transfers(touched + originals))
            first += _refold_reads(touched, moves)
        last: list[pg.Statement] = [("COMMIT", ())]
        if checkpoint is not None:
            last.insert(0, move_checkpoint(projection, checkpoint, only_from, "%s"))
        with pg.connection(self._pool) as conn, pg.rolled_back_on_error(conn):
            results = pg.run_together(conn, first)
            written = [{account for (account,) in rows} for rows in results[2 : 2 + len(rounds)]]
            applied = [c.row.account_id in written[t] for c, t in zip(ordered, turns, strict=True)]
            if gap := _first_gap(conn, ordered, applied):
                raise gap  # rolls back all of the batch
            if touched:
                writes = _refold_writes(touched, moves, *results[-2:])
                if originals:  # folded once the reversals' own rows are written
                    results = pg.run_together(conn, [*writes, *_refold_reads(originals, moves)])
                    writes = _refold_writes(originals, moves, *results[-2:])
                last = [*writes, *last]
            pg.run_together(conn, last)

    def save_failure(self, failure: Failure) -> None:
        with pg.connection(self._pool) as conn:
            conn.execute(
                f"INSERT INTO projection_failures ({_FAILURE_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (projection, aggregate_id)"
                " DO UPDATE SET version = excluded.version, error = excluded.error,"
                " attempts = excluded.attempts, first_failed_at = excluded.first_failed_at,"
                " next_attempt_at = excluded.next_attempt_at",
                (failure.projection, failure.aggregate_id, failure.version, failure.error,
                 failure.attempts, failure.first_failed_at, failure.next_attempt_at),
            )  # fmt: skip

    def clear_failure(self, projection: str, aggregate_id: str) -> None:
        with pg.connection(self._pool) as conn:
            conn.execute(
                "DELETE FROM projection_failures WHERE projection = %s AND aggregate_id = %s",
                (projection, aggregate_id),
            )

    def reset(self, projection: str) -> None:
        """Forget everything this projection wrote, so a rebuild starts from nothing."""
        with pg.connection(self._pool) as conn, conn.transaction():
            # Wait for in-flight applies and hold off new ones (readers go on), as SQLite's
            # write lock does, so no concurrent batch survives the reset half-applied.
            conn.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM projection_checkpoints WHERE projection = %s", (projection,))
            conn.execute("DELETE FROM projection_failures WHERE projection = %s", (projection,))

    # ------------------------------------------------------------ reads

    def checkpoint(self, projection: str) -> int:
        with pg.connection(self._pool) as conn:
            row = conn.execute(
                "SELECT position FROM projection_checkpoints WHERE projection = %s", (projection,)
            ).fetchone()
        return row[0] if row else 0

    def balance(self, account_id: str) -> BalanceRow | None:
        return self.balances([account_id]).get(account_id)

    def balances(self, account_ids: Sequence[str]) -> dict[str, BalanceRow]:
        if not account_ids:
            return {}
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {_BALANCE_COLUMNS} FROM account_balances WHERE account_id = ANY(%s)",
                (list(account_ids),),
            ).fetchall()
        return {r[0]: BalanceRow(*r) for r in rows}

    def all_balances(self) -> list[BalanceRow]:
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {_BALANCE_COLUMNS} FROM account_balances ORDER BY account_id"
            ).fetchall()
        return [BalanceRow(*r) for r in rows]

    def accounts_page(self, after: str = "", limit: int = 100) -> list[BalanceRow]:
        """A range read of the primary key's index ("C" collation: code point order)."""
        check_accounts_page(after, limit)
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {_BALANCE_COLUMNS} FROM account_balances WHERE account_id > %s"
                " ORDER BY account_id LIMIT %s",
                (after, limit),
            ).fetchall()
        return [BalanceRow(*r) for r in rows]

    def transactions(
        self, account_id: str, after_version: int = 0, limit: int = 100
    ) -> list[TransactionRow]:
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions"
                " WHERE account_id = %s AND version > %s ORDER BY version LIMIT %s",
                (account_id, after_version, limit),
            ).fetchall()
        return [transaction_from(r, _decoded) for r in rows]

    def transfer(self, transfer_id: str) -> list[TransactionRow]:
        """Both halves of one transfer (debit first), once projected."""
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions WHERE transfer_id = %s"
                " ORDER BY kind DESC, account_id",
                (transfer_id,),
            ).fetchall()
        return [transaction_from(r, _decoded) for r in rows]

    def transfer_rows(self, transfer_ids: Sequence[str]) -> dict[str, TransferRow]:
        if not transfer_ids:
            return {}
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = ANY(%s)",
                (list(transfer_ids),),
            ).fetchall()
        return {r[0]: transfer_from(r, _decoded) for r in rows}

    def transfers_page(
        self, index: TransferIndex, after: tuple[str, str], before: str, limit: int
    ) -> list[TransferRow]:
        """A range read of one index (a primary key's, or ``transfers_by_time``)."""
        check_transfers_page(index, after, before, limit)
        name, by = which(index)
        rows_from, key, p = _TRANSFER_INDEXES[name]
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {T_COLUMNS} FROM {rows_from} WHERE {key}"
                f"({p}.created_at, {p}.transfer_id) > (%s, %s) AND {p}.created_at < %s"
                f" ORDER BY {p}.created_at, {p}.transfer_id LIMIT %s",
                (*by, *after, before, limit),
            ).fetchall()
        return [transfer_from(r, _decoded) for r in rows]

    def totals(self) -> list[CurrencyTotal]:
        with pg.connection(self._pool) as conn:
            # sum(bigint) is numeric, exact at any size; read as its decimal text, never as
            # a float or a Decimal.
            rows = conn.execute(
                "SELECT currency, accounts_open, balance_minor::text FROM totals ORDER BY currency"
            ).fetchall()
        return [CurrencyTotal(currency, n, int(minor)) for currency, n, minor in rows]

    def failures(self, projection: str) -> list[Failure]:
        with pg.connection(self._pool) as conn:
            rows = conn.execute(
                f"SELECT {_FAILURE_COLUMNS} FROM projection_failures WHERE projection = %s"
                " ORDER BY aggregate_id",
                (projection,),
            ).fetchall()
        return [Failure(*r) for r in rows]


def _balance_rounds(changes: Sequence[Change]) -> tuple[list[list[tuple[Any, ...]]], list[int]]:
    """The rows of ``changes`` (in account order) for the guarded upserts, in rounds, one
    statement each: each account's first change, then each second one, … (the module
    docstring); and each change's round. A round's statement returns the accounts it wrote
    (each at most once in a round)."""
    rounds: list[list[tuple[Any, ...]]] = []
    turns: list[int] = []
    taken: dict[str, int] = {}
    for change in changes:
        r = change.row
        turn = taken[r.account_id] = taken.get(r.account_id, -1) + 1
        turns.append(turn)
        if turn == len(rounds):
            rounds.append([])
        rounds[turn].append((r.account_id, r.owner, r.account_type, r.currency, r.balance_minor,
                             r.status, r.version, r.updated_at, r.overdraft_limit_minor,
                             r.pending_debits_minor, r.pending_credits_minor))  # fmt: skip
    return rounds, turns


def _first_gap(
    conn: psycopg.Connection, changes: Sequence[Change], applied: Sequence[bool]
) -> ReadStoreError | None:
    """A skipped change must be a duplicate; a row behind it would mean a gap slipped through.

    What each skipped change saw is rebuilt walking back from the rows as they are now: a
    skipped row stays locked until commit, so after a skip it moved only by this batch's own
    guarded updates, each exactly one version up from where the row was before it.
    """
    skipped = {c.row.account_id for c, ok in zip(changes, applied, strict=True) if not ok}
    if not skipped:
        return None
    seen: dict[str, int] = dict(
        conn.execute(
            "SELECT account_id, version FROM account_balances WHERE account_id = ANY(%s)",
            (list(skipped),),
        ).fetchall()
    )
    gap = None
    for change, ok in zip(reversed(changes), reversed(applied), strict=True):
        row = change.row
        if ok:
            seen[row.account_id] = row.version - 1
        elif seen.get(row.account_id, 0) < row.version:
            gap = ReadStoreError(
                f"gap in {row.account_id}: read model at v{seen.get(row.account_id, 0)},"
                f" change is v{row.version}"
            )
    return gap


def _insert_transactions(moves: Sequence[TransactionRow]) -> pg.Statement:
    """The batch's movements in one statement; one already there (its change delivered
    twice) is left as it is."""
    return _INSERT_TRANSACTIONS, rows_param(
        [(t.account_id, t.version, t.kind, t.amount_minor, t.currency, t.counterparty,
          t.transfer_id, t.balance_after_minor, t.recorded_at,
          canonical_json(dict(t.metadata)), t.description, t.reverses) for t in moves]
    )  # fmt: skip


_INSERT_TRANSACTIONS = insert_rows(
    "account_transactions", tuple(TRANSACTION_NAMES),
    ("text", "bigint", "text", "bigint", "text", "text", "text", "bigint", "text", "jsonb",
     "text", "text"),
    "ON CONFLICT (account_id, version) DO NOTHING",
)  # fmt: skip
_UPSERT_TRANSFERS = insert_rows(
    "transfers", tuple(TRANSFER_NAMES),
    ("text", "text", "text", "text", "text", "text", "jsonb", "jsonb", "text", "text", "bigint",
     "bigint", "text", "jsonb", "bigint"),
    f"ON CONFLICT (transfer_id) DO UPDATE"
    f" SET {', '.join(f'{c} = excluded.{c}' for c in TRANSFER_NAMES)}",
)  # fmt: skip
_INDEX_BY_ACCOUNT = insert_rows(
    "transfers_by_account", ("account_id", "created_at", "transfer_id"), ("text",) * 3,
    "ON CONFLICT DO NOTHING",
)  # fmt: skip
_INDEX_BY_META = insert_rows(
    "transfers_by_meta", ("meta_key", "meta_value", "created_at", "transfer_id"), ("text",) * 4,
    "ON CONFLICT DO NOTHING",
)  # fmt: skip


def _lock_transfers(transfer_ids: list[str]) -> pg.Statement:
    """The transfers rows are folded again from the movements (``_refold_reads``): each id's
    lock is taken before its movements are read, in id order after every row lock (so batches
    cannot deadlock). A concurrent batch's movements of the same transfer are then committed
    and seen (READ COMMITTED), and the last to fold sees them all. (unnest yields the sorted ids
    in order, so the locks are taken in that order.)"""
    return ("SELECT count(pg_advisory_xact_lock(%s, hashtext(id))) FROM unnest(%s::text[]) id",
            (_TRANSFER_LOCKS, sorted(set(transfer_ids))))  # fmt: skip


def _refold_reads(transfer_ids: list[str], own: Sequence[TransactionRow]) -> list[pg.Statement]:
    """What folding ``transfer_ids`` again needs besides the batch's ``own`` movements, which
    are folded as they are, not read back: their other movements (none, for a transfer all of
    whose movements are in this batch, as a plain transfer's are), then the reversals naming
    them. A movement delivered twice is the same row read or not, so the fold is the same."""
    return [
        (f"SELECT {TRANSACTION_COLUMNS} FROM account_transactions WHERE transfer_id = ANY(%s)"
         " AND (account_id, version) NOT IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))",
         (transfer_ids, [m.account_id for m in own], [m.version for m in own])),
        ("SELECT reverses, transfer_id, moved_minor FROM transfers WHERE reverses = ANY(%s)"
         " ORDER BY transfer_id", (transfer_ids,)),
    ]  # fmt: skip


def _refold_writes(
    transfer_ids: list[str],
    own: Sequence[TransactionRow],
    found: Sequence[Sequence[Any]],
    reversing: Sequence[tuple[str, str, int]],
) -> list[pg.Statement]:
    """As the SQLite read store's: each row from all its movements (``own`` and what
    ``_refold_reads`` found) and reversals, and its index entries (its time and metadata never
    move), each table in one statement (json_rows.py)."""
    moves: dict[str, list[TransactionRow]] = {}
    wanted = set(transfer_ids)
    for move in own:
        if move.transfer_id in wanted:
            moves.setdefault(move.transfer_id, []).append(move)
    for m in found:
        moves.setdefault(m[6], []).append(transaction_from(m, _decoded))
    reversals: dict[str, list[tuple[str, int]]] = {}
    for original, reversal, moved in reversing:
        reversals.setdefault(original, []).append((reversal, moved))
    rows = refolded(transfer_ids, moves, reversals)
    by_account, by_meta = index_rows(rows)
    statements = (
        (_UPSERT_TRANSFERS, [transfer_values(row) for row in rows]),
        (_INDEX_BY_ACCOUNT, by_account),
        (_INDEX_BY_META, by_meta),
    )
    return [(statement, rows_param(values)) for statement, values in statements if values]


def _decoded(value: Any) -> Any:
    """jsonb columns come back decoded."""
    return value
