"""Many transfers at once through the one write path (write_path.py): a batch
(``transfer_batch``, batch.py), or single transfers asked for apart and run together
(``transfer_each``, the HTTP service's concurrent ``POST /transfers``).

Each item takes the path of one command, with its own key: without ``atomic`` every item's
append is queued before any is waited for, so group commit writes the batch in a few
transactions (``_batch_each``); with ``atomic`` all items are decided in turn and written in
one append that carries each item's command record (``_batch_atomic``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import queue
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, cast

from eventbank.application.batch import (
    MAX_BATCH_ITEMS,
    MISSING_KEY,
    BatchAborted,
    BatchItem,
    ItemResult,
)
from eventbank.application.ids import new_id
from eventbank.application.write_path import (
    UNAVAILABLE_RETRY_S,
    AwaitQueued,
    Command,
    Decision,
    Describe,
    IdempotencyKeyReused,
    Receipt,
    RefusedOnQueued,
    RetriesExhausted,
    WritePath,
    amount_of,
    check_command_id,
    metadata_of,
)
from eventbank.domain import account as domain
from eventbank.domain.account import Account
from eventbank.domain.canonical import fingerprint
from eventbank.domain.errors import Conflict, EventbankError, InvalidInput, RuleViolation
from eventbank.domain.events import AccountEvent
from eventbank.domain.metadata import check_metadata
from eventbank.domain.money import parse_amount
from eventbank.ports.event_store import (
    MAX_EVENTS_PER_APPEND,
    BatchTooLarge,
    ConcurrencyConflict,
    DuplicateCommand,
    RecordedEvent,
    StoreUnavailable,
)

# Items of a batch written at a time on an engine with no group commit (DynamoDB), each one
# append of its own; fewer than the engine's connection pool (32 on DynamoDB).
PARALLEL_ITEMS = 8
# Items of a batch decided together and written in one append where the engine queues appends
# (``_batch_together``): as many transfers, two events each, as one append may hold; and how
# many times items whose appends met only conflicts are decided together again before each is
# run on its own.
TOGETHER_ITEMS = MAX_EVENTS_PER_APPEND // 2
TOGETHER_ATTEMPTS = 3


class TransferBatches(WritePath, ABC):
    """The batch commands; the service supplies the expiry of overdue pending transfers."""

    @abstractmethod
    def expire_overdue(self, stream_ids: Sequence[str]) -> int:
        """Record the expiry of each overdue pending transfer on these streams (service.py)."""

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
        commands: list[tuple[int, Command]] = []
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
        commands: list[tuple[int, Command]] = []
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

    def _expire_overdue_on(self, commands: Sequence[tuple[int, Command]]) -> None:
        """For a batch, what ``_handle`` does first for one command: the expiry of each
        overdue pending transfer on the streams it names is recorded before any is decided."""
        self.expire_overdue(list(dict.fromkeys(sid for _, c in commands for sid in c.stream_ids)))

    def _observe_transfers(self, results: Iterable[ItemResult], started: float) -> None:
        if self.observer is not None:
            elapsed_s = time.perf_counter() - started
            for result in results:
                self.observer.command_finished("transfer", _label(result), elapsed_s)

    def _batch_each(
        self, commands: list[tuple[int, Command]], *, resent: bool = True
    ) -> dict[int, ItemResult]:
        """Every item a transfer of its own, written by group commit in few transactions.

        Where the engine queues appends, the items are first decided together and written a
        chunk to an append (``_batch_together``; again, up to ``TOGETHER_ATTEMPTS`` times in
        all, while nothing but conflicts stops them). The waves below run what that leaves, or
        every item on an engine that appends at once, or when the batch was sent before.

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
            if not look_up and self._submit_append is not None:
                for _ in range(TOGETHER_ATTEMPTS):
                    todo, conflicted = self._batch_together(todo, results, collected)
                    if not conflicted:
                        break
                if not conflicted:  # a failed append may have been written: look each up
                    look_up = {index for index, _ in todo}
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

    def _batch_together(
        self,
        commands: list[tuple[int, Command]],
        results: dict[int, ItemResult],
        collected: list[RecordedEvent],
    ) -> tuple[list[tuple[int, Command]], bool]:
        """The common case of ``_batch_each`` at a fraction of its cost: the items decided in
        turn, in chunks of ``TOGETHER_ITEMS``, each chunk written in one append carrying every
        written item's command record (one waiter and one hand-off per chunk, not per item).
        An item the rules refuse is left out of its chunk; its refusal counts once the chunk
        is written, as the store then checked every state the chunk was decided on. A chunk is
        decided while the one before it is written, on the states that one leaves.

        Returns the items still to run: those of a chunk whose append failed (a conflict with
        another process, a key recorded before, the store unavailable), and from the first
        chunk that could not be submitted on (its states not the ones the chunk before it
        left, ``AwaitQueued``; or every item refused, so that nothing written would have the
        store check the refusals) those of every chunk; and whether each of them met only a
        conflict (nothing written: the caller may decide them together again, on the store's
        newer states, which a conflict has the account cache read from then on). A chunk built
        on a failed one fails too (it names the failed one's heads), so each account's items
        keep their order.
        """
        if len({command.command_id for _, command in commands}) < len(commands):
            return commands, False  # a key twice (requests run together): the second replayed
        chunks = [commands[at : at + TOGETHER_ITEMS]
                  for at in range(0, len(commands), TOGETHER_ITEMS)]  # fmt: skip
        queued: dict[str, str] = {}
        submitted: list[dict[int, EventbankError]] = []  # each chunk's refusals, by position
        conflicted = True  # so far, nothing but conflicts stopped a chunk
        settler = _Settler()
        try:
            for chunk in chunks:
                refused: dict[int, EventbankError] = {}
                try:
                    with self._stream_locks.hold(sid for _, c in chunk for sid in c.stream_ids):
                        settle = self._decide_and_submit([command for _, command in chunk],
                                                         collect=collected, queued=queued,
                                                         refused=refused)  # fmt: skip
                except (AwaitQueued, ConcurrencyConflict):
                    break
                except EventbankError:
                    conflicted = False
                    break
                settler.add(settle)
                submitted.append(refused)
        finally:
            answers = settler.finish()  # every queued append is waited for, whatever happens
        left = [item for chunk in chunks[len(submitted) :] for item in chunk]
        for chunk, refused, answer in zip(chunks, submitted, answers, strict=False):
            if isinstance(answer, ConcurrencyConflict):
                self._cache.found_stale(answer.aggregate_ids)
            if isinstance(answer, EventbankError):
                conflicted = conflicted and isinstance(answer, ConcurrencyConflict)
                left += chunk
                continue
            if isinstance(answer, BaseException):
                raise answer
            receipts = iter(answer)
            for position, (index, command) in enumerate(chunk):
                if position not in refused:
                    outcome = next(receipts).outcome
                    results[index] = ItemResult(index, command.command_id, "ok", outcome)
                elif not self._answer_from_first_run(index, command, results):
                    results[index] = _refused(index, command, refused[position])
        return sorted(left, key=lambda item: item[0]), bool(left) and conflicted

    def _wave(
        self,
        todo: list[tuple[int, Command]],
        results: dict[int, ItemResult],
        look_up: set[int],
        collected: list[RecordedEvent],
    ) -> tuple[list[tuple[int, Command, EventbankError | None]], bool]:
        """One wave of ``_batch_each``: the items for the next one (with the error of the
        attempt that failed, None if put off), and whether any attempt failed."""
        later: list[tuple[int, Command, EventbankError | None]] = []
        put_off: set[str] = set()  # streams of the items for the next wave
        queued: dict[str, str] = {}  # head hash of each stream's last append queued in this wave
        last_queued: dict[str, int] = {}  # and the index of the item that queued it
        # refusals on queued states, and the items whose appends they count on
        refused_on: list[tuple[int, Command, EventbankError, set[int]]] = []
        waiting: list[tuple[int, Command]] = []
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
                except AwaitQueued:
                    later.append((index, command, None))
                    put_off.update(command.stream_ids)
                    continue
                except RefusedOnQueued as refusal:
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
            if isinstance(answer, list):
                results[index] = ItemResult(index, command.command_id, "ok", answer[0].outcome)
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
        todo: list[tuple[int, Command]],
        results: dict[int, ItemResult],
        look_up: set[int],
        collected: list[RecordedEvent],
    ) -> tuple[list[tuple[int, Command, EventbankError | None]], bool]:
        """``_wave`` for an engine that appends at once (DynamoDB: no group commit to queue
        in): up to ``PARALLEL_ITEMS`` items at a time, each in a thread of a pool as one
        command. An item starts once the items before it on its accounts are answered, so they
        keep their order; one put off or failed puts off the items after it on its accounts."""
        later: list[tuple[int, Command, EventbankError | None]] = []
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
        self, index: int, command: Command, look_up: bool, collected: list[RecordedEvent]
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
        self, index: int, command: Command, results: dict[int, ItemResult]
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

    def _batch_atomic(self, commands: list[tuple[int, Command]]) -> dict[int, ItemResult]:
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


