"""The account's domain events: facts, named in the past tense, never changed once written.

Each event is a frozen dataclass whose fields are the JSON ``data`` of its envelope (money
as integer minor units plus currency). ``event_type`` is the class name; ``SCHEMA_VERSION``
is the version written today (upcasting of older versions happens on read, in a later layer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from eventbank.domain.errors import InvalidInput

ACCOUNT = "Account"  # aggregate_type of account streams


@dataclass(frozen=True, slots=True)
class AccountEvent:
    SCHEMA_VERSION: ClassVar[int] = 1

    account_id: str

    @property
    def event_type(self) -> str:
        return type(self).__name__

    def to_data(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AccountOpened(AccountEvent):
    owner: str
    account_type: str
    currency: str


@dataclass(frozen=True, slots=True)
class FundsDeposited(AccountEvent):
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class FundsWithdrawn(AccountEvent):
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class TransferredOut(AccountEvent):
    """The debit half of a transfer; its credit half carries the same ``transfer_id``."""

    transfer_id: str
    to_account_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class TransferredIn(AccountEvent):
    """The credit half of a transfer."""

    transfer_id: str
    from_account_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class AccountClosed(AccountEvent):
    pass


EVENT_TYPES: dict[str, type[AccountEvent]] = {
    cls.__name__: cls
    for cls in (
        AccountOpened, FundsDeposited, FundsWithdrawn, TransferredOut, TransferredIn, AccountClosed
    )
}  # fmt: skip


def event_from_data(event_type: str, data: dict[str, Any]) -> AccountEvent:
    """Rebuild a domain event from its stored type name and JSON data."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidInput(f"unknown account event type {event_type!r}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise InvalidInput(f"malformed {event_type} data: {exc}") from None
