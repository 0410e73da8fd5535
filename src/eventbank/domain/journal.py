"""Journal entries: multi-leg transactions and reversals, as pure rules.

A transaction is one balanced entry over several accounts (a fee split, a marketplace payout):
each leg debits (takes from) or credits (adds to) one account, its debits equal its credits, and
it is written in one atomic append over every stream involved, so it lands whole or not at all.

A reversal moves money back against a transfer or a transaction (the *original*), in full or in
part. The original's legs are facts the caller looks up (``Original``); the total reversed so
far is kept in the state of the original's first debited account (``Account.reversed``, summed
from ``ReversalRecorded``), which every reversal of it appends to: two racing reversals meet at
that stream's version check, so together they can never pass the original. A partial reversal
of a transaction is split over its legs in proportion, and must split exactly (no rounding, so
no leg is ever reversed by more than it moved).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventbank.domain.account import (
    CREDIT,
    DEBIT,
    Account,
    check_transfer,
    require_debitable,
    require_funds,
    require_open,
    require_room,
)
from eventbank.domain.errors import (
    CurrencyMismatch,
    InvalidAmount,
    InvalidInput,
    RuleViolation,
)
from eventbank.domain.events import (
    AccountEvent,
    LegPosted,
    ReversalRecorded,
    TransferredIn,
    TransferredOut,
)
from eventbank.domain.money import Money, format_money

MIN_LEGS = 2
# DynamoDB writes an append as one TransactWriteItems of at most 100 items: a leg costs 3 (its
# stream's version check, the event, its id guard), a command record 1, and a reversal's
# ReversalRecorded 2 more: 3 * 32 + 1 + 2 = 99.
MAX_LEGS = 32
MAX_DESCRIPTION_LENGTH = 500


class TooFewLegs(InvalidInput):
    code = "too_few_legs"


class TooManyLegs(InvalidInput):
    code = "too_many_legs"


class DuplicateLeg(InvalidInput):
    code = "duplicate_leg"


class UnbalancedTransaction(InvalidInput):
    code = "unbalanced_transaction"


class NotReversible(RuleViolation):
    """A transfer that moved nothing (pending, voided or expired) has nothing to reverse."""

    code = "not_reversible"


class ReversalExceedsOriginal(RuleViolation):
    code = "reversal_exceeds_original"


@dataclass(frozen=True, slots=True)
class Leg:
    """One leg of a transaction: ``direction`` DEBIT takes ``amount_minor`` from the account,
    CREDIT adds it."""

    account_id: str
    direction: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class Original:
    """What a reversal reverses: a transfer (two legs, ``kind`` "transfer") or a transaction,
    with the legs it moved."""

    original_id: str
    kind: str  # "transfer" | "transaction"
    currency: str
    legs: tuple[Leg, ...]

    @property
    def total_minor(self) -> int:
        return sum(leg.amount_minor for leg in self.legs if leg.direction == DEBIT)


def check_description(description: object) -> str:
    """A transaction's description: at most 500 printable characters ("" is none)."""
    if not isinstance(description, str):
        raise InvalidInput("description must be a string")
    if len(description) > MAX_DESCRIPTION_LENGTH or any(ord(c) < 32 for c in description):
        raise InvalidInput(
            f"description must be at most {MAX_DESCRIPTION_LENGTH} printable characters"
        )
    return description


def check_legs(legs: Sequence[Leg], currency: str) -> None:
    """The shape every transaction has, before any account is read: 2 to ``MAX_LEGS`` legs,
    each account once, each a debit or a credit of a positive amount, debits equal to credits."""
    if len(legs) < MIN_LEGS:
        raise TooFewLegs(f"a transaction needs at least {MIN_LEGS} legs, got {len(legs)}")
    if len(legs) > MAX_LEGS:
        raise TooManyLegs(
            f"a transaction has at most {MAX_LEGS} legs (what one atomic write holds on every "
            f"engine), got {len(legs)}"
        )
    seen: set[str] = set()
    for leg in legs:
        if leg.account_id in seen:
            raise DuplicateLeg(f"account {leg.account_id!r} has more than one leg")
        seen.add(leg.account_id)
        if leg.direction not in (DEBIT, CREDIT):
            raise InvalidInput(f"a leg's direction is 'debit' or 'credit', not {leg.direction!r}")
        if leg.amount_minor <= 0:
            raise InvalidAmount("every leg's amount must be greater than zero")
    debits, credits = _side_total(legs, DEBIT), _side_total(legs, CREDIT)
    if debits != credits:
        raise UnbalancedTransaction(
            f"debits ({format_money(debits, currency)}) must equal credits "
            f"({format_money(credits, currency)})"
        )


