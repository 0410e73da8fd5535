"""The application service: handles commands by reading, deciding and appending.

Every write follows one path (``_handle``), holding this process's lock on each stream involved
from step 1 until the append of step 3 is queued (stream_locks.py: its own commands take turns,
never race; with a group-committing engine the next one decides on the queued append's result
and joins its batch, see ``_decide_and_submit``):

1. Take the state of the streams involved from the account cache (account_cache.py), or read
   and fold them (snapshot + later events).
2. Let the pure domain decide the events. A refusal decided on cached state is decided again on
   the store's current state before it counts.
3. Append them with the expected versions (and head hashes) *and* the command record in one
   atomic write.
4. If the command id was recorded before (the append raises ``DuplicateCommand``, or a refused
   command's key may have been used before), answer with its first outcome (same parameters)
   or refuse (``IdempotencyKeyReused``); nothing is written. The check inside the atomic write
   is the guarantee, so no look-up is spent before deciding on the common, first run.
5. On ``ConcurrencyConflict`` (another process wrote first: the streams are dropped from the
   cache) or ``StoreUnavailable`` (the write did not happen, or its fate is unknown) go back to
   1 after a jittered backoff, at most ``max_attempts`` times; a store still unavailable
   ``UNAVAILABLE_RETRY_S`` after the command began is reported as down instead. Step 4 makes
   the retry safe: a write that did land is found and replayed, never repeated.

Outcomes of refused commands (insufficient funds, …) are not recorded: nothing happened, so a
retry with the same key is evaluated afresh.

A batch of transfers (``transfer_batch``, batch.py) takes the same path for each item, with its
own key: without ``atomic`` it queues every item's append before waiting for any, so group
commit writes the batch in a few transactions (``_batch_each``); with ``atomic`` all items are
decided in turn and written in one append that carries each item's command record
(``_batch_atomic``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
import queue
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from eventbank.application.account_cache import AccountCache, decoded
from eventbank.application.batch import (
    MAX_BATCH_ITEMS,
    MISSING_KEY,
    BatchAborted,
    BatchItem,
    ItemResult,
)
from eventbank.application.ids import new_id
from eventbank.application.stream_locks import StreamLocks
from eventbank.backoff import full_jitter
from eventbank.domain import account as domain
from eventbank.domain import journal
from eventbank.domain.account import Account
from eventbank.domain.canonical import fingerprint
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
    ACCOUNT,
    AccountEvent,
    HoldPlaced,
    HoldReleased,
    LegPosted,
    Movement,
    ReversalRecorded,
)
from eventbank.domain.journal import Original
from eventbank.domain.metadata import check_metadata
from eventbank.domain.money import Money, format_minor, parse_amount
from eventbank.ports.event_store import (
    GENESIS_HASH,
    BatchTooLarge,
    CommandRecord,
    ConcurrencyConflict,
    DuplicateCommand,
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreUnavailable,
    chained,
    queues_appends,
)

log = logging.getLogger(__name__)
_COMMAND_ID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces, as Stripe's keys
# A store still unavailable this long after a command began is down, not blipping: say so (503)
# instead of retrying on top of the engine's own waits (a pool or lock timeout per attempt).
UNAVAILABLE_RETRY_S = 2.0
# Items of a batch written at a time on an engine with no group commit (DynamoDB), each one
# append of its own; fewer than the engine's connection pool (32 on DynamoDB).
PARALLEL_ITEMS = 8
# Newest events of the debit account searched for how a pending transfer ended, before asking
# the read model (a post or void refused as no longer pending says "expired" when it was).
ENDED_LOOKBACK = 200


class IdempotencyKeyReused(Conflict):
    code = "idempotency_key_reused"


class RetriesExhausted(Conflict):
    code = "concurrency_conflict"


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a write command did. ``replayed`` is true when it was answered from its first run."""

    command_id: str
    outcome: Mapping[str, Any]
    replayed: bool = False


# Who is acting, recorded in every event's metadata; interfaces set it per request.
current_actor: ContextVar[str] = ContextVar("current_actor", default="local")


class CommandObserver(Protocol):
    def command_finished(self, command: str, outcome: str, seconds: float) -> None: ...

    def command_retried(self, command: str, reason: str) -> None: ...


