"""The read-model port: where projections keep the query side, on any engine.

Rows carry the last applied version of their stream. ``apply`` writes a batch of ``Change``s
and (optionally) the projection's checkpoint in one transaction; a change is written only if its
row is exactly one version behind it (or absent, for version 1). Any other change is already
applied — a duplicate delivery — and is skipped, so replaying events never double counts.
Gaps never reach a read store: the projector fills them from the event stream first. The
checkpoint only moves forward; with ``only_from`` it moves only if it stands there (a batch that
continues the feed, projected inline: the check is in the same transaction, so a concurrent
writer of the checkpoint cannot slip between the look and the move), and stays otherwise.

Bounded reads: ``accounts_page(after, limit)`` lists balance rows in account-id order (code point
order on every engine) from a cursor, one indexed range read of at most ``limit`` rows, whatever
the store's size; ``all_balances`` reads every row and is for audits only. ``totals`` sums are
exact at any size (Python ints; no engine's 64-bit sum may overflow or round).

Transfers: ``transfers_page`` reads one index of the transfers read model (by account, by one
metadata pair, or by time alone) in ``(created_at, transfer_id)`` order from a position, one
indexed range read of at most ``limit`` rows: searches filter what it returns
(application/transfer_search.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import EventbankError, InvalidInput

MAX_ACCOUNTS_PAGE = 1_000  # rows one accounts_page call may return
MAX_TRANSFERS_PAGE = 1_000  # rows one transfers_page call may return
END_OF_TIME = "~"  # sorts after every created_at ("2026-…"): no upper bound


@dataclass(frozen=True, slots=True)
class BalanceRow:
    """``account_balances``: one row per account, as of ``version``."""

    account_id: str
    owner: str
    account_type: str
    currency: str
    balance_minor: int
    status: str
    version: int
    updated_at: str
    overdraft_limit_minor: int = 0
    pending_debits_minor: int = 0
    pending_credits_minor: int = 0


@dataclass(frozen=True, slots=True)
class TransactionRow:
    """``account_transactions``: one row per money movement."""

    account_id: str
    version: int
    # deposit | withdrawal | transfer_out | transfer_in, and for a pending transfer's sides
    # (amount: the whole pending amount; the balance does not change) hold_out | hold_in when
    # it is made, then posted_out | posted_in, voided_* or expired_* when it is closed;
    # transaction_debit | transaction_credit for a leg of a multi-leg transaction
    kind: str
    amount_minor: int
    currency: str
    counterparty: str | None
    transfer_id: str | None  # the transfer's or the transaction's id
    balance_after_minor: int
    recorded_at: str
    # the event's: the caller's metadata, a transaction's description, and the id of the
    # transfer or transaction this one reverses (rows written before these existed have none)
    metadata: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    reverses: str | None = None


@dataclass(frozen=True, slots=True)
class TransferRow:
    """``transfers``: one row per transfer or multi-leg transaction, folded from its movements
    (``summarize``) and the reversals that name it. ``created_at`` is its first movement's
    time as fixed-width UTC text (``2026-12-05T09:00:00.000000Z``), so texts order as times."""

    transfer_id: str
    kind: str  # transfer | transaction
    currency: str
    created_at: str
    from_account: str | None  # a transfer's; None for a transaction
    to_account: str | None
    accounts: tuple[str, ...]  # every account it touches, sorted
    metadata: Mapping[str, str]
    description: str
    reverses: str | None
    held_minor: int  # a pending transfer's reserved amount (0: never pending)
    moved_minor: int  # what moved: a transfer's amount, a transaction's debits
    outcome: str  # how a pending transfer ended: posted | voided | expired ("": open or never)
    reversed_by: tuple[str, ...] = ()  # ids of the reversals of it, sorted
    reversed_minor: int = 0  # how much of it they moved back

    @property
    def status(self) -> str:
        """posted, or for a pending transfer pending until it is posted, voided or expired."""
        return self.outcome or ("pending" if self.held_minor else "posted")

    @property
    def position(self) -> tuple[str, str]:
        """Where it sits in every transfers index."""
        return self.created_at, self.transfer_id


@dataclass(frozen=True, slots=True)
class TransferIndex:
    """Which index ``transfers_page`` reads: an account's, one metadata pair's, or (neither)
    the time index of every transfer."""

    account_id: str | None = None
    meta: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """The new state of one account row after one event, and the movement it records (if any)."""

    row: BalanceRow
    transaction: TransactionRow | None


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    """The ``totals`` view: per currency, open accounts and the sum of all balances."""

    currency: str
    accounts_open: int
    balance_minor: int


@dataclass(frozen=True, slots=True)
class Failure:
    """A stream whose projection is parked at ``version`` because its handler failed."""

    projection: str
    aggregate_id: str
    version: int
    error: str
    attempts: int
    first_failed_at: str
    next_attempt_at: str


class ReadStoreError(EventbankError):
    code = "read_store_error"


class ReadStore(Protocol):
    def apply(
        self,
        projection: str,
        changes: Sequence[Change],
        checkpoint: int | None = None,
        *,
        only_from: int | None = None,
    ) -> None: ...

    def checkpoint(self, projection: str) -> int: ...

    def balance(self, account_id: str) -> BalanceRow | None: ...

    def balances(self, account_ids: Sequence[str]) -> dict[str, BalanceRow]: ...

    def all_balances(self) -> list[BalanceRow]: ...

    def accounts_page(self, after: str = "", limit: int = 100) -> list[BalanceRow]:
        """Rows with ``account_id > after`` ("" = from the first), in id order, at most
        ``limit`` (1 to MAX_ACCOUNTS_PAGE): one indexed read, never a scan of the store."""
        ...

    def transactions(
        self, account_id: str, after_version: int = 0, limit: int = 100
    ) -> list[TransactionRow]: ...

    def transfer(self, transfer_id: str) -> list[TransactionRow]: ...

    def transfer_rows(self, transfer_ids: Sequence[str]) -> dict[str, TransferRow]: ...

    def transfers_page(
        self, index: TransferIndex, after: tuple[str, str], before: str, limit: int
    ) -> list[TransferRow]:
        """Rows of ``index`` with ``(created_at, transfer_id) > after`` and ``created_at <
        before`` (``END_OF_TIME``: no bound), in that order, at most ``limit`` (1 to
        MAX_TRANSFERS_PAGE): one indexed range read, never a scan of the store."""
        ...

    def totals(self) -> list[CurrencyTotal]: ...

    def save_failure(self, failure: Failure) -> None: ...

    def clear_failure(self, projection: str, aggregate_id: str) -> None: ...

    def failures(self, projection: str) -> list[Failure]: ...

    def reset(self, projection: str) -> None: ...

    def close(self) -> None: ...


def check_accounts_page(after: str, limit: int) -> None:
    """Refuse a malformed ``accounts_page`` before any engine touches storage."""
    if type(after) is not str:
        raise InvalidInput('after must be an account id (a string; "" = from the first)')
    if type(limit) is not int or not 1 <= limit <= MAX_ACCOUNTS_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_ACCOUNTS_PAGE}")


_OPENING = ("hold_out", "hold_in", "transfer_out", "transfer_in", "transaction_debit",
            "transaction_credit")  # fmt: skip
_OUTCOMES = ("posted", "voided", "expired")


def summarize(
    moves: Sequence[TransactionRow], reversals: Sequence[tuple[str, int]] = ()
) -> TransferRow:
    """The transfers row of one id from all its movements (in any order) and the reversals
    that name it (each one's transfer id and amount moved, in transfer id order).

    The earliest movements open it (a pending transfer's later ones, its post, void or expiry,
    carry no metadata): they give its time, metadata, description and what it reverses."""
    first = min(moves, key=lambda m: (utc_position(m.recorded_at), m.kind not in _OPENING))
    kinds = {m.kind for m in moves}
    debit = next((m for m in moves if m.kind in ("hold_out", "transfer_out")), None)
    credit = next((m for m in moves if m.kind in ("hold_in", "transfer_in")), None)
    ends: tuple[str | None, str | None] = (None, None)  # a transaction has no from and to
    if debit is not None:
        ends = debit.account_id, debit.counterparty
    elif credit is not None:
        ends = credit.counterparty, credit.account_id
    transaction = any(m.kind.startswith("transaction_") for m in moves)
    return TransferRow(
        transfer_id=str(first.transfer_id),
        kind="transaction" if transaction else "transfer",
        currency=first.currency,
        created_at=utc_position(first.recorded_at),
        from_account=None if transaction else ends[0],
        to_account=None if transaction else ends[1],
        accounts=tuple(sorted({m.account_id for m in moves})),
        metadata=dict(first.metadata),
        description=first.description,
        reverses=first.reverses,
        held_minor=next((m.amount_minor for m in moves if m.kind in ("hold_out", "hold_in")), 0),
        # both sides sum to the same once all are projected; until then, what is known
        moved_minor=max(_total(moves, _DEBITS), _total(moves, _CREDITS)),
        outcome=next((o for o in _OUTCOMES if f"{o}_out" in kinds or f"{o}_in" in kinds), ""),
        reversed_by=tuple(reversal for reversal, _ in reversals),
        reversed_minor=sum(moved for _, moved in reversals),
    )


_DEBITS = ("transfer_out", "transaction_debit")
_CREDITS = ("transfer_in", "transaction_credit")


def _total(moves: Sequence[TransactionRow], kinds: tuple[str, ...]) -> int:
    return sum(m.amount_minor for m in moves if m.kind in kinds)


@functools.lru_cache(maxsize=4096)
def utc_position(recorded_at: str) -> str:
    """An event's ``recorded_at`` (RFC 3339) as fixed-width UTC text, which orders as time.
    (Cached: the movements of one command share one time.)"""
    moment = datetime.fromisoformat(recorded_at.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_text(moment)


def check_transfers_page(
    index: TransferIndex, after: tuple[str, str], before: str, limit: int
) -> None:
    """Refuse a malformed ``transfers_page`` before any engine touches storage."""
    if index.account_id is not None and index.meta is not None:
        raise InvalidInput("a transfers page reads one index: an account's or a metadata pair's")
    if not (isinstance(after, tuple) and len(after) == 2 and all(type(a) is str for a in after)):
        raise InvalidInput("after must be a (created_at, transfer_id) pair of strings")
    if type(before) is not str:
        raise InvalidInput("before must be a string")
    if type(limit) is not int or not 1 <= limit <= MAX_TRANSFERS_PAGE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_TRANSFERS_PAGE}")
