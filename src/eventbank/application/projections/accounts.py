"""The accounts projection, as a pure function: (row, event) -> Change.

Balances are folded with the domain's own ``apply`` so the read side can never disagree with
the write side about what an event means.
"""

from __future__ import annotations

from collections.abc import Iterable
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
    kind = kind_of(domain_event)
    if kind is None:
        return Change(new_row, None)
    return Change(
        new_row,
        TransactionRow(
            account_id=state.account_id,
            version=state.version,
            kind=kind,
            amount_minor=cast(Movement, domain_event).amount_minor,  # every kind has one
            currency=state.currency,
            counterparty=getattr(domain_event, "to_account_id", None)
            or getattr(domain_event, "from_account_id", None)
            or getattr(domain_event, "counterparty_id", None),
            transfer_id=getattr(domain_event, "transfer_id", None)
            or getattr(domain_event, "transaction_id", None),
            balance_after_minor=state.balance_minor,
            recorded_at=recorded_at,
            metadata=dict(getattr(domain_event, "metadata", {})),
            description=getattr(domain_event, "description", ""),
            reverses=getattr(domain_event, "reverses", "") or None,
        ),
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