Decision = Callable[[Mapping[str, Account | None]], list[AccountEvent]]
Describe = Callable[[Mapping[str, Account], list[AccountEvent]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class _Command:
    """A command on the write path: its id, its parameters' fingerprint, the streams it
    involves, the rules that decide it and describe its outcome, and who asked for it (None:
    ``current_actor``)."""

    command_id: str
    fingerprint: str
    stream_ids: Sequence[str]
    decide: Decision
    describe: Describe
    actor: str | None = None


class _AwaitQueued(Exception):
    """A batch item that would not be built on the appends its batch queued on its streams (the
    state it found is not theirs: one failed, or the cache dropped it), and so could pass
    them: the batch decides it again once they are answered (``_batch_each``)."""


class _RefusedOnQueued(Exception):
    """A batch item refused on the state that appends its batch queued on ``streams`` leave.
    Those states are not stale (the store checks each head hash as it writes them), so the
    refusal counts if they are written; if one is not, the item is decided again."""

    def __init__(self, error: EventbankError, streams: Sequence[str]):
        super().__init__(str(error))
        self.error, self.streams = error, streams


class LedgerService:
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
        """``after_append`` sees each command's recorded events once they are durable (e.g. to
        project them inline); it must not raise. ``observer`` is told of outcomes and retries.
        ``channel`` (cli, api, …) is recorded on deposits: how the money arrived.
        ``cache_size`` bounds how many accounts' states are kept between commands (0: none).
        ``locate_transfer``: a transfer's (debit, credit) account ids, None if unknown (a read
        model's look-up, wiring.py); posting, voiding or expiring a pending transfer by its id
        needs it, and the debit account's own state then decides (a stale answer is refused).
        ``transfer_outcome``: how a pending transfer ended ("posted", "voided", "expired"), as
        projected, so that a post after its expiry is refused as ``transfer_expired``.
        ``find_original``: the legs of a transfer or transaction by its id, None if unknown
        (wiring.py); reversing needs it, and the legs are facts, so a read model's answer is
        safe (the total already reversed comes from the event store, domain/journal.py)."""
        self.channel = channel
        if snapshot_every < 1:
            raise InvalidInput("snapshot_every must be at least 1")
        self.snapshot_every = snapshot_every
        self.store = store
        self.after_append = after_append
        self.observer = observer
        self.clock = clock
        self.locate_transfer = locate_transfer
        self.transfer_outcome = transfer_outcome
        self.find_original = find_original
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._cache = AccountCache(cache_size)
        self._stream_locks = StreamLocks()
        self._submit_append = store.submit_append if queues_appends(store) else None

    # ------------------------------------------------------------ reads

    def load_account(self, account_id: str) -> Account | None:
        return self._load(account_id)[0]

    def _load(self, account_id: str) -> tuple[Account | None, str]:
        """The account folded from its newest usable snapshot plus the events after it, and the
        hash at the head of its chain (the next event chains from it); remembered in the cache.

        A snapshot of another state schema version is ignored (replayed from events instead),
        so a snapshot can never be misread after Account changes shape.
        """
        domain.check_account_id(account_id)
        snapshot = self.store.load_snapshot(account_id)
        state, head = None, GENESIS_HASH
        if snapshot is not None and snapshot.state_schema_version == domain.STATE_SCHEMA_VERSION:
            state = domain.from_snapshot(dict(snapshot.state["account"]))
            head = snapshot.state["head_hash"]
        events = self.store.read_stream(account_id, state.version if state else 0)
        if events:
            head = events[-1].hash
        folded = domain.replay(map(decoded, events), state)
        if folded is not None:
            self._cache.put(folded, head)
        return folded, head

    def _known(
        self, stream_ids: Sequence[str]
    ) -> tuple[dict[str, tuple[Account | None, str]], list[str]]:
        """Each stream's state and chain head, from the cache where it has them (they may be
        stale: the append's version check decides; caught up first while other writers are
        about, account_cache.py), else loaded; and which came from the cache."""
        self._cache.catch_up(self.store, stream_ids)
        entries = {sid: entry for sid in stream_ids if (entry := self._cache.get(sid))}
        known = {sid: entries.get(sid) or self._load(sid) for sid in stream_ids}
        return known, list(entries)

    def take_snapshot(self, account_id: str) -> Account:
        """Save the account's current state as a snapshot (also done every ``snapshot_every``)."""
        account, head = self._load(account_id)
        if account is None:
            raise AccountNotFound(f"account {account_id!r} does not exist")
        self._save_snapshot(account, head)
        return account

    def _save_snapshot(self, account: Account, head_hash: str) -> None:
        state = {"account": domain.to_snapshot(account), "head_hash": head_hash}
        self.store.save_snapshot(Snapshot(
            account.account_id, ACCOUNT, account.version, domain.STATE_SCHEMA_VERSION, state
        ))  # fmt: skip

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
            parts = _transfer_parts(from_id, to_id, amount, self.clock_text, metadata)
            return self._handle(command_id, *parts)
        timeout = None if timeout_s is None else check_timeout(timeout_s)
        meta = check_metadata(metadata)
        request, streams, _, _ = _transfer_parts(from_id, to_id, amount, self.clock_text, meta)
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
                    **_amount_of(placed), "expires_at": placed.expires_at or None,
                    **_metadata_of(meta),
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
                   "description": text, **_metadata_of(meta)}  # fmt: skip
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
        if not isinstance(original_id, str) or not _COMMAND_ID.fullmatch(original_id):
            raise InvalidInput("a transfer id is 1-255 printable ASCII characters, no spaces")
        meta = check_metadata(metadata)
        original = self.find_original(original_id) if self.find_original else None
        if original is None:
            raise TransferNotFound(f"transfer or transaction {original_id!r} is not known")
        money = None if amount is None else parse_amount(amount, original.currency)
        request = {"command": "reverse", "original_id": original_id, "amount": amount,
                   **_metadata_of(meta)}  # fmt: skip
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
                return {"kind": "transfer", "transfer_id": reversal_id, **_amount_of(events[0]),
                        **_metadata_of(meta), **view, "from": after[events[0].account_id]
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
        if not isinstance(transfer_id, str) or not _COMMAND_ID.fullmatch(transfer_id):
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
                    **_amount_of(moved),
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

    def clock_text(self) -> str:
        """The time the rules are given (domain/deadlines.py)."""
        return utc_text(self.clock())

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
            return {"kind": kind, **_amount_of(events[0]), **_metadata_of(meta),
                    "account": after[account_id].describe()}  # fmt: skip

        request = {"command": kind, "account_id": account_id, "amount": amount,
                   **_metadata_of(meta)}  # fmt: skip
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

    def _attempt(
        self,
        command_id: str | None,
        request: Mapping[str, Any],
        stream_ids: Sequence[str],
        decide: Decision,
        describe: Describe,
    ) -> Receipt:
        supplied = bool(command_id)
        command_id = check_command_id(command_id) if command_id else new_id()
        request_fingerprint = fingerprint(request)
        command = _Command(command_id, request_fingerprint, stream_ids, decide, describe)
        last_error: Exception | None = None
        unavailable_deadline = time.monotonic() + UNAVAILABLE_RETRY_S
        for attempt in range(self.max_attempts):
            if attempt:
                if self.observer is not None:
                    self.observer.command_retried(request["command"], type(last_error).__name__)
                self._backoff(attempt)
            try:
                with self._stream_locks.hold(stream_ids):
                    settle = self._decide_and_submit([command])
                return settle()[0]
            except ConcurrencyConflict as exc:
                self._cache.found_stale(exc.aggregate_ids)
                last_error = exc
            except StoreUnavailable as exc:
                if time.monotonic() > unavailable_deadline:
                    raise
                last_error = exc
            except (DuplicateCommand, RuleViolation, InvalidInput) as exc:
                # A fresh random id on its first attempt cannot have run before; any other may.
                ran_before = supplied or attempt > 0 or isinstance(exc, DuplicateCommand)
                first_run = self._first_run(command_id, request_fingerprint) if ran_before else None
                if first_run is not None:
                    return first_run
                if not isinstance(exc, DuplicateCommand):
                    raise
                last_error = exc
        if isinstance(last_error, StoreUnavailable):
            raise last_error  # not a conflict: the store failed, and a retry is safe
        raise RetriesExhausted(
            f"gave up after {self.max_attempts} attempts ({last_error}); "
            "nothing was written, try again"
        )

    def _first_run(self, command_id: str, request_fingerprint: str) -> Receipt | None:
        """The first outcome of ``command_id`` if it was recorded; refused if for another
        request."""
        first_run = self.store.find_command(command_id)
        if first_run is None:
            return None
        if first_run.fingerprint != request_fingerprint:
            raise IdempotencyKeyReused(
                f"idempotency key {command_id!r} was used for a different request"
            )
        return Receipt(command_id, first_run.outcome, replayed=True)

    def _decide_and_submit(
        self,
        commands: Sequence[_Command],
        *,
        collect: list[RecordedEvent] | None = None,
        queued: dict[str, str] | None = None,
    ) -> Callable[[], list[Receipt]]:
        """Steps 1-3 until the append is queued; the returned call waits for it and finishes.

        ``commands`` are decided in turn, each on the states the ones before it leave, and
        written in one atomic append, each with its own command record: one command, or an
        atomic batch. A refusal of any refuses them all (the error raised is that command's).

        Where the engine queues appends (group commit), the states this command leaves are
        cached as soon as its append is queued, and the caller releases the stream locks before
        waiting: the next command on these streams decides on them and joins the same batch
        instead of waiting a commit. Its append names the head hashes it built on, so the store
        refuses it unless this one was written (contract.QueuesAppends); a failed append
        drops its streams from the cache.

        ``collect``: the recorded events are added to it instead of being handed to
        ``after_append`` (a batch hands over all of its items' at once). ``queued`` (a batch's
        items queued and not yet waited for): the head hash each stream's last such append
        leaves. The command must be built on those (else ``_AwaitQueued``); a refusal on them
        is ``_RefusedOnQueued``, for the batch to count once they are written; the heads its
        own append leaves are recorded in it.
        """
        stream_ids = list(dict.fromkeys(sid for c in commands for sid in c.stream_ids))
        known, cached = self._known(stream_ids)
        waits_on = [sid for sid in stream_ids if sid in queued] if queued else []
        if queued and any(known[sid][1] != queued[sid] for sid in waits_on):
            raise _AwaitQueued  # not built on this batch's own appends: it could pass them
        try:
            decided = self._decide_in_turn(commands, known)
        except (RuleViolation, InvalidInput) as exc:
            # A refusal must hold on the store's current state: read again what was cached,
            # but for states appends still queued will leave (the store checks those).
            stale = [sid for sid in cached if sid not in waits_on]
            if not stale and waits_on:
                raise _RefusedOnQueued(exc, waits_on) from exc
            if not stale:
                raise
            self._cache.forget(stale)
            known.update((sid, self._load(sid)) for sid in stale)
            try:
                decided = self._decide_in_turn(commands, known)
            except (RuleViolation, InvalidInput) as again:
                if waits_on:
                    raise _RefusedOnQueued(again, waits_on) from again
                raise
        states = {sid: state for sid, (state, _) in known.items()}
        after, new_envelopes, outcomes = decided
        heads = {sid: head for sid, (_, head) in known.items()}
        new_events = chained(new_envelopes, heads)
        expected = {sid: (state.version if state else 0) for sid, state in states.items()}
        records = [CommandRecord(c.command_id, c.fingerprint, outcome)
                   for c, outcome in zip(commands, outcomes, strict=True)]  # fmt: skip
        record = records[0] if len(records) == 1 else records
        if self._submit_append is None:
            recorded = self.store.append(new_events, expected, record)
            wait: Callable[[], list[RecordedEvent]] = lambda: recorded  # noqa: E731
        else:
            wait = self._submit_append(new_events, expected, record, heads)
        after_heads = {**heads, **{event.aggregate_id: event.hash for event in new_events}}
        for sid, state in after.items():
            if state is not None:
                self._cache.put(state, after_heads[sid])
        if queued is not None:
            queued.update(after_heads)

        def settle() -> list[Receipt]:
            try:
                recorded = wait()
            except BaseException:
                self._cache.forget(stream_ids)  # it may hold the states this append left
                raise
            self._snapshot_crossings(states, after, after_heads)
            if collect is not None:
                collect.extend(recorded)
            elif self.after_append is not None:
                self.after_append(recorded)
            return [Receipt(r.command_id, r.outcome) for r in records]

        return settle

    def _decide_in_turn(
        self, commands: Sequence[_Command], known: Mapping[str, tuple[Account | None, str]]
    ) -> tuple[dict[str, Account | None], list[NewEvent], list[dict[str, Any]]]:
        """Decide each command on the states the ones before it leave: the states after the
        last, every command's events (as envelopes, not yet chained), each one's outcome."""
        states = {sid: state for sid, (state, _) in known.items()}
        envelopes: list[NewEvent] = []
        outcomes = []
        for command in commands:
            decided = command.decide(states)
            envelopes += self._envelopes(decided, states, command.command_id, command.actor)
            for event in decided:
                states[event.account_id] = domain.apply(states[event.account_id], event)
            # every stream the command names holds an account once its events are applied
            opened = cast("Mapping[str, Account]", states)
            outcomes.append({"command_id": command.command_id, **command.describe(opened, decided)})
        return states, envelopes, outcomes

    # ------------------------------------------------------------ batches of transfers

    def transfer_batch(
        self, items: Sequence[BatchItem], *, atomic: bool = False
    ) -> list[ItemResult]:
        """Up to ``MAX_BATCH_ITEMS`` transfers, each with its own idempotency key and outcome,
        answered in order (batch.py). A malformed item is refused on its own, as is a key used
        by an earlier item of the batch.

        Without ``atomic`` every item is a transfer of its own, but the batch does not wait
        for one before deciding the next: it decides and queues every item's append (each
        decided on the states the ones queued before it leave, as for concurrent commands),
        then waits for them all, so group commit writes the batch in a few transactions
        (``_batch_each``). With ``atomic``, every item is decided in turn and all are written in
        one append carrying every item's command record, or none is (``_batch_atomic``); the
        limit is one append's (``BatchTooLarge`` names it: 1,000 events on SQLite and
        PostgreSQL, 100 transaction items on DynamoDB). Either way the expiry of each overdue
        pending transfer on the batch's accounts is recorded first, as for one transfer.
        """
        if not items:
            raise InvalidInput("a batch needs at least one transfer")
        if len(items) > MAX_BATCH_ITEMS:
            raise BatchTooLarge(
                f"{len(items):,} transfers in one batch; the limit is {MAX_BATCH_ITEMS:,}: "
                "split it into several batches"
            )
        started = time.perf_counter()
        results: dict[int, ItemResult] = {}
        commands: list[tuple[int, _Command]] = []
        first_with_key: dict[str, int] = {}
        for index, item in enumerate(items):
            try:
                command = _batch_command(item, index, first_with_key, self.clock_text)
                commands.append((index, command))
            except (InvalidInput, IdempotencyKeyReused) as exc:
                results[index] = ItemResult(index, item.idempotency_key, "refused", error=exc)
        if atomic and results:
            first_refused = min(results)
            results.update(_aborted(commands, first_refused, results[first_refused].error))
        elif commands:
            with self._cache.checking_once():
                self._expire_overdue_on(commands)
                results.update((self._batch_atomic if atomic else self._batch_each)(commands))
        ordered = [results[index] for index in range(len(items))]
        self._observe_transfers(ordered, started)
        return ordered

    def transfer_each(self, items: Sequence[BatchItem]) -> list[Receipt | EventbankError]:
        """Transfers asked for one by one, run together: each exactly as ``transfer`` runs it
        (its own key, a new one when it has none; its own actor; its outcome, its first
        outcome if its key was recorded, or its own error), but decided and queued in turn by
        this one thread, as a batch's items are (``_batch_each``), so group commit writes them
        in few transactions with no thread waiting per transfer. Each answer is in its item's
        place. The HTTP service runs concurrent ``POST /transfers`` this way
        (http/commands.py). Only for an engine that queues appends (``groups_appends``)."""
        started = time.perf_counter()
        answers: dict[int, Receipt | EventbankError] = {}
        commands: list[tuple[int, _Command]] = []
        for index, item in enumerate(items):
            try:
                commands.append((index, _transfer_command(item, self.clock_text)))
            except EventbankError as exc:
                answers[index] = exc
        if commands:
            with self._cache.checking_once():
                self._expire_overdue_on(commands)
                results = self._batch_each(commands, resent=False)
            self._observe_transfers(results.values(), started)
            answers.update((index, _receipt_of(result)) for index, result in results.items())
        return [answers[index] for index in range(len(items))]

    def _expire_overdue_on(self, commands: Sequence[tuple[int, _Command]]) -> None:
        """For a batch, what ``_handle`` does first for one command: the expiry of each
        overdue pending transfer on the streams it names is recorded before any is decided."""
        self.expire_overdue(list(dict.fromkeys(sid for _, c in commands for sid in c.stream_ids)))

    @property
    def groups_appends(self) -> bool:
        """Whether the engine queues appends for group commit (SQLite, PostgreSQL)."""
        return self._submit_append is not None

    def _observe_transfers(self, results: Iterable[ItemResult], started: float) -> None:
        if self.observer is not None:
            elapsed_s = time.perf_counter() - started
            for result in results:
                self.observer.command_finished("transfer", _label(result), elapsed_s)

    def _batch_each(
        self, commands: list[tuple[int, _Command]], *, resent: bool = True
    ) -> dict[int, ItemResult]:
        """Every item a transfer of its own, written by group commit in few transactions.

        The items are taken in waves. A wave decides and queues each item in order (under its
        streams' locks, as ``_attempt`` does), each on the states the items queued before it
        leave, while a thread of its own waits for the appends as they are queued (group
        commit takes them in as few transactions as the writes allow); then it waits for the
        last. An item whose streams an item put off earlier in the wave names is put off too,
        so each account's items keep their order: the outcome is that of the items run one by
        one. An item is put off to the next wave when:

        - its append failed (``ConcurrencyConflict``, ``StoreUnavailable``): the items queued
          after it on its streams were built on it and fail with it; they are retried, with
          a backoff, at most ``max_attempts`` times each, and while the store is
          unavailable, until ``UNAVAILABLE_RETRY_S`` after the wave that first met that began;
        - it was refused on the states appends queued in this wave leave, and one of those
          was not written (a refusal on them counts once they are: the store checked that
          they were built on its own state);
        - it would not be built on the appends queued before it on its streams (the state it
          found is not theirs).

        An item that may have run before (a retried one; with ``resent``, every item when the
        batch's first key is found recorded: a batch sent again) is looked up by its key
        before it is decided, and answered with its first outcome. A refused or duplicate item
        is looked up too (step 4), so a replayed batch moves nothing more.
        """
        results: dict[int, ItemResult] = {}
        collected: list[RecordedEvent] = []
        attempts = dict.fromkeys((index for index, _ in commands), 0)
        look_up: set[int] = set()
        if resent and self.store.find_command(commands[0][1].command_id) is not None:
            look_up = set(attempts)  # sent before: answer what was done without deciding it
        todo, down_since = commands, 0.0
        try:
            while todo:
                wave = self._wave if self._submit_append is not None else self._wave_at_once
                tried_at = time.monotonic()
                later, failed = wave(todo, results, look_up, collected)
                todo = []
                for index, command, error in later:
                    if error is None:  # put off, not failed
                        todo.append((index, command))
                        continue
                    attempts[index] += 1
                    look_up.add(index)
                    down_for = 0.0
                    if isinstance(error, ConcurrencyConflict):
                        self._cache.found_stale(error.aggregate_ids)
                    elif isinstance(error, StoreUnavailable):
                        # down since the wave that met it began, as for one command
                        down_since = down_since or tried_at
                        down_for = time.monotonic() - down_since
                    if attempts[index] >= self.max_attempts or down_for > UNAVAILABLE_RETRY_S:
                        results[index] = _refused(index, command, _given_up(error, attempts[index]))
                        continue
                    if self.observer is not None:
                        self.observer.command_retried("transfer", type(error).__name__)
                    todo.append((index, command))
                todo.sort(key=lambda entry: entry[0])
                if failed and todo:
                    self._backoff(max(attempts[index] for index, _ in todo))
        finally:
            if collected and self.after_append is not None:
                self.after_append(collected)
        return results

    def _wave(
        self,
        todo: list[tuple[int, _Command]],
        results: dict[int, ItemResult],
        look_up: set[int],
        collected: list[RecordedEvent],
    ) -> tuple[list[tuple[int, _Command, EventbankError | None]], bool]:
        """One wave of ``_batch_each``: the items for the next one (with the error of the
        attempt that failed, None if put off), and whether any attempt failed."""
        later: list[tuple[int, _Command, EventbankError | None]] = []
        put_off: set[str] = set()  # streams of the items for the next wave
        queued: dict[str, str] = {}  # head hash of each stream's last append queued in this wave
        last_queued: dict[str, int] = {}  # and the index of the item that queued it
        # refusals on queued states, and the items whose appends they count on
        refused_on: list[tuple[int, _Command, EventbankError, set[int]]] = []
        waiting: list[tuple[int, _Command]] = []
        settler = _Settler()
        try:
            for index, command in todo:
                if index in look_up:
                    look_up.discard(index)
                    if self._answer_from_first_run(index, command, results):
                        continue
                if not put_off.isdisjoint(command.stream_ids):
                    later.append((index, command, None))
                    put_off.update(command.stream_ids)
                    continue
                try:
                    with self._stream_locks.hold(command.stream_ids):
                        settle = self._decide_and_submit([command], collect=collected,
                                                         queued=queued)  # fmt: skip
                except _AwaitQueued:
                    later.append((index, command, None))
                    put_off.update(command.stream_ids)
                    continue
                except _RefusedOnQueued as refusal:
                    on = {last_queued[sid] for sid in refusal.streams}
                    refused_on.append((index, command, refusal.error, on))
                    continue
                except (RuleViolation, InvalidInput, DuplicateCommand) as exc:
                    if not self._answer_from_first_run(index, command, results):
                        if isinstance(exc, DuplicateCommand):  # recorded, then gone? try again
                            later.append((index, command, exc))
                            put_off.update(command.stream_ids)
                        else:
                            results[index] = _refused(index, command, exc)
                    continue
                except (ConcurrencyConflict, StoreUnavailable) as exc:  # e.g. reading a stream
                    later.append((index, command, exc))
                    put_off.update(command.stream_ids)
                    continue
                waiting.append((index, command))
                last_queued.update(dict.fromkeys(command.stream_ids, index))
                settler.add(settle)
        finally:
            answers = settler.finish()  # every queued append is waited for, whatever happens
        written: set[int] = set()
        for (index, command), answer in zip(waiting, answers, strict=True):
            if isinstance(answer, Receipt):
                results[index] = ItemResult(index, command.command_id, "ok", answer.outcome)
                written.add(index)
            elif isinstance(answer, DuplicateCommand) and self._answer_from_first_run(
                index, command, results
            ):
                continue
            elif isinstance(answer, ConcurrencyConflict | StoreUnavailable | DuplicateCommand):
                later.append((index, command, answer))
            else:
                raise answer
        for index, command, error, on in refused_on:
            if not on <= written:  # decided on a state that was not written: decide again
                later.append((index, command, None))
            elif not self._answer_from_first_run(index, command, results):
                results[index] = _refused(index, command, error)
        return later, any(error is not None for *_, error in later)

    def _wave_at_once(
        self,
        todo: list[tuple[int, _Command]],
        results: dict[int, ItemResult],
        look_up: set[int],
        collected: list[RecordedEvent],
    ) -> tuple[list[tuple[int, _Command, EventbankError | None]], bool]:
        """``_wave`` for an engine that appends at once (DynamoDB: no group commit to queue
        in): up to ``PARALLEL_ITEMS`` items at a time, each in a thread of a pool as one
        command. An item starts once the items before it on its accounts are answered, so they
        keep their order; one put off or failed puts off the items after it on its accounts."""
        later: list[tuple[int, _Command, EventbankError | None]] = []
        put_off: set[str] = set()
        last_on: dict[str, Future[ItemResult | EventbankError]] = {}
        started = []
        with ThreadPoolExecutor(PARALLEL_ITEMS, thread_name_prefix="batch-item") as pool:
            for index, command in todo:
                before = {last_on[sid] for sid in command.stream_ids if sid in last_on}
                if not put_off.isdisjoint(command.stream_ids) or not all(
                    isinstance(f.result(), ItemResult) for f in before
                ):
                    later.append((index, command, None))
                    put_off.update(command.stream_ids)
                    continue
                run = contextvars.copy_context().run  # the request's actor, in the pool's thread
                tried = pool.submit(run, self._try_item, index, command, index in look_up,
                                    collected)  # fmt: skip
                look_up.discard(index)
                last_on.update(dict.fromkeys(command.stream_ids, tried))
                started.append((index, command, tried))
        for index, command, tried in started:
            answer = tried.result()
            if isinstance(answer, ItemResult):
                results[index] = answer
            else:
                later.append((index, command, answer))
        return later, any(error is not None for *_, error in later)

    def _try_item(
        self, index: int, command: _Command, look_up: bool, collected: list[RecordedEvent]
    ) -> ItemResult | EventbankError:
        """One attempt at one item, on an engine that appends at once: its result, or the
        error of an attempt to make again."""
        results: dict[int, ItemResult] = {}
        if look_up and self._answer_from_first_run(index, command, results):
            return results[index]
        try:
            with self._stream_locks.hold(command.stream_ids):
                settle = self._decide_and_submit([command], collect=collected)
            receipt = settle()[0]
        except (RuleViolation, InvalidInput, DuplicateCommand) as exc:
            if self._answer_from_first_run(index, command, results):
                return results[index]
            if isinstance(exc, DuplicateCommand):  # recorded, then gone? try again
                return exc
            return _refused(index, command, exc)
        except (ConcurrencyConflict, StoreUnavailable) as exc:
            return exc
        return ItemResult(index, command.command_id, "ok", receipt.outcome)

    def _answer_from_first_run(
        self, index: int, command: _Command, results: dict[int, ItemResult]
    ) -> bool:
        """Answer the item from its key's first run, if it was recorded (or refuse it, if that
        was another request); False if the key is not recorded."""
        try:
            first_run = self._first_run(command.command_id, command.fingerprint)
        except IdempotencyKeyReused as exc:
            results[index] = _refused(index, command, exc)
            return True
        if first_run is None:
            return False
        results[index] = ItemResult(index, command.command_id, "replayed", first_run.outcome)
        return True

    def _batch_atomic(self, commands: list[tuple[int, _Command]]) -> dict[int, ItemResult]:
        """All items in one append, each with its command record, or none of them.

        An item already recorded (the batch sent again, or the key used by a single transfer
        with the same parameters) is replayed and left out of the append. Any other refusal
        (the rules, a key used for another request) aborts the batch: that item says why,
        every other says ``batch_aborted``. Conflicts and an unavailable store are retried as
        for one command (``_attempt``)."""
        results: dict[int, ItemResult] = {}
        todo, looked_up = commands, False
        last_error: EventbankError | None = None
        collected: list[RecordedEvent] = []
        unavailable_deadline = time.monotonic() + UNAVAILABLE_RETRY_S
        for attempt in range(self.max_attempts):
            if not todo:
                return results
            if attempt and last_error is not None:
                if self.observer is not None:
                    self.observer.command_retried("transfer", type(last_error).__name__)
                self._backoff(attempt)
            last_error, refused_by = None, [-1]  # refused_by: the item whose rules refused
            in_turn = [_noting_refusal(index, command, refused_by) for index, command in todo]
            streams = list(dict.fromkeys(sid for c in in_turn for sid in c.stream_ids))
            try:
                with self._stream_locks.hold(streams):
                    settle = self._decide_and_submit(in_turn, collect=collected)
                receipts = settle()
            except BatchTooLarge as exc:
                raise BatchTooLarge(
                    f"an atomic batch is written in one append, and these {len(todo)} "
                    f"transfers do not fit: {exc} Send them without atomic, or in smaller "
                    "atomic batches.",
                    needed=exc.needed,
                    limit=exc.limit,
                ) from None
            except (RuleViolation, InvalidInput, DuplicateCommand) as exc:
                if not looked_up or isinstance(exc, DuplicateCommand):
                    looked_up = True
                    todo = [
                        (index, command)
                        for index, command in todo
                        if not self._answer_from_first_run(index, command, results)
                    ]
                    if reused := [i for i, r in results.items() if r.status == "refused"]:
                        results.update(_aborted(todo, reused[0], results[reused[0]].error))
                        return results
                    if isinstance(exc, DuplicateCommand):
                        last_error = exc
                    continue  # decide again without the items done before
                if refused_by[0] < 0:
                    raise  # not an item's refusal: the batch's own
                by = next(c for i, c in todo if i == refused_by[0])
                results[refused_by[0]] = _refused(refused_by[0], by, exc)
                results.update(_aborted(todo, refused_by[0], exc))
                return results
            except ConcurrencyConflict as exc:
                self._cache.found_stale(exc.aggregate_ids)
                last_error = exc
                continue
            except StoreUnavailable as exc:
                if time.monotonic() > unavailable_deadline:
                    raise
                last_error = exc
                continue
            if collected and self.after_append is not None:
                self.after_append(collected)
            for (index, command), receipt in zip(todo, receipts, strict=True):
                results[index] = ItemResult(index, command.command_id, "ok", receipt.outcome)
            return results
        if not todo:
            return results
        if isinstance(last_error, StoreUnavailable):
            raise last_error
        raise RetriesExhausted(
            f"gave up on the atomic batch after {self.max_attempts} attempts ({last_error}); "
            "nothing was written, try again"
        )

    def _envelopes(
        self,
        events: list[AccountEvent],
        states: Mapping[str, Account | None],
        command_id: str,
        actor: str | None = None,
    ) -> list[NewEvent]:
        recorded_at = self.clock().isoformat()
        actor = current_actor.get() if actor is None else actor
        next_version: dict[str, int] = {}
        envelopes = []
        for event in events:
            sid = event.account_id
            if sid not in next_version:
                state = states[sid]
                next_version[sid] = state.version if state else 0
            next_version[sid] += 1
            metadata = {"command_id": command_id, "correlation_id": command_id,
                        "causation_id": command_id, "actor": actor,
                        "recorded_at": recorded_at}  # fmt: skip
            if transfer_id := getattr(event, "transfer_id", None):
                metadata["transfer_id"] = transfer_id
            envelopes.append(NewEvent(
                event_id=new_id(), aggregate_id=sid,
                aggregate_type=ACCOUNT, version=next_version[sid],
                event_type=event.event_type, schema_version=event.SCHEMA_VERSION,
                data=event.to_data(), metadata=metadata,
            ))  # fmt: skip
        return envelopes

    def _snapshot_crossings(
        self,
        before: Mapping[str, Account | None],
        after: Mapping[str, Account | None],
        heads: Mapping[str, str],
    ) -> None:
        """Snapshot each stream that crossed a multiple of ``snapshot_every``. A snapshot is a
        cache: failing to save one never fails the command that already landed."""
        for stream, state in after.items():
            previous = before[stream]
            old_version = previous.version if previous else 0
            if (
                state is None
                or state.version // self.snapshot_every == old_version // self.snapshot_every
            ):
                continue
            try:
                self._save_snapshot(state, heads[stream])
            except Exception as exc:  # noqa: BLE001
                log.warning("snapshot of %s at v%s not saved: %s", stream, state.version, exc)

    def _backoff(self, attempt: int) -> None:
        """Full jitter: sleep a random time up to an exponentially growing, capped bound."""
        time.sleep(full_jitter(attempt, self.backoff_base_s, self.backoff_cap_s))


def _transfer_parts(
    from_id: str,
    to_id: str,
    amount: str,
    now: Callable[[], str],
    metadata: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[str], Decision, Describe]:
    """A transfer's request (what its fingerprint covers), streams, decision and outcome: one
    definition for a single transfer and for each item of a batch, so the same key and
    parameters are the same command either way. ``now``: the time the rules are given."""
    domain.check_account_id(from_id)
    domain.check_account_id(to_id)
    meta = check_metadata(metadata)
    transfer_id = new_id()
    request = {"command": "transfer", "from": from_id, "to": to_id, "amount": amount,
               **_metadata_of(meta)}  # fmt: skip

    def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
        source = domain.require_open(states[from_id], from_id)
        money = parse_amount(amount, source.currency)
        return list(domain.decide_transfer(
            states[from_id], states.get(to_id), from_id=from_id, to_id=to_id, amount=money,
            transfer_id=transfer_id, now=now(), metadata=meta,
        ))  # fmt: skip

    def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
        return {"kind": "transfer", "transfer_id": transfer_id, **_amount_of(events[0]),
                **_metadata_of(meta),
                "from": after[from_id].describe(), "to": after[to_id].describe()}  # fmt: skip

    streams = [from_id] if from_id == to_id else [from_id, to_id]
    return request, streams, decide, outcome


def _amount_of(event: AccountEvent) -> dict[str, str]:
    """The amount of a money movement (the first event a deposit, withdrawal or transfer
    decides) as the API shows it."""
    movement = cast(Movement, event)
    return {"amount": format_minor(movement.amount_minor, movement.currency),
            "currency": movement.currency}  # fmt: skip


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
            "description": description, **_metadata_of(metadata),
            "legs": [{"account_id": leg.account_id, "direction": leg.direction,
                      "amount": format_minor(leg.amount_minor, currency),
                      "account": after[leg.account_id].describe()} for leg in posted]}  # fmt: skip


def _metadata_of(metadata: Mapping[str, str]) -> dict[str, Any]:
    """``{"metadata": ...}`` when there is any: absent, a request's fingerprint and outcome
    stay what they were before commands carried metadata."""
    return {"metadata": dict(metadata)} if metadata else {}


def check_command_id(command_id: str) -> str:
    if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
        raise InvalidInput("idempotency key must be 1-255 printable ASCII characters, no spaces")
    return command_id


def _batch_command(
    item: BatchItem, index: int, first_with_key: dict[str, int], now: Callable[[], str]
) -> _Command:
    """The transfer an item of a batch asks for, as a command with the item's key; refused
    (raised) if malformed, without a key, or with the key of an earlier item."""
    if item.malformed is not None:
        raise item.malformed
    command = _transfer_command(item, now, key_required=True)
    key = command.command_id
    first = first_with_key.setdefault(key, index)
    if first != index:
        raise IdempotencyKeyReused(
            f"idempotency key {key!r} is item {first}'s too: every item of a batch needs a key "
            "of its own"
        )
    return command


def _transfer_command(
    item: BatchItem, now: Callable[[], str], *, key_required: bool = False
) -> _Command:
    """The transfer ``item`` asks for, as a command under its key (a new one when it has none
    and none is required); refused (raised) if malformed."""
    request, streams, decide, describe = _transfer_parts(
        item.from_account_id, item.to_account_id, item.amount, now, item.metadata
    )
    key = item.idempotency_key
    if not key and key_required:
        raise InvalidInput(MISSING_KEY)
    command_id = check_command_id(key) if key else new_id()
    return _Command(command_id, fingerprint(request), streams, decide, describe, item.actor)


def _receipt_of(result: ItemResult) -> Receipt | EventbankError:
    """A batch item's result as a single command's: its receipt, or its error."""
    if result.error is not None:
        return result.error
    outcome = cast("Mapping[str, Any]", result.outcome)
    return Receipt(cast(str, result.idempotency_key), outcome, result.status == "replayed")


def _noting_refusal(index: int, command: _Command, refused_by: list[int]) -> _Command:
    """``command``, noting its batch index in ``refused_by`` when its rules refuse it."""

    def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
        try:
            return command.decide(states)
        except (RuleViolation, InvalidInput):
            refused_by[0] = index
            raise

    return dataclasses.replace(command, decide=decide)


def _refused(index: int, command: _Command, error: EventbankError) -> ItemResult:
    return ItemResult(index, command.command_id, "refused", error=error)


def _aborted(
    commands: Sequence[tuple[int, _Command]], refused: int, why: EventbankError | None
) -> dict[int, ItemResult]:
    """Every item of an atomic batch but ``refused``, not written because that one was."""
    code = why.code if why is not None else "refused"
    error = BatchAborted(
        f"not written: the batch is atomic and item {refused} was refused ({code})"
    )
    return {index: _refused(index, command, error)
            for index, command in commands if index != refused}  # fmt: skip


def _given_up(error: EventbankError, attempts: int) -> EventbankError:
    if isinstance(error, StoreUnavailable):
        return error  # not a conflict: the store failed, and a retry is safe
    return RetriesExhausted(
        f"gave up after {attempts} attempts ({error}); nothing was written for this transfer, "
        "try again"
    )


class _Settler:
    """Waits for a batch's queued appends in the order queued (the first may be chosen to lead
    the group commit the others wait in), on a thread of its own while the batch decides its
    next items, so that the writes overlap the deciding; ``finish`` waits for the last and
    gives each one's receipt or error, in order. The thread is one of ``_SETTLER_THREADS``."""

    def __init__(self) -> None:
        self.answers: list[Receipt | BaseException] = []
        self._pending: queue.SimpleQueue[Callable[[], list[Receipt]] | None] = queue.SimpleQueue()
        self._running: Future[None] | None = None

    def add(self, settle: Callable[[], list[Receipt]]) -> None:
        if self._running is None:
            self._running = _SETTLER_THREADS.submit(contextvars.Context().run, self._run)
        self._pending.put(settle)

    def finish(self) -> list[Receipt | BaseException]:
        if self._running is not None:
            self._pending.put(None)
            self._running.result()
        return self.answers

    def _run(self) -> None:
        while (settle := self._pending.get()) is not None:
            try:
                self.answers.append(settle()[0])
            except BaseException as exc:  # noqa: BLE001 - answered in its place
                self.answers.append(exc)


# Settlers' threads, kept between batches: a thread started per batch (with its own read
# connection) cost more than a small batch's own work, and the HTTP service runs a batch per
# group of concurrent transfers. A settler must never wait for a thread (the first append it
# waits for may lead the group commit), so the bound is far above the batches one process runs
# at once (two coalescer runners, the 40 threads of the HTTP pool).
_SETTLER_THREADS = ThreadPoolExecutor(max_workers=256, thread_name_prefix="batch-settler")


def _label(result: ItemResult) -> str:
    """The outcome label a batch item is counted under, as ``_handle`` labels a command."""
    if result.status != "refused":
        return result.status
    if isinstance(result.error, RuleViolation):
        return "refused"
    return "conflict" if isinstance(result.error, Conflict) else "error"
