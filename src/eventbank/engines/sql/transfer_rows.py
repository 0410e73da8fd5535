"""The transfers read model's rows as both SQL engines store them: the columns, and the
conversions between a row of values and ``TransferRow``/``TransactionRow``.

JSON columns (accounts, metadata, reversal ids) are text on SQLite and jsonb on PostgreSQL;
``decode`` is how an engine turns what it reads back into Python values (``json.loads`` for
text; PostgreSQL's driver has already decoded jsonb).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eventbank.domain.canonical import canonical_json
from eventbank.ports.read_store import TransactionRow, TransferIndex, TransferRow, summarize

TRANSACTION_COLUMNS = (
    "account_id, version, kind, amount_minor, currency, counterparty, transfer_id,"
    " balance_after_minor, recorded_at, metadata, description, reverses"
)
TRANSFER_COLUMNS = (
    "transfer_id, kind, currency, created_at, from_account, to_account, accounts, metadata,"
    " description, reverses, held_minor, moved_minor, outcome, reversed_by, reversed_minor"
)
TRANSACTION_NAMES = [c.strip() for c in TRANSACTION_COLUMNS.split(",")]
TRANSFER_NAMES = [c.strip() for c in TRANSFER_COLUMNS.split(",")]
T_COLUMNS = ", ".join(f"t.{name}" for name in TRANSFER_NAMES)  # aliased for index joins
TABLES = ("account_balances", "account_transactions", "transfers", "transfers_by_account",
          "transfers_by_meta")  # fmt: skip

Decode = Callable[[Any], Any]


def which(index: TransferIndex) -> tuple[str, tuple[str, ...]]:
    """The index a page reads ("account", "meta" or "time") and its key."""
    if index.account_id is not None:
        return "account", (index.account_id,)
    if index.meta is not None:
        return "meta", index.meta
    return "time", ()


def transfer_values(row: TransferRow) -> tuple[Any, ...]:
    """``row`` as the values of ``TRANSFER_COLUMNS`` (JSON columns as text)."""
    return (row.transfer_id, row.kind, row.currency, row.created_at, row.from_account,
            row.to_account, json.dumps(row.accounts), canonical_json(dict(row.metadata)),
            row.description, row.reverses, row.held_minor, row.moved_minor, row.outcome,
            json.dumps(row.reversed_by), row.reversed_minor)  # fmt: skip


def transfer_from(r: Sequence[Any], decode: Decode) -> TransferRow:
    return TransferRow(r[0], r[1], r[2], r[3], r[4], r[5], tuple(decode(r[6])), decode(r[7]),
                       r[8], r[9], r[10], r[11], r[12], tuple(decode(r[13])), r[14])  # fmt: skip


def to_refold(moves: Sequence[TransactionRow]) -> tuple[list[str], list[str]]:
    """The transfers whose rows movements just written change, and the originals those
    reverse, each sorted: the originals are folded after the reversals' rows are written, so
    an original counts a reversal in the same batch."""
    touched = {move.transfer_id for move in moves if move.transfer_id is not None}
    originals = {move.reverses for move in moves if move.transfer_id and move.reverses}
    return sorted(touched), sorted(originals)


def refolded(
    transfer_ids: Sequence[str],
    moves: Mapping[str, Sequence[TransactionRow]],
    reversals: Mapping[str, Sequence[tuple[str, int]]],
) -> list[TransferRow]:
    """Each transfer's row from all its movements (``moves``) and the reversals that name it
    (``reversals``: each one's transfer id and amount moved, in transfer id order). An id with
    no movements (an original not in this read model) gets no row."""
    return [summarize(moves[tid], reversals.get(tid, ())) for tid in transfer_ids if tid in moves]


def index_rows(
    rows: Sequence[TransferRow],
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str, str]]]:
    """The index entries of ``rows``: (account, created_at, transfer_id) for each account, and
    (key, value, created_at, transfer_id) for each metadata pair."""
    by_account = [(account, *row.position) for row in rows for account in row.accounts]
    by_meta = [(key, value, *row.position) for row in rows for key, value in row.metadata.items()]
    return by_account, by_meta


def transaction_from(r: Sequence[Any], decode: Decode) -> TransactionRow:
    return TransactionRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], decode(r[9]),
                          r[10], r[11])  # fmt: skip
