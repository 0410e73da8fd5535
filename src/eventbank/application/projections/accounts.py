"""The accounts projection, as a pure function: (row, event) -> Change.

Balances are folded with the domain's own ``apply`` so the read side can never disagree with
the write side about what an event means.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from eventbank.domain import account as domain
from eventbank.domain.events import (
    ACCOUNT,
    AccountEvent,
    FundsDeposited,
    FundsWithdrawn,
    HoldPlaced,
    HoldReleased,
    LegPosted,
    Movement,
    TransferredIn,
    TransferredOut,
    event_from_data,
)
from eventbank.ports.event_store import RecordedEvent
from eventbank.ports.read_store import BalanceRow, Change, TransactionRow

NAME = "accounts"

_KINDS = {
    FundsDeposited: "deposit",
    FundsWithdrawn: "withdrawal",
    TransferredOut: "transfer_out",
    TransferredIn: "transfer_in",
}


def handles(event: RecordedEvent) -> bool:
    return event.aggregate_type == ACCOUNT


def project(row: BalanceRow | None, event: RecordedEvent) -> Change:
    """The account row after ``event`` (which must be the row's next version)."""
    if (row.version if row else 0) + 1 != event.version:
        raise ValueError(
            f"{event.aggregate_id} v{event.version} applied to row at v{row.version if row else 0}"
        )
    domain_event = event_from_data(event.event_type, dict(event.data), event.schema_version)
    state = domain.apply(_state_of(row), domain_event)
    recorded_at = str(event.metadata.get("recorded_at", ""))
    new_row = BalanceRow(
        account_id=state.account_id,
        owner=state.owner,
        account_type=str(state.account_type),
        currency=state.currency,
        balance_minor=state.balance_minor,
        status=str(state.status),
        version=state.version,
        updated_at=recorded_at,
        overdraft_limit_minor=state.overdraft_limit_minor,
        pending_debits_minor=state.pending_debits_minor,
        pending_credits_minor=state.pending_credits_minor,
    )
    moved = movement_of(domain_event)
    if moved is None:
        return Change(new_row, None)
    return Change(
        new_row,
        TransactionRow(
            account_id=state.account_id,
            version=state.version,
            kind=moved.kind,
            amount_minor=moved.amount_minor,
            currency=state.currency,
            counterparty=moved.counterparty,
            transfer_id=moved.transfer_id,
            balance_after_minor=state.balance_minor,
            recorded_at=recorded_at,
            metadata=moved.metadata,
            description=moved.description,
            reverses=moved.reverses,
        ),
    )


@dataclass(frozen=True, slots=True)
class Moved:
    """What a money-movement event says on its own, without the account's state (so without
    the balance after it): the part of a ``TransactionRow`` one event decides. The projection
    builds its rows from it, and the recent-activity feed (``recent_activity.py``) its items."""

    kind: str
    amount_minor: int
    currency: str
    counterparty: str | None
    transfer_id: str | None  # the transfer's or the transaction's id
    metadata: dict[str, str]
    description: str
    reverses: str | None


def movement_of(event: AccountEvent) -> Moved | None:
    """The movement ``event`` records (``kind_of``), None for an event that moves no money."""
    kind = kind_of(event)
    if kind is None:
        return None
    moving = cast(Movement, event)  # every kind has an amount and a currency
    return Moved(
        kind=kind,
        amount_minor=moving.amount_minor,
        currency=moving.currency,
        counterparty=getattr(event, "to_account_id", None)
        or getattr(event, "from_account_id", None)
        or getattr(event, "counterparty_id", None),
        transfer_id=getattr(event, "transfer_id", None) or getattr(event, "transaction_id", None),
        metadata=dict(getattr(event, "metadata", {})),
        description=getattr(event, "description", ""),
        reverses=getattr(event, "reverses", "") or None,
    )


def kind_of(event: AccountEvent) -> str | None:
    """The movement ``event`` records, if any: a pending transfer's side is one too (its
    amount held or released, the balance unchanged), named by side ("out" is the debit)."""
    if isinstance(event, HoldPlaced | HoldReleased):
        direction = "out" if event.side == domain.DEBIT else "in"
        return f"{'hold' if isinstance(event, HoldPlaced) else event.outcome}_{direction}"
    if isinstance(event, LegPosted):
        return f"transaction_{event.direction}"  # transaction_debit | transaction_credit
    return _KINDS.get(type(event))


def replay(events: Iterable[RecordedEvent]) -> tuple[BalanceRow | None, list[TransactionRow]]:
    """The row and movements a stream's events produce, computed from scratch."""
    row: BalanceRow | None = None
    moves = []
    for event in events:
        change = project(row, event)
        row = change.row
        if change.transaction is not None:
            moves.append(change.transaction)
    return row, moves


def _state_of(row: BalanceRow | None) -> domain.Account | None:
    if row is None:
        return None
    return domain.Account(
        account_id=row.account_id,
        owner=row.owner,
        account_type=domain.AccountType(row.account_type),
        currency=row.currency,
        balance_minor=row.balance_minor,
        status=domain.AccountStatus(row.status),
        version=row.version,
        overdraft_limit_minor=row.overdraft_limit_minor,
        pending_debits_minor=row.pending_debits_minor,
        pending_credits_minor=row.pending_credits_minor,
    )
