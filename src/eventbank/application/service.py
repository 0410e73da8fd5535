"""The application service: the ledger's commands (accounts, transfers, pending transfers,
journal transactions, reversals), each a decision of the pure domain handed to the one write
path (write_path.py: read, decide, append with the command record, retry), and batches of
transfers (transfer_batches.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from eventbank.application.ids import new_id
from eventbank.application.transfer_batches import TransferBatches, transfer_parts
from eventbank.application.write_path import (
    COMMAND_ID,
    CommandObserver,
    Decision,
    Describe,
    Receipt,
    amount_of,
    metadata_of,
)
from eventbank.domain import account as domain
from eventbank.domain import journal
from eventbank.domain.account import Account
from eventbank.domain.deadlines import check_timeout, deadline, utc_text
from eventbank.domain.errors import (
    AccountNotFound,
    Conflict,
    EventbankError,
    InvalidInput,
    RuleViolation,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
)
from eventbank.domain.events import (
    AccountEvent,
    HoldPlaced,
    HoldReleased,
    LegPosted,
    ReversalRecorded,
)
from eventbank.domain.journal import Original
from eventbank.domain.metadata import check_metadata
from eventbank.domain.money import Money, format_minor, parse_amount
from eventbank.ports.event_store import EventStore, RecordedEvent

log = logging.getLogger(__name__)
# Newest events of the debit account searched for how a pending transfer ended, before asking
# the read model (a post or void refused as no longer pending says "expired" when it was).
ENDED_LOOKBACK = 200


class LedgerService(TransferBatches):
    def __init__(
        self,
        store: EventStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_attempts: int = 12,
        backoff_base_s: float = 0.002,
        backoff_cap_s: float = 0.25,
        after_append: Callable[[list[RecordedEvent]], None] | None = None,
        observer: CommandObserver | None = None,
        channel: str = "unknown",
        snapshot_every: int = 100,
        cache_size: int = 10_000,
        locate_transfer: Callable[[str], tuple[str, str] | None] | None = None,
        transfer_outcome: Callable[[str], str | None] | None = None,
        find_original: Callable[[str], Original | None] | None = None,
    ):
        """The write path's options are write_path.py's. ``channel`` (cli, api, …) is recorded
        on deposits: how the money arrived.
        ``locate_transfer``: a transfer's (debit, credit) account ids, None if unknown (a read
        model's look-up, wiring.py); posting, voiding or expiring a pending transfer by its id
        needs it, and the debit account's own state then decides (a stale answer is refused).
        ``transfer_outcome``: how a pending transfer ended ("posted", "voided", "expired"), as
        projected, so that a post after its expiry is refused as ``transfer_expired``.
        ``find_original``: the legs of a transfer or transaction by its id, None if unknown
        (wiring.py); reversing needs it, and the legs are facts, so a read model's answer is
        safe (the total already reversed comes from the event store, domain/journal.py)."""
        super().__init__(
            store, clock=clock, max_attempts=max_attempts, backoff_base_s=backoff_base_s,
            backoff_cap_s=backoff_cap_s, after_append=after_append, observer=observer,
            snapshot_every=snapshot_every, cache_size=cache_size,
        )  # fmt: skip
        self.channel = channel
        self.locate_transfer = locate_transfer
        self.transfer_outcome = transfer_outcome
        self.find_original = find_original

    # ------------------------------------------------------------ reads

    def take_snapshot(self, account_id: str) -> Account:
        """Save the account's current state as a snapshot (also done every ``snapshot_every``)."""
        account, head = self._load(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id!r} does not exist")
        self._save_snapshot(account, head)
        return account

    def get_account(self, account_id: str) -> Account:
        account = self.load_account(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id!r} does not exist")
        return account

    def events(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        return self.store.read_all(after_position, limit)

    # ------------------------------------------------------------ writes

    def open_account(
        self,
        account_id: str,
        *,
        owner: str,
        account_type: str,
        currency: str = "USD",
        initial_deposit: str | None = None,
        overdraft_limit: str | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        initial = None if initial_deposit is None else parse_amount(initial_deposit, currency)
        limit = None
        if overdraft_limit is not None:
            limit = parse_amount(overdraft_limit, currency, allow_zero=True)
        kind = account_type.upper() if isinstance(account_type, str) else account_type
        command = domain.OpenAccount(
            account_id, owner, kind, currency, initial, self.channel, overdraft_limit=limit
        )
        request = {"command": "open", "account_id": account_id, "owner": owner,
                   "type": str(command.account_type), "currency": currency,
                   "initial_deposit": initial_deposit}  # fmt: skip
        if overdraft_limit is not None:  # absent, the fingerprint stays what it always was
            request["overdraft_limit"] = overdraft_limit
        return self._handle(
            command_id, request, [account_id],
            lambda s: domain.decide(s[account_id], command),
            lambda after, _: {"kind": "open", "account": after[account_id].describe()},
            expire_overdue=False,  # a new account has nothing pending
        )  # fmt: skip

    def deposit(
        self,
        account_id: str,
        amount: str,
        *,
        metadata: Mapping[str, str] | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        return self._single(
            account_id, amount, command_id, "deposit", metadata,
            lambda aid, money, meta: domain.Deposit(aid, money, self.channel, meta),
        )  # fmt: skip

    def withdraw(
        self,
        account_id: str,
        amount: str,
        *,
        metadata: Mapping[str, str] | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        return self._single(account_id, amount, command_id, "withdraw", metadata, domain.Withdraw)

    def close_account(self, account_id: str, *, command_id: str | None = None) -> Receipt:
        domain.check_account_id(account_id)
        return self._handle(
            command_id, {"command": "close", "account_id": account_id}, [account_id],
            lambda s: domain.decide(s[account_id], domain.CloseAccount(account_id)),
            lambda after, _: {"kind": "close", "account": after[account_id].describe()},
        )  # fmt: skip

    def set_overdraft_limit(
        self, account_id: str, limit: str, *, command_id: str | None = None
    ) -> Receipt:
        """Let ``account_id``'s balance go down to ``-limit`` ("0": never below zero). Lowering
        it below the current overdraft is allowed and blocks further debits."""
        domain.check_account_id(account_id)

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            account = domain.require_open(states[account_id], account_id)
            money = parse_amount(limit, account.currency, allow_zero=True)
            return domain.decide(account, domain.SetOverdraftLimit(account_id, money))

        return self._handle(
            command_id, {"command": "limit", "account_id": account_id, "limit": limit},
            [account_id], decide,
            lambda after, _: {"kind": "limit", "account": after[account_id].describe()},
        )  # fmt: skip

    def freeze_account(
        self, account_id: str, reason: str, *, command_id: str | None = None
    ) -> Receipt:
        """Refuse every debit from ``account_id`` until it is unfrozen; credits still land."""
        return self._set_frozen(account_id, reason, command_id, freeze=True)

    def unfreeze_account(
        self, account_id: str, reason: str, *, command_id: str | None = None
    ) -> Receipt:
        return self._set_frozen(account_id, reason, command_id, freeze=False)

    def _set_frozen(
        self, account_id: str, reason: str, command_id: str | None, *, freeze: bool
    ) -> Receipt:
        domain.check_account_id(account_id)
        kind = "freeze" if freeze else "unfreeze"
        make = domain.FreezeAccount if freeze else domain.UnfreezeAccount
        command = make(account_id, reason)  # checks the reason before anything is read
        return self._handle(
            command_id, {"command": kind, "account_id": account_id, "reason": reason},
            [account_id], lambda s: domain.decide(s[account_id], command),
            lambda after, _: {"kind": kind, "account": after[account_id].describe()},
        )  # fmt: skip

    def transfer(
        self,
        from_id: str,
        to_id: str,
        amount: str,
        *,
        pending: bool = False,
        timeout_s: int | None = None,
        metadata: Mapping[str, str] | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        """Debit ``from_id`` and credit ``to_id`` in one atomic append across both streams.

        With ``pending``, nothing moves yet: the amount is reserved on ``from_id`` (no longer
        available there) and announced on ``to_id`` until ``post_transfer`` moves it (all or
        part), ``void_transfer`` releases it, or ``timeout_s`` seconds (1 to 30 days; default
        none) pass and it expires."""
        if not pending:
            if timeout_s is not None:
                raise InvalidInput("a timeout is for a pending transfer only")
            parts = transfer_parts(from_id, to_id, amount, self.clock_text, metadata)
            return self._handle(command_id, *parts)
        timeout = None if timeout_s is None else check_timeout(timeout_s)
        meta = check_metadata(metadata)
        request, streams, _, _ = transfer_parts(from_id, to_id, amount, self.clock_text, meta)
        request = {**request, "pending": True, "timeout_s": timeout}
        transfer_id = new_id()

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            source = domain.require_open(states[from_id], from_id)
            money, moment = parse_amount(amount, source.currency), self.clock()
            return list(domain.decide_pending_transfer(
                states[from_id], states.get(to_id), from_id=from_id, to_id=to_id, amount=money,
                transfer_id=transfer_id, expires_at=deadline(moment, timeout),
                now=utc_text(moment), metadata=meta,
            ))  # fmt: skip

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            placed = cast(HoldPlaced, events[0])
            return {"kind": "transfer", "transfer_id": transfer_id, "status": "pending",
                    **amount_of(placed), "expires_at": placed.expires_at or None,
                    **metadata_of(meta),
                    "from": after[from_id].describe(), "to": after[to_id].describe()}  # fmt: skip

        return self._handle(command_id, request, streams, decide, outcome)

    def post_transfer(
        self, transfer_id: str, amount: str | None = None, *, command_id: str | None = None
    ) -> Receipt:
        """Move a pending transfer's money: ``amount`` (at most what is pending; all of it when
        None), releasing the rest of the reservation. Refused once it is posted, voided or past
        its timeout (``transfer_not_pending``, ``transfer_expired``)."""
        return self._close_pending("post", transfer_id, amount, command_id)

    def void_transfer(self, transfer_id: str, *, command_id: str | None = None) -> Receipt:
        """Release a pending transfer's reservation; nothing moves."""
        return self._close_pending("void", transfer_id, None, command_id)

    def expire_transfer(
        self, transfer_id: str, *, located: tuple[str, str] | None = None
    ) -> Receipt:
        """Record the expiry of a pending transfer past its timeout (releasing it). Its key is
        the transfer's own, so two expirers racing write it once and both get its outcome.
        ``located``: its (debit, credit) accounts, when the caller knows them."""
        return self._close_pending("expire", transfer_id, None, f"expire-{transfer_id}", located)

    def post_transaction(
        self,
        legs: Sequence[tuple[str, str, str]],
        *,
        currency: str,
        description: str = "",
        metadata: Mapping[str, str] | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        """One balanced multi-leg entry: ``legs`` are (account id, "debit" or "credit",
        amount), debits equal to credits, 2 to ``journal.MAX_LEGS`` of them, each account once;
        written in one atomic append over every account's stream (domain/journal.py)."""
        meta, text = check_metadata(metadata), journal.check_description(description)
        parsed = _parse_legs(legs, currency)
        journal.check_legs(parsed, currency)
        streams = [leg.account_id for leg in parsed]
        request = {"command": "transaction", "currency": currency,
                   "legs": [[leg[0], leg[1], leg[2]] for leg in legs],
                   "description": text, **metadata_of(meta)}  # fmt: skip
        transaction_id = new_id()

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            return journal.decide_transaction(
                states, transaction_id=transaction_id, currency=currency, legs=parsed,
                description=text, metadata=meta, now=self.clock_text(),
            )  # fmt: skip

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            return _transaction_outcome(transaction_id, currency, text, meta, after, events)

        return self._handle(command_id, request, streams, decide, outcome)

    def reverse(
        self,
        original_id: str,
        amount: str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        command_id: str | None = None,
    ) -> Receipt:
        """Move money back against a transfer or transaction: ``amount`` of it (all that is
        left when None), never more in total than it moved; linked both ways (the reversal's
        ``reverses``, the original's ``reversed_by``)."""
        if not isinstance(original_id, str) or not COMMAND_ID.fullmatch(original_id):
            raise InvalidInput("a transfer id is 1-255 printable ASCII characters, no spaces")
        meta = check_metadata(metadata)
        original = self.find_original(original_id) if self.find_original else None
        if original is None:
            raise TransferNotFound(f"transfer or transaction {original_id!r} is not known")
        money = None if amount is None else parse_amount(amount, original.currency)
        request = {"command": "reverse", "original_id": original_id, "amount": amount,
                   **metadata_of(meta)}  # fmt: skip
        reversal_id = new_id()

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            return journal.decide_reversal(states, original, money, reversal_id=reversal_id,
                                           metadata=meta, now=self.clock_text())  # fmt: skip

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            recorded = cast(ReversalRecorded, events[-1])
            view = {
                "reverses": original_id,
                "reversed_total": format_minor(
                    after[recorded.account_id].reversed[original_id], original.currency
                ),
            }
            if original.kind == "transfer":
                return {"kind": "transfer", "transfer_id": reversal_id, **amount_of(events[0]),
                        **metadata_of(meta), **view, "from": after[events[0].account_id]
                        .describe(), "to": after[events[1].account_id].describe()}  # fmt: skip
            legs = events[:-1]
            text = cast(LegPosted, legs[0]).description
            return {**_transaction_outcome(reversal_id, original.currency, text, meta, after,
                                           legs), **view}  # fmt: skip

        streams = [leg.account_id for leg in original.legs]
        return self._handle(command_id, request, streams, decide, outcome)

    def expire_overdue(self, stream_ids: Sequence[str]) -> int:
        """Record the expiry of each pending transfer on these streams past its timeout (as
        cached or loaded now); one another expirer wrote meanwhile is left to it. Says how many
        this call expired or found expired."""
        now, expired = "", 0  # the clock is read once a state has holds: most have none
        ids = [sid for sid in stream_ids if domain.is_account_id(sid)]  # else the command says so
        try:
            known = self._known(ids)[0]
        except EventbankError:
            return 0  # the store failed: the command meets it too, and says so
        for sid, (state, _) in known.items():
            if not state or not state.holds:
                continue
            now = now or self.clock_text()
            overdue = [(tid, hold) for tid, hold in state.holds.items() if hold.overdue(now)]
            for tid, hold in overdue:
                pair = (sid, hold.counterparty_id)
                try:
                    self.expire_transfer(tid, located=pair if hold.side == domain.DEBIT
                                         else pair[::-1])  # fmt: skip
                    expired += 1
                except (RuleViolation, Conflict) as exc:
                    log.info("expiry of pending transfer %s left to another: %s", tid, exc)
        return expired

    def _close_pending(
        self,
        kind: str,
        transfer_id: str,
        amount: str | None,
        command_id: str | None,
        located: tuple[str, str] | None = None,
    ) -> Receipt:
        if not isinstance(transfer_id, str) or not COMMAND_ID.fullmatch(transfer_id):
            raise InvalidInput("a transfer id is 1-255 printable ASCII characters, no spaces")
        if located is None and self.locate_transfer is not None:
            located = self.locate_transfer(transfer_id)
        if located is None:
            raise TransferNotFound(f"transfer {transfer_id!r} is not known")
        from_id, to_id = located
        request = {"command": kind, "transfer_id": transfer_id}
        if amount is not None:
            request["amount"] = amount

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            source, target, now = states[from_id], states[to_id], self.clock_text()
            if kind == "post":
                money = None
                if amount is not None:
                    money = parse_amount(amount, domain.require_open(source, from_id).currency)
                return domain.decide_post(source, target, transfer_id=transfer_id,
                                          amount=money, now=now)  # fmt: skip
            rule = domain.decide_void if kind == "void" else domain.decide_expiry
            return rule(source, target, transfer_id=transfer_id, now=now)

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            released = cast(HoldReleased, events[0])
            moved = events[2] if kind == "post" else released
            return {"kind": kind, "transfer_id": transfer_id, "status": released.outcome,
                    **amount_of(moved),
                    "pending_amount": format_minor(released.amount_minor, released.currency),
                    "from": after[from_id].describe(), "to": after[to_id].describe()}  # fmt: skip

        try:
            # not expiring first: a post or void past the timeout is refused as expired
            return self._handle(command_id, request, [from_id, to_id], decide, outcome,
                                expire_overdue=False)  # fmt: skip
        except TransferNotPending:
            if kind != "expire" and self._ended_as(transfer_id, from_id) == "expired":
                raise TransferExpired(f"pending transfer {transfer_id!r} expired") from None
            raise

    def _ended_as(self, transfer_id: str, debit_id: str) -> str | None:
        """How a pending transfer ended: from the debit account's newest events (the truth,
        at once), else as projected (None: not known to have ended)."""
        recent = self.store.read_stream(debit_id, limit=ENDED_LOOKBACK, backwards=True)
        for event in recent:
            if event.event_type == "HoldReleased" and event.data.get("transfer_id") == transfer_id:
                return str(event.data["outcome"])
        return self.transfer_outcome(transfer_id) if self.transfer_outcome else None

    def _single(
        self,
        account_id: str,
        amount: str,
        command_id: str | None,
        kind: str,
        metadata: Mapping[str, str] | None,
        make: Callable[[str, Money, Mapping[str, str]], domain.Deposit | domain.Withdraw],
    ) -> Receipt:
        domain.check_account_id(account_id)
        meta = check_metadata(metadata)

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            account = domain.require_open(states[account_id], account_id)
            command = make(account_id, parse_amount(amount, account.currency), meta)
            return domain.decide(account, command, self.clock_text())

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            return {"kind": kind, **amount_of(events[0]), **metadata_of(meta),
                    "account": after[account_id].describe()}  # fmt: skip

        request = {"command": kind, "account_id": account_id, "amount": amount,
                   **metadata_of(meta)}  # fmt: skip
        return self._handle(command_id, request, [account_id], decide, outcome)

    # ------------------------------------------------------------ the one write path

    def _handle(
        self,
        command_id: str | None,
        request: Mapping[str, Any],
        stream_ids: Sequence[str],
        decide: Decision,
        describe: Describe,
        *,
        expire_overdue: bool = True,
    ) -> Receipt:
        """Run one command (the module docstring's steps). First, with ``expire_overdue``, the
        expiry of every pending transfer on its streams that is past its timeout is recorded
        (``expire_transfer``): the next command that touches an account writes it, if the
        server's worker has not yet."""
        started, outcome_label = time.perf_counter(), "error"
        try:
            with self._cache.checking_once():
                if expire_overdue:
                    self.expire_overdue(stream_ids)
                receipt = self._attempt(command_id, request, stream_ids, decide, describe)
            outcome_label = "replayed" if receipt.replayed else "ok"
            return receipt
        except RuleViolation:
            outcome_label = "refused"
            raise
        except Conflict:
            outcome_label = "conflict"
            raise
        finally:
            if self.observer is not None:
                elapsed_s = time.perf_counter() - started
                self.observer.command_finished(request["command"], outcome_label, elapsed_s)


def _parse_legs(legs: Sequence[tuple[str, str, str]], currency: str) -> list[journal.Leg]:
    """(account id, direction, amount text) triples as legs, each checked on its own."""
    if isinstance(legs, str | bytes) or not isinstance(legs, Sequence):
        raise InvalidInput("legs must be a list of (account, direction, amount)")
    parsed = []
    for n, leg in enumerate(legs, 1):
        if not isinstance(leg, Sequence) or isinstance(leg, str) or len(leg) != 3:
            raise InvalidInput(f"leg {n} must be (account, direction, amount)")
        account_id, direction, amount = leg
        domain.check_account_id(account_id)
        try:
            minor = parse_amount(amount, currency).amount_minor
        except InvalidInput as exc:
            raise type(exc)(f"leg {n}: {exc}") from None
        parsed.append(journal.Leg(account_id, direction, minor))
    return parsed


def _transaction_outcome(
    transaction_id: str,
    currency: str,
    description: str,
    metadata: Mapping[str, str],
    after: Mapping[str, Account],
    legs: Sequence[AccountEvent],
) -> dict[str, Any]:
    posted = cast("Sequence[LegPosted]", legs)
    debits = sum(leg.amount_minor for leg in posted if leg.direction == domain.DEBIT)
    return {"kind": "transaction", "transaction_id": transaction_id,
            "amount": format_minor(debits, currency), "currency": currency,
            "description": description, **metadata_of(metadata),
            "legs": [{"account_id": leg.account_id, "direction": leg.direction,
                      "amount": format_minor(leg.amount_minor, currency),
                      "account": after[leg.account_id].describe()} for leg in posted]}  # fmt: skip