def transfer_parts(
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
               **metadata_of(meta)}  # fmt: skip

    def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
        source = domain.require_open(states[from_id], from_id)
        money = parse_amount(amount, source.currency)
        return list(domain.decide_transfer(
            states[from_id], states.get(to_id), from_id=from_id, to_id=to_id, amount=money,
            transfer_id=transfer_id, now=now(), metadata=meta,
        ))  # fmt: skip

    def outcome(after: Mapping[str, Account], events: list[AccountEvent]) -> dict[str, Any]:
        return {"kind": "transfer", "transfer_id": transfer_id, **amount_of(events[0]),
                **metadata_of(meta),
                "from": after[from_id].describe(), "to": after[to_id].describe()}  # fmt: skip

    streams = [from_id] if from_id == to_id else [from_id, to_id]
    return request, streams, decide, outcome


def _batch_command(
    item: BatchItem, index: int, first_with_key: dict[str, int], now: Callable[[], str]
) -> Command:
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
) -> Command:
    """The transfer ``item`` asks for, as a command under its key (a new one when it has none
    and none is required); refused (raised) if malformed."""
    request, streams, decide, describe = transfer_parts(
        item.from_account_id, item.to_account_id, item.amount, now, item.metadata
    )
    key = item.idempotency_key
    if not key and key_required:
        raise InvalidInput(MISSING_KEY)
    command_id = check_command_id(key) if key else new_id()
    return Command(command_id, fingerprint(request), streams, decide, describe, item.actor)


