"""The one write path every command takes, holding this process's lock on each stream involved
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

``WritePath`` holds these steps and what they keep between commands (the account cache, the
stream locks); ``LedgerService`` (service.py) defines the commands on top of it, and
``TransferBatches`` (transfer_batches.py) runs many transfers through it at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from eventbank.application.account_cache import AccountCache, decoded
from eventbank.application.ids import new_id
from eventbank.application.stream_locks import StreamLocks
from eventbank.backoff import full_jitter
from eventbank.domain import account as domain
from eventbank.domain.account import Account
from eventbank.domain.canonical import fingerprint
from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import Conflict, EventbankError, InvalidInput, RuleViolation
from eventbank.domain.events import ACCOUNT, AccountEvent, Movement
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import (
    GENESIS_HASH,
    MAX_STREAMS_PER_READ,
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
COMMAND_ID = re.compile(r"[!-~]{1,255}")  # printable ASCII, no spaces, as Stripe's keys
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
Describe = Callable[[Mapping[str, Account], list[AccountEvent]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Command:
    """A command on the write path: its id, its parameters' fingerprint, the streams it
    involves, the rules that decide it and describe its outcome, and who asked for it (None:
    ``current_actor``)."""

    command_id: str
    fingerprint: str
    stream_ids: Sequence[str]
    decide: Decision
    describe: Describe
    actor: str | None = None


class AwaitQueued(Exception):
    """A batch item that would not be built on the appends its batch queued on its streams (the
    state it found is not theirs: one failed, or the cache dropped it), and so could pass
    them: the batch decides it again once they are answered (``_batch_each``)."""


class RefusedOnQueued(Exception):
    """A batch item refused on the state that appends its batch queued on ``streams`` leave.
    Those states are not stale (the store checks each head hash as it writes them), so the
    refusal counts if they are written; if one is not, the item is decided again."""

    def __init__(self, error: EventbankError, streams: Sequence[str]):
        super().__init__(str(error))
        self.error, self.streams = error, streams


class WritePath:
    """Steps 1-5 of the module docstring for any command, and the account states they keep."""

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
        snapshot_every: int = 100,
        cache_size: int = 10_000,
    ):
        """``after_append`` sees each command's recorded events once they are durable (e.g. to
        project them inline); it must not raise. ``observer`` is told of outcomes and retries.
        ``cache_size`` bounds how many accounts' states are kept between commands (0: none)."""
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

    def load_account(self, account_id: str) -> Account | None:
        return self._load(account_id)[0]

    def _load(self, account_id: str) -> tuple[Account | None, str]:
        return self._load_many([account_id])[account_id]

    def _load_many(self, account_ids: Sequence[str]) -> dict[str, tuple[Account | None, str]]:
        """Each account folded from its newest usable snapshot plus the events after it, and
        the hash at the head of its chain (the next event chains from it); remembered in the
        cache. Two reads of the store for up to ``MAX_STREAMS_PER_READ`` accounts: their
        snapshots, then the events after each.

        A snapshot of another state schema version is ignored (replayed from events instead),
        so a snapshot can never be misread after Account changes shape.
        """
        for account_id in account_ids:
            domain.check_account_id(account_id)
        loaded: dict[str, tuple[Account | None, str]] = {}
        for at in range(0, len(account_ids), MAX_STREAMS_PER_READ):
            chunk = account_ids[at : at + MAX_STREAMS_PER_READ]
            snapshots = self.store.load_snapshots(chunk)
            starts: dict[str, tuple[Account | None, str]] = {}
            for account_id in chunk:
                snapshot = snapshots.get(account_id)
                if snapshot and snapshot.state_schema_version == domain.STATE_SCHEMA_VERSION:
                    starts[account_id] = (domain.from_snapshot(dict(snapshot.state["account"])),
                                          snapshot.state["head_hash"])  # fmt: skip
                else:
                    starts[account_id] = (None, GENESIS_HASH)
            tails = self.store.read_streams(
                {sid: state.version if state else 0 for sid, (state, _) in starts.items()}
            )
            for account_id, (state, head) in starts.items():
                tail = tails.get(account_id, [])
                folded = domain.replay(map(decoded, tail), state)
                head = tail[-1].hash if tail else head
                if folded is not None:
                    self._cache.put(folded, head)
                loaded[account_id] = (folded, head)
        return loaded

    def _known(
        self, stream_ids: Sequence[str]
    ) -> tuple[dict[str, tuple[Account | None, str]], list[str]]:
        """Each stream's state and chain head, from the cache where it has them (they may be
        stale: the append's version check decides; caught up first while other writers are
        about, account_cache.py), else loaded; and which came from the cache."""
        self._cache.catch_up(self.store, stream_ids)
        entries = {sid: entry for sid in stream_ids if (entry := self._cache.get(sid))}
        loaded = self._load_many([sid for sid in stream_ids if sid not in entries])
        return {sid: entries.get(sid) or loaded[sid] for sid in stream_ids}, list(entries)

    def _save_snapshot(self, account: Account, head_hash: str) -> None:
        state = {"account": domain.to_snapshot(account), "head_hash": head_hash}
        self.store.save_snapshot(Snapshot(
            account.account_id, ACCOUNT, account.version, domain.STATE_SCHEMA_VERSION, state
        ))  # fmt: skip

    def clock_text(self) -> str:
        """The time the rules are given (domain/deadlines.py)."""
        return utc_text(self.clock())

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
        command = Command(command_id, request_fingerprint, stream_ids, decide, describe)
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
        commands: Sequence[Command],
        *,
        collect: list[RecordedEvent] | None = None,
        queued: dict[str, str] | None = None,
        refused: dict[int, EventbankError] | None = None,
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
        takes the states it would have left out of the cache, the committed ones stay.

        ``collect``: the recorded events are added to it instead of being handed to
        ``after_append`` (a batch hands over all of its items' at once). ``queued`` (a batch's
        items queued and not yet waited for): the head hash each stream's last such append
        leaves. The command must be built on those (else ``AwaitQueued``); a refusal on them
        is ``RefusedOnQueued``, for the batch to count once they are written; the heads its
        own append leaves are recorded in it.

        ``refused`` (batch items written together): a command the rules refuse is left out of
        the append instead of refusing them all, and its error is set at its position
        (``_decide_in_turn``); the receipts are those of the others, in order. Its refusal is
        not decided again on the store's state: the append still names the version and head of
        every stream, its own too, so it is written only if each state a refusal was decided
        on is still the store's (else ``ConcurrencyConflict``, and the caller decides again).
        If every command is refused, the first refusal is raised.
        """
        stream_ids = list(dict.fromkeys(sid for c in commands for sid in c.stream_ids))
        known, cached = self._known(stream_ids)
        waits_on = [sid for sid in stream_ids if sid in queued] if queued else []
        if queued and any(known[sid][1] != queued[sid] for sid in waits_on):
            raise AwaitQueued  # not built on this batch's own appends: it could pass them
        try:
            decided = self._decide_in_turn(commands, known, refused)
        except (RuleViolation, InvalidInput) as exc:
            # A refusal must hold on the store's current state: read again what was cached,
            # but for states appends still queued will leave (the store checks those).
            stale = [sid for sid in cached if sid not in waits_on]
            if not stale and waits_on:
                raise RefusedOnQueued(exc, waits_on) from exc
            if not stale:
                raise
            self._cache.forget(stale)
            known.update(self._load_many(stale))
            try:
                decided = self._decide_in_turn(commands, known)
            except (RuleViolation, InvalidInput) as again:
                if waits_on:
                    raise RefusedOnQueued(again, waits_on) from again
                raise
        states = {sid: state for sid, (state, _) in known.items()}
        after, new_envelopes, outcomes = decided
        heads = {sid: head for sid, (_, head) in known.items()}
        new_events = chained(new_envelopes, heads)
        expected = {sid: (state.version if state else 0) for sid, state in states.items()}
        records = [CommandRecord(c.command_id, c.fingerprint, outcome)
                   for c, outcome in zip(commands, outcomes, strict=True)
                   if outcome is not None]  # fmt: skip
        if refused and not records:  # nothing to write that the store would check them by
            raise refused[min(refused)]
        record = records[0] if len(records) == 1 else records
        if self._submit_append is None:
            recorded = self.store.append(new_events, expected, record)
            wait: Callable[[], list[RecordedEvent]] = lambda: recorded  # noqa: E731
        else:
            wait = self._submit_append(new_events, expected, record, heads)
        after_heads = {**heads, **{event.aggregate_id: event.hash for event in new_events}}
        self._remember(after, after_heads, pending=self._submit_append is not None)
        if queued is not None:
            queued.update(after_heads)

        def settle() -> list[Receipt]:
            try:
                recorded = wait()
            except BaseException:
                self._cache.drop_pending(stream_ids)  # the states this append would leave
                raise
            if self._submit_append is not None:
                self._remember(after, after_heads, pending=False)
            self._snapshot_crossings(states, after, after_heads)
            if collect is not None:
                collect.extend(recorded)
            elif self.after_append is not None:
                self.after_append(recorded)
            return [Receipt(r.command_id, r.outcome) for r in records]

        return settle

    def _remember(
        self, states: Mapping[str, Account | None], heads: Mapping[str, str], *, pending: bool
    ) -> None:
        """Cache the states an append leaves: ``pending`` while it is queued, committed once
        written (account_cache.py)."""
        for sid, state in states.items():
            if state is not None:
                self._cache.put(state, heads[sid], pending=pending)

    def _decide_in_turn(
        self,
        commands: Sequence[Command],
        known: Mapping[str, tuple[Account | None, str]],
        refused: dict[int, EventbankError] | None = None,
    ) -> tuple[dict[str, Account | None], list[NewEvent], list[dict[str, Any] | None]]:
        """Decide each command on the states the ones before it leave: the states after the
        last, every command's events (as envelopes, not yet chained), each one's outcome.

        With ``refused``, a command the rules refuse is left out (its outcome None, its error
        set at its position) and the rest go on."""
        states = {sid: state for sid, (state, _) in known.items()}
        envelopes: list[NewEvent] = []
        outcomes: list[dict[str, Any] | None] = []
        for position, command in enumerate(commands):
            try:
                decided = command.decide(states)
            except (RuleViolation, InvalidInput) as exc:
                if refused is None:
                    raise
                refused[position] = exc
                outcomes.append(None)
                continue
            envelopes += self._envelopes(decided, states, command.command_id, command.actor)
            for event in decided:
                states[event.account_id] = domain.apply(states[event.account_id], event)
            # every stream the command names holds an account once its events are applied
            opened = cast("Mapping[str, Account]", states)
            outcomes.append({"command_id": command.command_id, **command.describe(opened, decided)})
        return states, envelopes, outcomes

    @property
    def groups_appends(self) -> bool:
        """Whether the engine queues appends for group commit (SQLite, PostgreSQL)."""
        return self._submit_append is not None

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


def amount_of(event: AccountEvent) -> dict[str, str]:
    """The amount of a money movement (the first event a deposit, withdrawal or transfer
    decides) as the API shows it."""
    movement = cast(Movement, event)
    return {"amount": format_minor(movement.amount_minor, movement.currency),
            "currency": movement.currency}  # fmt: skip


def metadata_of(metadata: Mapping[str, str]) -> dict[str, Any]:
    """``{"metadata": ...}`` when there is any: absent, a request's fingerprint and outcome
    stay what they were before commands carried metadata."""
    return {"metadata": dict(metadata)} if metadata else {}


def check_command_id(command_id: str) -> str:
    if not isinstance(command_id, str) or not COMMAND_ID.fullmatch(command_id):
        raise InvalidInput("idempotency key must be 1-255 printable ASCII characters, no spaces")
    return command_id
