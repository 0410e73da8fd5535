"""The read-model port: where projections keep the query side, on any engine.

Rows carry the last applied version of their stream. ``apply`` writes a batch of ``Change``s
and (optionally) the projection's checkpoint in one transaction; a change is written only if its
row is exactly one version behind it (or absent, for version 1). Any other change is already
applied — a duplicate delivery — and is skipped, so replaying events never double counts.
Gaps never reach a read store: the projector fills them from the event stream first.

Bounded reads: ``accounts_page(after, limit)`` lists balance rows in account-id order (code point
order on every engine) from a cursor, one indexed range read of at most ``limit`` rows, whatever
the store's size; ``all_balances`` reads every row and is for audits only. ``totals`` sums are
exact at any size (Python ints; no engine's 64-bit sum may overflow or round).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from eventbank.domain.errors import EventbankError, InvalidInput

MAX_ACCOUNTS_PAGE = 1_000  # rows one accounts_page call may return


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
        self, projection: str, changes: Sequence[Change], checkpoint: int | None = None
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