def _receipt_of(result: ItemResult) -> Receipt | EventbankError:
    """A batch item's result as a single command's: its receipt, or its error."""
    if result.error is not None:
        return result.error
    outcome = cast("Mapping[str, Any]", result.outcome)
    return Receipt(cast(str, result.idempotency_key), outcome, result.status == "replayed")


def _noting_refusal(index: int, command: Command, refused_by: list[int]) -> Command:
    """``command``, noting its batch index in ``refused_by`` when its rules refuse it."""

    def decide(states: Mapping[str, Account | None]) -> list[AccountEvent]:
        try:
            return command.decide(states)
        except (RuleViolation, InvalidInput):
            refused_by[0] = index
            raise

    return dataclasses.replace(command, decide=decide)


def _refused(index: int, command: Command, error: EventbankError) -> ItemResult:
    return ItemResult(index, command.command_id, "refused", error=error)


def _aborted(
    commands: Sequence[tuple[int, Command]], refused: int, why: EventbankError | None
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
        self.answers: list[list[Receipt] | BaseException] = []
        self._pending: queue.SimpleQueue[Callable[[], list[Receipt]] | None] = queue.SimpleQueue()
        self._running: Future[None] | None = None

    def add(self, settle: Callable[[], list[Receipt]]) -> None:
        if self._running is None:
            self._running = _SETTLER_THREADS.submit(contextvars.Context().run, self._run)
        self._pending.put(settle)

    def finish(self) -> list[list[Receipt] | BaseException]:
        if self._running is not None:
            self._pending.put(None)
            self._running.result()
        return self.answers

    def _run(self) -> None:
        while (settle := self._pending.get()) is not None:
            try:
                self.answers.append(settle())
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
