"""The Account aggregate: commands, the rules that decide them, and the fold that applies events.

Everything here is a pure function of its arguments (no I/O, no clock, no random ids), so the
rules can be tested exhaustively: ``decide(state, command) -> events`` and
``apply(state, event) -> state``. The application service does the reading and writing.

Holds and time: a pending transfer reserves its amount on the debit account (``holds``,
``pending_debits_minor``) until it is posted, voided or expires. The rules take the time as an
argument, ``now`` (RFC 3339 UTC text, which orders as time does): a hold past its timeout can no
longer be posted, and what it reserved is available again at once, before its expiry event is
written. ``now=""`` counts every hold as open.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeGuard

from eventbank.domain.errors import (
    AccountAlreadyExists,
    AccountIsClosed,
    AccountIsFrozen,
    AccountNotFound,
    AccountNotFrozen,
    BalanceLimitExceeded,
    BalanceNotZero,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    SelfTransfer,
    TooManyHolds,
    TransferExpired,
    TransferNotPending,
)
from eventbank.domain.events import (
    AccountClosed,
    AccountEvent,
    AccountFrozen,
    AccountOpened,
    AccountUnfrozen,
    FundsDeposited,
    FundsWithdrawn,
    HoldPlaced,
    HoldReleased,
    LegPosted,
    OverdraftLimitSet,
    ReversalRecorded,
    TransferredIn,
    TransferredOut,
)
from eventbank.domain.money import (
    MAX_BALANCE_MINOR,
    Money,
    exponent_of,
    format_minor,
    format_money,
)

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
MAX_OWNER_LENGTH = 200
MAX_REASON_LENGTH = 500
MAX_OPEN_HOLDS = 1_000  # pending transfers one account may have open at once (either side)
DEBIT, CREDIT = "debit", "credit"


class AccountType(StrEnum):
    CHECKING = "CHECKING"
    SAVINGS = "SAVINGS"


class AccountStatus(StrEnum):
    """OPEN; FROZEN (no debits: withdrawals, outgoing transfers and closing are refused; credits
    still arrive); CLOSED (nothing more)."""

    OPEN = "OPEN"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


def is_account_id(account_id: object) -> TypeGuard[str]:
    """Whether ``account_id`` is well formed (``check_account_id`` says why not)."""
    return isinstance(account_id, str) and _ACCOUNT_ID.fullmatch(account_id) is not None


def check_account_id(account_id: object) -> str:
    """Account ids are 1-64 characters of letters, digits and ``_ . : -``, starting alphanumeric.

    The narrow alphabet keeps ids safe as storage keys in every engine (no ``#``, no spaces).
    """
    if not is_account_id(account_id):
        raise InvalidInput(
            f"invalid account id {account_id!r}: use 1-64 letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit"
        )
    return account_id


@dataclass(frozen=True, slots=True)
class Hold:
    """One side of an open pending transfer, as the account sees it."""

    side: str  # DEBIT: reserved here; CREDIT: announced here
    counterparty_id: str
    amount_minor: int
    expires_at: str  # RFC 3339 UTC text (``clock.utc_text``), "" for none

    def overdue(self, now: str) -> bool:
        """Past its timeout at ``now`` (same text form; "" is no time: never overdue)."""
        return bool(self.expires_at) and bool(now) and now >= self.expires_at


_NO_HOLDS: Mapping[str, Hold] = MappingProxyType({})
_NONE_REVERSED: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Account:
    """An account's state as of ``version`` events. ``holds``: its open pending transfers by
    transfer id (a read model's row has only the totals, and no holds). ``reversed``: how much
    of each transfer or transaction whose first debit was this account has been reversed
    (domain/journal.py)."""

    account_id: str
    owner: str
    account_type: AccountType
    currency: str
    balance_minor: int
    status: AccountStatus
    version: int
    overdraft_limit_minor: int = 0  # the balance may go down to minus this
    pending_debits_minor: int = 0  # reserved by pending transfers from this account
    pending_credits_minor: int = 0  # announced by pending transfers to this account
    holds: Mapping[str, Hold] = field(default_factory=lambda: _NO_HOLDS)
    reversed: Mapping[str, int] = field(default_factory=lambda: _NONE_REVERSED)

    @property
    def balance(self) -> str:
        """The balance as text, ``"-12.50 USD"``: with an overdraft it can be negative, which
        Money (an amount that moves) never is."""
        return format_money(self.balance_minor, self.currency)

    @property
    def available_minor(self) -> int:
        """What a debit may take: the balance, less what pending transfers reserve, plus the
        overdraft limit."""
        return self.balance_minor - self.pending_debits_minor + self.overdraft_limit_minor

    def available_at(self, now: str) -> int:
        """``available_minor`` with the reservations of holds overdue at ``now`` given back:
        they can no longer be posted, whether or not their expiry is written yet."""
        overdue = sum(h.amount_minor for h in self.holds.values()
                      if h.side == DEBIT and h.overdue(now))  # fmt: skip
        return self.available_minor + overdue

    def describe(self) -> dict[str, object]:
        return describe_account(self)


def describe_account(a: Account | Any) -> dict[str, object]:
    """The public JSON shape of an account, from its state or its read-model row."""
    return {
        "account_id": a.account_id,
        "owner": a.owner,
        "type": str(a.account_type),
        "currency": a.currency,
        "balance": format_minor(a.balance_minor, a.currency),
        "pending_debits": format_minor(a.pending_debits_minor, a.currency),
        "pending_credits": format_minor(a.pending_credits_minor, a.currency),
        "overdraft_limit": format_minor(a.overdraft_limit_minor, a.currency),
        "available": format_minor(
            a.balance_minor - a.pending_debits_minor + a.overdraft_limit_minor, a.currency
        ),
        "version": a.version,
        "status": str(a.status),
    }


# Bump when Account's fields change meaning; snapshots of another version are ignored.
# 2: overdraft_limit_minor. 3: pending transfers (totals and holds). 4: reversed.
STATE_SCHEMA_VERSION = 4


def to_snapshot(state: Account) -> dict[str, object]:
    """The JSON state a snapshot keeps (money stays integer minor units)."""
    return {
        "account_id": state.account_id,
        "owner": state.owner,
        "account_type": str(state.account_type),
        "currency": state.currency,
        "balance_minor": state.balance_minor,
        "status": str(state.status),
        "version": state.version,
        "overdraft_limit_minor": state.overdraft_limit_minor,
        "pending_debits_minor": state.pending_debits_minor,
        "pending_credits_minor": state.pending_credits_minor,
        "holds": {
            tid: [h.side, h.counterparty_id, h.amount_minor, h.expires_at]
            for tid, h in state.holds.items()
        },  # fmt: skip
        "reversed": dict(state.reversed),
    }


def from_snapshot(data: dict[str, Any]) -> Account:
    return Account(
        account_id=data["account_id"],
        owner=data["owner"],
        account_type=AccountType(data["account_type"]),
        currency=data["currency"],
        balance_minor=data["balance_minor"],
        status=AccountStatus(data["status"]),
        version=data["version"],
        overdraft_limit_minor=data["overdraft_limit_minor"],
        pending_debits_minor=data["pending_debits_minor"],
        pending_credits_minor=data["pending_credits_minor"],
        holds=MappingProxyType({tid: Hold(*fields) for tid, fields in data["holds"].items()}),
        reversed=MappingProxyType(data["reversed"]),
    )


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class OpenAccount:
    account_id: str
    owner: str
    account_type: AccountType | str  # any spelling of a type's value; checked below
    currency: str
    initial_deposit: Money | None = None
    channel: str = "unknown"
    overdraft_limit: Money | None = None

    def __post_init__(self) -> None:
        check_account_id(self.account_id)
        owner = self.owner
        if not isinstance(owner, str) or not owner.strip():
            raise InvalidInput("owner name must not be empty")
        if len(owner) > MAX_OWNER_LENGTH or any(ord(c) < 32 for c in owner):
            raise InvalidInput(
                f"owner name must be at most {MAX_OWNER_LENGTH} printable characters"
            )
        try:
            AccountType(self.account_type)
        except ValueError:
            raise InvalidInput(
                f"account type must be CHECKING or SAVINGS, not {self.account_type!r}"
            ) from None
        exponent_of(self.currency)
        if self.initial_deposit is not None and self.initial_deposit.currency != self.currency:
            raise CurrencyMismatch(
                f"initial deposit is in {self.initial_deposit.currency}, "
                f"the account in {self.currency}"
            )
        if self.overdraft_limit is not None and self.overdraft_limit.currency != self.currency:
            raise CurrencyMismatch(
                f"overdraft limit is in {self.overdraft_limit.currency}, "
                f"the account in {self.currency}"
            )


@dataclass(frozen=True, slots=True)
class Deposit:
    account_id: str
    amount: Money
    channel: str = "unknown"
    metadata: Mapping[str, str] = field(default_factory=dict)  # domain/metadata.py


@dataclass(frozen=True, slots=True)
class Withdraw:
    account_id: str
    amount: Money
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CloseAccount:
    account_id: str


@dataclass(frozen=True, slots=True)
class SetOverdraftLimit:
    """Let the balance go down to ``-limit`` (zero: never below zero). A limit lowered below
    the current overdraft is allowed: it only blocks further debits."""

    account_id: str
    limit: Money


@dataclass(frozen=True, slots=True)
class _WithReason:
    account_id: str
    reason: str

    def __post_init__(self) -> None:
        check_reason(self.reason)


@dataclass(frozen=True, slots=True)
class FreezeAccount(_WithReason):
    """Stop every debit (a suspected fraud, a court order); ``reason`` is kept in the event."""


@dataclass(frozen=True, slots=True)
class UnfreezeAccount(_WithReason):
    """Let debits leave the account again."""


Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | CloseAccount
    | SetOverdraftLimit
    | FreezeAccount
    | UnfreezeAccount
)


def check_reason(reason: object) -> str:
    """A freeze's or unfreeze's reason: 1-500 printable characters, not only spaces."""
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidInput("a reason is required")
    if len(reason) > MAX_REASON_LENGTH or any(ord(c) < 32 for c in reason):
        raise InvalidInput(f"the reason must be at most {MAX_REASON_LENGTH} printable characters")
    return reason


# ---------------------------------------------------------------- decisions


def require_open(state: Account | None, account_id: str) -> Account:
    """The account, if it exists and is open; otherwise the matching refusal."""
    if state is None:
        raise AccountNotFound(f"account {account_id!r} does not exist")
    if state.status is AccountStatus.CLOSED:
        raise AccountIsClosed(f"account {account_id!r} is closed")
    return state


def require_debitable(state: Account | None, account_id: str) -> Account:
    """The account, if money may leave it: it exists, is open and is not frozen."""
    account = require_open(state, account_id)
    if account.status is AccountStatus.FROZEN:
        raise AccountIsFrozen(f"account {account_id!r} is frozen: it accepts no debits")
    return account


def _require_currency(state: Account, amount: Money) -> None:
    if amount.amount_minor <= 0:
        raise InvalidInput("amount must be greater than zero")
    if amount.currency != state.currency:
        raise CurrencyMismatch(
            f"account {state.account_id!r} holds {state.currency}, not {amount.currency}"
        )


def require_room(state: Account, amount: Money) -> None:
    """The credit fits under the maximum balance, with room kept for pending credits."""
    if state.balance_minor + state.pending_credits_minor + amount.amount_minor > MAX_BALANCE_MINOR:
        raise BalanceLimitExceeded(
            f"account {state.account_id!r} would exceed the maximum balance of "
            f"{format_money(MAX_BALANCE_MINOR, state.currency)}"
        )


def require_funds(state: Account, amount: Money, now: str) -> None:
    """The debit fits in what is available at ``now`` (module docstring: holds and time)."""
    available = state.available_at(now)
    if amount.amount_minor > available:
        limit, currency = state.overdraft_limit_minor, state.currency
        held = available - state.balance_minor - limit
        parts = [f"balance {state.balance}"]
        if held:
            parts.append(f"held by pending transfers {format_money(-held, currency)}")
        if limit:
            parts.append(f"overdraft limit {format_money(limit, currency)}")
        raise InsufficientFunds(
            f"insufficient funds in {state.account_id!r}: available "
            f"{format_money(available, currency)} ({', '.join(parts)}), requested {amount}"
        )


def decide(state: Account | None, command: Command, now: str = "") -> list[AccountEvent]:
    """The events that ``command`` produces against ``state`` at ``now``, or the rule it
    breaks."""
    match command:
        case OpenAccount(account_id, owner, account_type, currency, initial, channel, limit):
            if state is not None:
                raise AccountAlreadyExists(f"account {account_id!r} already exists")
            events: list[AccountEvent] = [
                AccountOpened(account_id, owner.strip(), str(AccountType(account_type)), currency)
            ]
            if limit is not None and limit.amount_minor > 0:
                events.append(OverdraftLimitSet(account_id, limit.amount_minor, currency))
            if initial is not None:
                if initial.amount_minor <= 0:
                    raise InvalidInput("initial deposit must be greater than zero")
                events.append(FundsDeposited(account_id, initial.amount_minor, currency, channel))
            return events
        case Deposit(account_id, amount, channel, metadata):
            account = require_open(state, account_id)
            _require_currency(account, amount)
            require_room(account, amount)
            return [FundsDeposited(account_id, amount.amount_minor, amount.currency, channel,
                                   dict(metadata))]  # fmt: skip
        case Withdraw(account_id, amount, metadata):
            account = require_debitable(state, account_id)
            _require_currency(account, amount)
            require_funds(account, amount, now)
            return [FundsWithdrawn(account_id, amount.amount_minor, amount.currency,
                                   dict(metadata))]  # fmt: skip
        case CloseAccount(account_id):
            account = require_debitable(state, account_id)
            if account.balance_minor != 0:
                raise BalanceNotZero(
                    f"account {account_id!r} still holds {account.balance}; "
                    "withdraw or transfer it before closing"
                )
            if account.pending_debits_minor or account.pending_credits_minor:
                raise BalanceNotZero(
                    f"account {account_id!r} has pending transfers; post or void them, or let "
                    "them expire, before closing"
                )
            return [AccountClosed(account_id)]
        case SetOverdraftLimit(account_id, limit):
            account = require_open(state, account_id)
            if limit.currency != account.currency:
                raise CurrencyMismatch(
                    f"account {account_id!r} holds {account.currency}, not {limit.currency}"
                )
            return [OverdraftLimitSet(account_id, limit.amount_minor, limit.currency)]
        case FreezeAccount(account_id, reason):
            if require_open(state, account_id).status is AccountStatus.FROZEN:
                raise AccountIsFrozen(f"account {account_id!r} is already frozen")
            return [AccountFrozen(account_id, reason.strip())]
        case UnfreezeAccount(account_id, reason):
            account = require_open(state, account_id)
            if account.status is not AccountStatus.FROZEN:
                raise AccountNotFrozen(f"account {account_id!r} is not frozen")
            return [AccountUnfrozen(account_id, reason.strip())]
    raise TypeError(f"not an account command: {command!r}")


def decide_transfer(
    source: Account | None,
    target: Account | None,
    *,
    from_id: str,
    to_id: str,
    amount: Money,
    transfer_id: str,
    now: str = "",
    metadata: Mapping[str, str] | None = None,
) -> tuple[TransferredOut, TransferredIn]:
    """The debit and credit of one transfer; both share ``transfer_id``."""
    check_transfer(source, target, from_id, to_id, amount, now)
    minor, currency, meta = amount.amount_minor, amount.currency, dict(metadata or {})
    return (
        TransferredOut(from_id, transfer_id, to_id, minor, currency, meta),
        TransferredIn(to_id, transfer_id, from_id, minor, currency, dict(meta)),
    )


def decide_pending_transfer(
    source: Account | None,
    target: Account | None,
    *,
    from_id: str,
    to_id: str,
    amount: Money,
    transfer_id: str,
    expires_at: str,
    now: str,
    metadata: Mapping[str, str] | None = None,
) -> tuple[HoldPlaced, HoldPlaced]:
    """A pending transfer: ``amount`` reserved on ``from_id`` (so it is no longer available
    there) and announced on ``to_id``, under the rules of a transfer; nothing moves until it
    is posted (``decide_post``)."""
    debit_account, credit_account = check_transfer(source, target, from_id, to_id, amount, now)
    for account in (debit_account, credit_account):
        if len(account.holds) >= MAX_OPEN_HOLDS:
            raise TooManyHolds(
                f"account {account.account_id!r} has {MAX_OPEN_HOLDS:,} pending transfers open, "
                "the most it may have; post or void some first"
            )
    minor, currency, meta = amount.amount_minor, amount.currency, dict(metadata or {})
    return (
        HoldPlaced(from_id, transfer_id, DEBIT, to_id, minor, currency, expires_at, meta),
        HoldPlaced(to_id, transfer_id, CREDIT, from_id, minor, currency, expires_at, dict(meta)),
    )


def decide_post(
    source: Account | None,
    target: Account | None,
    *,
    transfer_id: str,
    amount: Money | None,
    now: str,
) -> list[AccountEvent]:
    """Post a pending transfer: ``amount`` (all of it when None, else at most what is pending)
    moves, and the rest of the reservation is released."""
    debit, hold = _open_hold(source, transfer_id, now)
    if debit.status is AccountStatus.FROZEN:
        raise AccountIsFrozen(
            f"account {debit.account_id!r} is frozen: a pending transfer from it cannot be "
            "posted (it can be voided)"
        )
    credit = _credit_side(target, hold, transfer_id)
    if amount is None:
        amount = Money(hold.amount_minor, debit.currency)
    _require_currency(debit, amount)
    if amount.amount_minor > hold.amount_minor:
        raise InvalidAmount(
            f"cannot post {amount}: transfer {transfer_id!r} has "
            f"{format_money(hold.amount_minor, debit.currency)} pending"
        )
    minor, currency = amount.amount_minor, amount.currency
    return [
        *_released(debit, credit, transfer_id, hold, "posted"),
        TransferredOut(debit.account_id, transfer_id, credit.account_id, minor, currency),
        TransferredIn(credit.account_id, transfer_id, debit.account_id, minor, currency),
    ]


def decide_void(
    source: Account | None, target: Account | None, *, transfer_id: str, now: str
) -> list[AccountEvent]:
    """Void a pending transfer: its reservation is released, nothing moves (also from a
    frozen account)."""
    debit, hold = _open_hold(source, transfer_id, now)
    credit = _credit_side(target, hold, transfer_id)
    return _released(debit, credit, transfer_id, hold, "voided")


def decide_expiry(
    source: Account | None, target: Account | None, *, transfer_id: str, now: str
) -> list[AccountEvent]:
    """Record that a pending transfer past its timeout expired: its reservation is released."""
    debit = require_open(source, "the debit account")
    hold = debit.holds.get(transfer_id)
    if hold is None or hold.side != DEBIT:
        raise TransferNotPending(f"transfer {transfer_id!r} is not pending")
    if not hold.overdue(now):
        raise TransferNotPending(
            f"transfer {transfer_id!r} is pending until {hold.expires_at or 'posted or voided'}"
        )
    credit = _credit_side(target, hold, transfer_id)
    return _released(debit, credit, transfer_id, hold, "expired")


def check_transfer(
    source: Account | None,
    target: Account | None,
    from_id: str,
    to_id: str,
    amount: Money,
    now: str,
) -> tuple[Account, Account]:
    """The rules every transfer meets, pending or not: the debit and credit accounts."""
    if from_id == to_id:
        raise SelfTransfer("cannot transfer from an account to itself")
    debit_account = require_debitable(source, from_id)
    credit_account = require_open(target, to_id)
    if debit_account.currency != credit_account.currency:
        raise CurrencyMismatch(
            f"cannot transfer between {debit_account.currency} account {from_id!r} and "
            f"{credit_account.currency} account {to_id!r}"
        )
    _require_currency(debit_account, amount)
    require_funds(debit_account, amount, now)
    require_room(credit_account, amount)
    return debit_account, credit_account


def _open_hold(source: Account | None, transfer_id: str, now: str) -> tuple[Account, Hold]:
    """The debit account of pending transfer ``transfer_id`` and its hold, if it is pending and
    not past its timeout."""
    debit = require_open(source, "the debit account")
    hold = debit.holds.get(transfer_id)
    if hold is None or hold.side != DEBIT:
        raise TransferNotPending(
            f"transfer {transfer_id!r} is not pending (posted, voided, expired, or never pending)"
        )
    if hold.overdue(now):
        raise TransferExpired(f"pending transfer {transfer_id!r} expired at {hold.expires_at}")
    return debit, hold


def _credit_side(target: Account | None, hold: Hold, transfer_id: str) -> Account:
    """The credit account of a pending transfer: the one its debit side's hold names."""
    credit = require_open(target, hold.counterparty_id)
    if credit.account_id != hold.counterparty_id:
        raise TransferNotPending(
            f"transfer {transfer_id!r} is not pending to {credit.account_id!r}"
        )
    return credit


def _released(
    debit: Account, credit: Account, transfer_id: str, hold: Hold, outcome: str
) -> list[AccountEvent]:
    """Both sides of a pending transfer closed with ``outcome``."""
    minor, currency = hold.amount_minor, debit.currency
    return [
        HoldReleased(debit.account_id, transfer_id, DEBIT, minor, currency, outcome),
        HoldReleased(credit.account_id, transfer_id, CREDIT, minor, currency, outcome),
    ]


# ---------------------------------------------------------------- evolution


def apply(state: Account | None, event: AccountEvent) -> Account:
    """Fold one event into the state; every event raises the version by one."""
    if isinstance(event, AccountOpened):
        return Account(
            account_id=event.account_id,
            owner=event.owner,
            account_type=AccountType(event.account_type),
            currency=event.currency,
            balance_minor=0,
            status=AccountStatus.OPEN,
            version=1,
        )
    if state is None:
        raise ValueError(f"{event.event_type} before AccountOpened in {event.account_id!r}")
    delta = 0
    status, limit = state.status, state.overdraft_limit_minor
    debits, credits, holds = state.pending_debits_minor, state.pending_credits_minor, state.holds
    reversed_ = state.reversed
    if isinstance(event, FundsDeposited | TransferredIn):
        delta = event.amount_minor
    elif isinstance(event, FundsWithdrawn | TransferredOut):
        delta = -event.amount_minor
    elif isinstance(event, LegPosted):
        delta = event.amount_minor if event.direction == CREDIT else -event.amount_minor
    elif isinstance(event, ReversalRecorded):
        so_far = reversed_.get(event.original_id, 0)
        reversed_ = MappingProxyType({**reversed_, event.original_id: so_far + event.amount_minor})
    elif isinstance(event, HoldPlaced | HoldReleased):
        sign = 1 if isinstance(event, HoldPlaced) else -1
        if event.side == DEBIT:
            debits += sign * event.amount_minor
        else:
            credits += sign * event.amount_minor
        changed = dict(holds)
        if isinstance(event, HoldPlaced):
            changed[event.transfer_id] = Hold(
                event.side, event.counterparty_id, event.amount_minor, event.expires_at
            )
        else:
            changed.pop(event.transfer_id, None)  # a read model's state has no holds, only totals
        holds = MappingProxyType(changed)
    elif isinstance(event, AccountClosed):
        status = AccountStatus.CLOSED
    elif isinstance(event, AccountFrozen):
        status = AccountStatus.FROZEN
    elif isinstance(event, AccountUnfrozen):
        status = AccountStatus.OPEN
    elif isinstance(event, OverdraftLimitSet):
        limit = event.limit_minor
    return Account(state.account_id, state.owner, state.account_type, state.currency,
                   state.balance_minor + delta, status, state.version + 1, limit, debits,
                   credits, holds, reversed_)  # fmt: skip


def replay(events: Iterable[AccountEvent], state: Account | None = None) -> Account | None:
    """Fold many events, starting from ``state`` (a snapshot) or from nothing."""
    for event in events:
        state = apply(state, event)
    return state