def decide_transaction(
    states: Mapping[str, Account | None],
    *,
    transaction_id: str,
    currency: str,
    legs: Sequence[Leg],
    description: str,
    metadata: Mapping[str, str],
    now: str,
    reverses: str = "",
) -> list[AccountEvent]:
    """One ``LegPosted`` per leg, if every account can take its leg: all open and in
    ``currency``; each debited one not frozen and with the amount available at ``now``; each
    credited one with room under the maximum balance."""
    check_legs(legs, currency)
    events: list[AccountEvent] = []
    for leg in legs:
        account = require_open(states.get(leg.account_id), leg.account_id)
        if account.currency != currency:
            raise CurrencyMismatch(
                f"account {leg.account_id!r} holds {account.currency}, the transaction is in "
                f"{currency}"
            )
        amount = Money(leg.amount_minor, currency)
        if leg.direction == DEBIT:
            require_funds(require_debitable(account, leg.account_id), amount, now)
        else:
            require_room(account, amount)
        events.append(LegPosted(leg.account_id, transaction_id, leg.direction, leg.amount_minor,
                                currency, description, dict(metadata), reverses))  # fmt: skip
    return events


def decide_reversal(
    states: Mapping[str, Account | None],
    original: Original,
    amount: Money | None,
    *,
    reversal_id: str,
    metadata: Mapping[str, str],
    now: str,
) -> list[AccountEvent]:
    """Move ``amount`` of ``original`` back (all that is left when None): each leg reversed in
    proportion, as a transfer for a transfer, as a transaction for a transaction; and
    ``ReversalRecorded`` on the account that keeps the count."""
    keeper_id = next(leg.account_id for leg in original.legs if leg.direction == DEBIT)
    keeper = require_open(states.get(keeper_id), keeper_id)
    total = original.total_minor
    left = total - keeper.reversed.get(original.original_id, 0)
    if left <= 0:
        raise ReversalExceedsOriginal(f"{original.original_id!r} is already reversed in full")
    minor = left if amount is None else amount.amount_minor
    if amount is not None and amount.currency != original.currency:
        raise CurrencyMismatch(f"{original.original_id!r} is in {original.currency}")
    if minor <= 0:
        raise InvalidAmount("amount must be greater than zero")
    if minor > left:
        raise ReversalExceedsOriginal(
            f"cannot reverse {format_money(minor, original.currency)} of {original.original_id!r}"
            f": {format_money(left, original.currency)} of "
            f"{format_money(total, original.currency)} is left to reverse"
        )
    recorded = ReversalRecorded(keeper_id, original.original_id, reversal_id, minor,
                                original.currency)  # fmt: skip
    if original.kind == "transfer":
        debit, credit = (original.legs[0], original.legs[1])
        if debit.direction != DEBIT:
            debit, credit = credit, debit
        back_from, back_to = credit.account_id, debit.account_id
        check_transfer(states.get(back_from), states.get(back_to), back_from, back_to,
                       Money(minor, original.currency), now)  # fmt: skip
        tid, cur, meta, of = reversal_id, original.currency, dict(metadata), original.original_id
        return [TransferredOut(back_from, tid, back_to, minor, cur, meta, of),
                TransferredIn(back_to, tid, back_from, minor, cur, meta, of), recorded]  # fmt: skip
    flipped = [Leg(leg.account_id, CREDIT if leg.direction == DEBIT else DEBIT,
                   _share(leg.amount_minor, minor, total, original.original_id))
               for leg in original.legs]  # fmt: skip
    legs = decide_transaction(
        states, transaction_id=reversal_id, currency=original.currency, legs=flipped,
        description=f"reversal of {original.original_id}", metadata=metadata, now=now,
        reverses=original.original_id,
    )  # fmt: skip
    return [*legs, recorded]


def _share(leg_minor: int, minor: int, total: int, original_id: str) -> int:
    """A leg's exact part of reversing ``minor`` of ``total`` (module docstring)."""
    share, rest = divmod(leg_minor * minor, total)
    if rest:
        raise InvalidAmount(
            f"{original_id!r} cannot be reversed by that amount: it does not split exactly over "
            "its legs in proportion; reverse it in full, or by an amount each leg divides into"
        )
    return share


def _side_total(legs: Sequence[Leg], direction: str) -> int:
    return sum(leg.amount_minor for leg in legs if leg.direction == direction)
