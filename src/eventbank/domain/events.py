"""The account's domain events: facts, named in the past tense, never changed once written.

Each event is a frozen dataclass whose fields are the JSON ``data`` of its envelope (money
as integer minor units plus currency). ``event_type`` is the class name; ``SCHEMA_VERSION``
is the version written today.

Schema evolution: stored events are never rewritten. Reading an older version runs the chain
of upcasters ``(type, v) -> v+1`` up to today's version; a version newer than this code knows
is refused (``UnknownSchemaVersion``) rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
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
        """The fields as a dict (all are str or int: no deep copy needed, unlike ``asdict``)."""
        return {name: getattr(self, name) for name in _field_names(type(self))}


@dataclass(frozen=True, slots=True)
class AccountOpened(AccountEvent):
    owner: str
    account_type: str
    currency: str


@dataclass(frozen=True, slots=True)
class FundsDeposited(AccountEvent):
    """v2 added ``channel`` (how the money arrived: cli, api, …); v1 events read as "unknown"."""

    SCHEMA_VERSION: ClassVar[int] = 2

    amount_minor: int
    currency: str
    channel: str


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


@dataclass(frozen=True, slots=True)
class OverdraftLimitSet(AccountEvent):
    """From here the balance may go down to ``-limit_minor`` (0: never below zero)."""

    limit_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class AccountFrozen(AccountEvent):
    """From here the account refuses every debit; credits still arrive."""

    reason: str


@dataclass(frozen=True, slots=True)
class AccountUnfrozen(AccountEvent):
    reason: str


@dataclass(frozen=True, slots=True)
class HoldPlaced(AccountEvent):
    """One side of a pending transfer: on the account to debit (``side`` "debit") the amount is
    reserved; on the account to credit ("credit") it is announced. Nothing is posted. The other
    side, on ``counterparty_id``'s stream, carries the same ``transfer_id``. ``expires_at``:
    RFC 3339 UTC (``clock.utc_text``), or "" for no timeout."""

    transfer_id: str
    side: str  # "debit" | "credit"
    counterparty_id: str
    amount_minor: int
    currency: str
    expires_at: str


@dataclass(frozen=True, slots=True)
class HoldReleased(AccountEvent):
    """A pending transfer's side is closed: ``outcome`` "posted" (the amount that moved is in
    the TransferredOut/TransferredIn that follow it), "voided" or "expired". ``amount_minor`` is
    the whole amount the hold had."""

    transfer_id: str
    side: str
    amount_minor: int
    currency: str
    outcome: str  # "posted" | "voided" | "expired"


Movement = FundsDeposited | FundsWithdrawn | TransferredOut | TransferredIn
"""The events that move money: each carries ``amount_minor`` and ``currency``."""


def _field_names(cls: type[AccountEvent]) -> tuple[str, ...]:
    """The dataclass fields of ``cls``, looked up once per event type."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in fields(cls))
    return names


_FIELD_NAMES: dict[type[AccountEvent], tuple[str, ...]] = {}


EVENT_TYPES: dict[str, type[AccountEvent]] = {
    cls.__name__: cls
    for cls in (
        AccountOpened, FundsDeposited, FundsWithdrawn, TransferredOut, TransferredIn,
        AccountClosed, AccountFrozen, AccountUnfrozen, OverdraftLimitSet, HoldPlaced,
        HoldReleased,
    )
}  # fmt: skip


class UnknownSchemaVersion(InvalidInput):
    code = "unknown_schema_version"


# (event type, version it reads) -> function producing the next version's data
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("FundsDeposited", 1): lambda data: {**data, "channel": "unknown"},
}


def event_from_data(event_type: str, data: dict[str, Any], schema_version: int) -> AccountEvent:
    """Rebuild a domain event from its stored type, JSON data and schema version (upcast)."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidInput(f"unknown account event type {event_type!r}")
    if schema_version > cls.SCHEMA_VERSION:
        raise UnknownSchemaVersion(
            f"{event_type} v{schema_version} is newer than this eventbank understands "
            f"(v{cls.SCHEMA_VERSION}); upgrade eventbank before reading this store"
        )
    for version in range(schema_version, cls.SCHEMA_VERSION):
        data = UPCASTERS[(event_type, version)](data)
    try:
        return cls(**data)
    except TypeError as exc:
        raise InvalidInput(f"malformed {event_type} data: {exc}") from None
