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
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from eventbank.application.account_cache import AccountCache
from eventbank.application.ids import new_id
from eventbank.application.stream_locks import StreamLocks
from eventbank.domain import account as domain
from eventbank.domain.account import Account
from eventbank.domain.canonical import fingerprint
from eventbank.domain.errors import AccountNotFound, Conflict, InvalidInput, RuleViolation
from eventbank.domain.events import ACCOUNT, AccountEvent, Movement, event_from_data
from eventbank.domain.money import Money, format_minor, parse_amount
from eventbank.ports.event_store import (
    GENESIS_HASH,
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
    ):
        """``after_append`` sees each command's recorded events once they are durable (e.g. to
        project them inline); it must not raise. ``observer`` is told of outcomes and retries.
        ``channel`` (cli, api, …) is recorded on deposits: how the money arrived.
        ``cache_size`` bounds how many accounts' states are kept between commands (0: none)."""
        self.channel = channel
        if snapshot_every < 1:
            raise InvalidInput("snapshot_every must be at least 1")
        self.snapshot_every = snapshot_every
        self.store = store
        self.after_append = after_append
        self.observer = observer
        self.clock = clock
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
        folded = domain.replay(
            (event_from_data(e.event_type, dict(e.data), e.schema_version) for e in events), state
        )
        if folded is not None:
            self._cache.put(folded, head)
        return folded, head

    def _known(
        self, stream_ids: Sequence[str]
    ) -> tuple[dict[str, tuple[Account | None, str]], list[str]]:
        """Each stream's state and chain head, from the cache where it has them (they may be
        stale: the append's version check decides), else loaded; and which came from the cache."""
        known, cached = {}, []
        for sid in stream_ids:
            entry = self._cache.get(sid)
            if entry is None:
                known[sid] = self._load(sid)
            else:
                known[sid] = entry
                cached.append(sid)
        return known, cached

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
        command_id: str | None = None,
    ) -> Receipt:
        initial = None if initial_deposit is None else parse_amount(initial_deposit, currency)
        kind = account_type.upper() if isinstance(account_type, str) else account_type
        command = domain.OpenAccount(account_id, owner, kind, currency, initial, self.channel)
        request = {"command": "open", "account_id": account_id, "owner": owner,
                   "type": str(command.account_type), "currency": currency,
                   "initial_deposit": initial_deposit}  # fmt: skip
        return self._handle(
            command_id, request, [account_id],
            lambda s: domain.decide(s[account_id], command),
            lambda after, _: {"kind": "open", "account": after[account_id].describe()},
        )  # fmt: skip

    def deposit(self, account_id: str, amount: str, *, command_id: str | None = None) -> Receipt:
        return self._single(
            account_id, amount, command_id, "deposit",
            lambda aid, money: domain.Deposit(aid, money, self.channel),
        )  # fmt: skip

    def withdraw(self, account_id: str, amount: str, *, command_id: str | None = None) -> Receipt:
        return self._single(account_id, amount, command_id, "withdraw", domain.Withdraw)

    def close_account(self, account_id: str, *, command_id: str | None = None) -> Receipt:
        domain.check_account_id(account_id)
        return self._handle(
            command_id, {"command": "close", "account_id": account_id}, [account_id],
            lambda s: domain.decide(s[account_id], domain.CloseAccount(account_id)),
            lambda after, _: {"kind": "close", "account": after[account_id].describe()},
        )  # fmt: skip

    def transfer(
        self, from_id: str, to_id: str, amount: str, *, command_id: str | None = None
    ) -> Receipt:
        """Debit ``from_id`` and credit ``to_id`` in one atomic append across both streams."""
        domain.check_account_id(from_id)
        domain.check_account_id(to_id)
        transfer_id = new_id()
        request = {"command": "transfer", "from": from_id, "to": to_id, "amount": amount}

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            source = domain.require_open(states[from_id], from_id)
            money = parse_amount(amount, source.currency)
            return list(domain.decide_transfer(
                states[from_id], states.get(to_id), from_id=from_id, to_id=to_id, amount=money,
                transfer_id=transfer_id,
            ))  # fmt: skip

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            return {"kind": "transfer", "transfer_id": transfer_id, **_amount_of(events[0]),
                    "from": after[from_id].describe(), "to": after[to_id].describe()}  # fmt: skip

        streams = [from_id] if from_id == to_id else [from_id, to_id]
        return self._handle(command_id, request, streams, decide, outcome)

    def _single(
        self,
        account_id: str,
        amount: str,
        command_id: str | None,
        kind: str,
        make: Callable[[str, Money], domain.Deposit | domain.Withdraw],
    ) -> Receipt:
        domain.check_account_id(account_id)

        def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
            account = domain.require_open(states[account_id], account_id)
            return domain.decide(account, make(account_id, parse_amount(amount, account.currency)))

        def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
            return {"kind": kind, **_amount_of(events[0]), "account": after[account_id].describe()}

        request = {"command": kind, "account_id": account_id, "amount": amount}
        return self._handle(command_id, request, [account_id], decide, outcome)

    # ------------------------------------------------------------ the one write path

    def _handle(
        self,
        command_id: str | None,
        request: Mapping[str, Any],
        stream_ids: Sequence[str],
        decide: Decision,
        describe: Callable[[Mapping[str, Account], list[AccountEvent]], dict[str, Any]],
    ) -> Receipt:
        started, outcome_label = time.perf_counter(), "error"
        try:
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
        describe: Callable[[Mapping[str, Account], list[AccountEvent]], dict[str, Any]],
    ) -> Receipt:
        supplied = bool(command_id)
        command_id = check_command_id(command_id) if command_id else new_id()
        request_fingerprint = fingerprint(request)
        last_error: Exception | None = None
        unavailable_deadline = time.monotonic() + UNAVAILABLE_RETRY_S
        for attempt in range(self.max_attempts):
            if attempt:
                if self.observer is not None:
                    self.observer.command_retried(request["command"], type(last_error).__name__)
                self._backoff(attempt)
            try:
                with self._stream_locks.hold(stream_ids):
                    settle = self._decide_and_submit(
                        command_id, request_fingerprint, stream_ids, decide, describe
                    )
                return settle()
            except ConcurrencyConflict as exc:
                self._cache.forget(exc.aggregate_ids)
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
        command_id: str,
        request_fingerprint: str,
        stream_ids: Sequence[str],
        decide: Decision,
        describe: Callable[[Mapping[str, Account], list[AccountEvent]], dict[str, Any]],
    ) -> Callable[[], Receipt]:
        """Steps 1-3 until the append is queued; the returned call waits for it and finishes.

        Where the engine queues appends (group commit), the states this command leaves are
        cached as soon as its append is queued, and the caller releases the stream locks before
        waiting: the next command on these streams decides on them and joins the same batch
        instead of waiting a commit. Its append names the head hashes it built on, so the store
        refuses it unless this one was written (contract.QueuesAppends); a failed append
        drops its streams from the cache.
        """
        known, cached = self._known(stream_ids)
        states = {sid: state for sid, (state, _) in known.items()}
        try:
            decided = decide(states)
        except (RuleViolation, InvalidInput):
            if not cached:
                raise
            self._cache.forget(cached)  # a refusal must hold on the store's current state
            known.update((sid, self._load(sid)) for sid in cached)
            states = {sid: state for sid, (state, _) in known.items()}
            decided = decide(states)
        after = dict(states)
        for event in decided:
            after[event.account_id] = domain.apply(after[event.account_id], event)
        # every stream the command names holds an account once its events are applied
        opened = cast("Mapping[str, Account]", after)
        outcome = {"command_id": command_id, **describe(opened, decided)}
        heads = {sid: head for sid, (_, head) in known.items()}
        new_events = chained(self._envelopes(decided, states, command_id), heads)
        expected = {sid: (state.version if state else 0) for sid, state in states.items()}
        record = CommandRecord(command_id, request_fingerprint, outcome)
        if self._submit_append is None:
            recorded = self.store.append(new_events, expected, record)
            wait: Callable[[], list[RecordedEvent]] = lambda: recorded  # noqa: E731
        else:
            wait = self._submit_append(new_events, expected, record, heads)
        after_heads = {**heads, **{event.aggregate_id: event.hash for event in new_events}}
        for sid, state in after.items():
            if state is not None:
                self._cache.put(state, after_heads[sid])

        def settle() -> Receipt:
            try:
                recorded = wait()
            except BaseException:
                self._cache.forget(stream_ids)  # it may hold the states this append left
                raise
            self._snapshot_crossings(states, after, after_heads)
            if self.after_append is not None:
                self.after_append(recorded)
            return Receipt(command_id, outcome)

        return settle

    def _envelopes(
        self, events: list[AccountEvent], states: Mapping[str, Account | None], command_id: str
    ) -> list[NewEvent]:
        recorded_at = self.clock().isoformat()
        next_version = {sid: (s.version if s else 0) for sid, s in states.items()}
        envelopes = []
        for event in events:
            next_version[event.account_id] += 1
            metadata = {"command_id": command_id, "correlation_id": command_id,
                        "causation_id": command_id, "actor": current_actor.get(),
                        "recorded_at": recorded_at}  # fmt: skip
            if transfer_id := getattr(event, "transfer_id", None):
                metadata["transfer_id"] = transfer_id
            envelopes.append(NewEvent(
                event_id=new_id(), aggregate_id=event.account_id,
                aggregate_type=ACCOUNT, version=next_version[event.account_id],
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
        time.sleep(random.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * 2**attempt)))


def _amount_of(event: AccountEvent) -> dict[str, str]:
    """The amount of a money movement (the first event a deposit, withdrawal or transfer
    decides) as the API shows it."""
    movement = cast(Movement, event)
    return {"amount": format_minor(movement.amount_minor, movement.currency),
            "currency": movement.currency}  # fmt: skip


def check_command_id(command_id: str) -> str:
    if not isinstance(command_id, str) or not _COMMAND_ID.fullmatch(command_id):
        raise InvalidInput("idempotency key must be 1-255 printable ASCII characters, no spaces")
    return command_id
