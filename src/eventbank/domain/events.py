"""The account's domain events: facts, named in the past tense, never changed once written.

Each event is a frozen dataclass whose fields are the JSON ``data`` of its envelope (money
as integer minor units plus currency). ``event_type`` is the class name; ``SCHEMA_VERSION``
is the version written today.

Schema evolution: stored events are never rewritten. Reading an older version runs the chain
of upcasters ``(type, v) -> v+1`` up to today's version; a version newer than this code knows
is refused (``UnknownSchemaVersion``) rather than misread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
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
        """The fields as a dict (str, int, or a flat str -> str metadata mapping, copied: no
        deep copy needed, unlike ``asdict``)."""
        data = {name: getattr(self, name) for name in _field_names(type(self))}
        if "metadata" in data:
            data["metadata"] = dict(data["metadata"])
        return data


@dataclass(frozen=True, slots=True)
class AccountOpened(AccountEvent):
    owner: str
    account_type: str
    currency: str


def _no_metadata() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class FundsDeposited(AccountEvent):
    """v2 added ``channel`` (how the money arrived: cli, api, …); v1 events read as "unknown".
    v3 added ``metadata`` (the caller's string keys and values, domain/metadata.py)."""

    SCHEMA_VERSION: ClassVar[int] = 3

    amount_minor: int
    currency: str
    channel: str
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)


@dataclass(frozen=True, slots=True)
class FundsWithdrawn(AccountEvent):
    """v2 added ``metadata``."""

    SCHEMA_VERSION: ClassVar[int] = 2

    amount_minor: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)


@dataclass(frozen=True, slots=True)
class TransferredOut(AccountEvent):
    """The debit half of a transfer; its credit half carries the same ``transfer_id``. v2 added
    ``metadata`` and ``reverses`` (the transfer or transaction this one reverses, or "")."""

    SCHEMA_VERSION: ClassVar[int] = 2

    transfer_id: str
    to_account_id: str
    amount_minor: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)
    reverses: str = ""


@dataclass(frozen=True, slots=True)
class TransferredIn(AccountEvent):
    """The credit half of a transfer (v2: as TransferredOut)."""

    SCHEMA_VERSION: ClassVar[int] = 2

    transfer_id: str
    from_account_id: str
    amount_minor: int
    currency: str
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)
    reverses: str = ""


@dataclass(frozen=True, slots=True)
class LegPosted(AccountEvent):
    """One account's leg of a multi-leg transaction (domain/journal.py): ``direction`` "debit"
    takes ``amount_minor`` from the account, "credit" adds it. The transaction's other legs, on
    their own accounts' streams, carry the same ``transaction_id``; its debits equal its
    credits. ``reverses``: the transfer or transaction this one reverses, or ""."""

    transaction_id: str
    direction: str  # "debit" | "credit"
    amount_minor: int
    currency: str
    description: str
    metadata: Mapping[str, str]
    reverses: str = ""


@dataclass(frozen=True, slots=True)
class ReversalRecorded(AccountEvent):
    """On the stream that keeps count of an original's reversals (its first debited account),
    beside the reversal's own movements: ``amount_minor`` more of ``original_id`` is reversed
    by ``reversal_id``. The account's state sums these, so the total reversed can never pass
    the original."""

    original_id: str
    reversal_id: str
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

    SCHEMA_VERSION: ClassVar[int] = 2  # v2 added ``metadata``

    transfer_id: str
    side: str  # "debit" | "credit"
    counterparty_id: str
    amount_minor: int
    currency: str
    expires_at: str
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)


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


Movement = FundsDeposited | FundsWithdrawn | TransferredOut | TransferredIn | LegPosted
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
        HoldReleased, LegPosted, ReversalRecorded,
    )
}  # fmt: skip


class UnknownSchemaVersion(InvalidInput):
    code = "unknown_schema_version"


def _with_metadata(data: dict[str, Any]) -> dict[str, Any]:
    """Events written before money commands carried metadata had none."""
    return {**data, "metadata": {}}


# (event type, version it reads) -> function producing the next version's data
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("FundsDeposited", 1): lambda data: {**data, "channel": "unknown"},
    **{(name, version): _with_metadata for name, version in (
        ("FundsDeposited", 2), ("FundsWithdrawn", 1), ("TransferredOut", 1),
        ("TransferredIn", 1), ("HoldPlaced", 1),
    )},
}  # fmt: skip


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
