"""The query side: balances, statements and totals served from the read models.

Read-your-writes: a caller that passes ``min_version`` (the version a write returned) gets an
answer at least that new. The read model is polled for up to ``wait_s``; if it is still behind
(a slow or stopped projection), the answer is computed by replaying the account's events from
the event store with the same projection function — slower, never stale. An account missing
from the read model is also checked against the event store before it is called unknown.
"""

from __future__ import annotations

import time
from typing import Any

from eventbank.domain.account import check_account_id, describe_account
from eventbank.domain.errors import AccountNotFound, InvalidInput, NotFound
from eventbank.domain.money import format_minor
from eventbank.projections import accounts
from eventbank.readmodels.contract import BalanceRow, ReadStore, TransactionRow
from eventbank.store.contract import MAX_READ_LIMIT, EventStore


class TransferNotFound(NotFound):
    code = "transfer_not_found"


class AccountQueries:
    def __init__(self, reads: ReadStore, events: EventStore, *, wait_s: float = 1.0):
        self.reads, self.events, self.wait_s = reads, events, wait_s

    def balance(self, account_id: str, min_version: int = 0) -> dict[str, Any]:
        return describe_account(self._resolve(account_id, min_version)[0])

    def history(
        self, account_id: str, after_version: int = 0, limit: int = 100, min_version: int = 0
    ) -> list[dict[str, Any]]:
        """Money movements after ``after_version``, oldest first, at most ``limit``."""
        if type(limit) is not int or not 1 <= limit <= MAX_READ_LIMIT:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_READ_LIMIT}")
        _, replayed_moves = self._resolve(account_id, min_version)
        if replayed_moves is None:
            moves = self.reads.transactions(account_id, after_version, limit)
        else:
            moves = [t for t in replayed_moves if t.version > after_version][:limit]
        return [describe_transaction(t) for t in moves]

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        """One transfer, from its two projected halves."""
        halves = {t.kind: t for t in self.reads.transfer(transfer_id)}
        if set(halves) != {"transfer_out", "transfer_in"}:
            raise TransferNotFound(f"transfer {transfer_id!r} is not known (yet)")
        debit, credit = halves["transfer_out"], halves["transfer_in"]
        return {
            "transfer_id": transfer_id,
            "amount": format_minor(debit.amount_minor, debit.currency),
            "currency": debit.currency,
            "from_account_id": debit.account_id,
            "to_account_id": credit.account_id,
            "recorded_at": debit.recorded_at,
        }

    def totals(self) -> list[dict[str, Any]]:
        return [
            {"currency": t.currency, "accounts_open": t.accounts_open,
             "balance": format_minor(t.balance_minor, t.currency)}
            for t in self.reads.totals()
        ]  # fmt: skip

    def _resolve(
        self, account_id: str, min_version: int
    ) -> tuple[BalanceRow, list[TransactionRow] | None]:
        """The account's row, from the read model (moves None) or from a replay (moves given)."""
        check_account_id(account_id)
        deadline = time.monotonic() + self.wait_s
        while True:
            row = self.reads.balance(account_id)
            if row is not None and row.version >= min_version:
                return row, None
            if (row is None and min_version == 0) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        replayed, moves = self._replay(account_id)
        if replayed is None or replayed.version < min_version:
            raise AccountNotFound(
                f"account {account_id!r} does not exist"
                + (f" at version {min_version}" if replayed is not None else "")
            )
        return replayed, moves

    def _replay(self, account_id: str) -> tuple[BalanceRow | None, list[TransactionRow]]:
        """The account's row and movements computed straight from its events."""
        return accounts.replay(self.events.read_stream(account_id))


def describe_transaction(t: TransactionRow) -> dict[str, Any]:
    return {
        "version": t.version,
        "kind": t.kind,
        "amount": format_minor(t.amount_minor, t.currency),
        "currency": t.currency,
        "balance_after": format_minor(t.balance_after_minor, t.currency),
        "counterparty": t.counterparty,
        "transfer_id": t.transfer_id,
        "recorded_at": t.recorded_at,
    }
