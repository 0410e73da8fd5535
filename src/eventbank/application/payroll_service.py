"""Payroll: pay many employees from one account as a saga that survives any crash.

``start`` validates every line before any money moves (malformed lines, unknown or closed
accounts, currency mismatches, duplicate lines, insufficient total funds — all reported
together, line by line) and records the saga. ``run`` pays the pending lines, one transfer each
with command ids ``<saga>:pay:<line>``, ``record_every`` lines per atomic batch (one commit
for them all), recording outcomes every ``record_every`` lines; under
``all-or-nothing`` a failure compensates every paid line with reverse transfers
(``<saga>:undo:<line>``). A process killed anywhere is finished by ``resume_all``: a line paid
but not yet recorded is re-run, and its command id makes the transfer answer from its first
run, so nobody is paid twice and nobody is skipped. ``page`` lists payrolls newest first from
the same registry ``resume_all`` reads, a bounded window per call.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventbank.application.batch import BatchItem
from eventbank.application.ids import new_id
from eventbank.application.projections.accounts import NAME as ACCOUNTS
from eventbank.application.service import LedgerService
from eventbank.application.transfer_search import InvalidCursor, InvalidLimit
from eventbank.application.write_path import IdempotencyKeyReused, current_actor
from eventbank.domain import payroll as saga
from eventbank.domain.account import AccountStatus, check_account_id
from eventbank.domain.canonical import canonical_json
from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import (
    AccountNotFound,
    Conflict,
    EventbankError,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from eventbank.domain.json_input import MalformedJson, loads_without_duplicates
from eventbank.domain.money import Money, format_minor, format_money, parse_amount
from eventbank.domain.payroll import Payroll, PayrollLine
from eventbank.ports.event_store import (
    GENESIS_HASH,
    BatchTooLarge,
    ConcurrencyConflict,
    EventStore,
    NewEvent,
    RecordedEvent,
    chained,
    stream_head,
)
from eventbank.ports.read_store import BalanceRow, ReadStore

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (lines with an outcome, all lines)
# Attempts before a write that keeps meeting concurrent writes gives up with PayrollConflict.
START_ATTEMPTS = 5
RECORD_ATTEMPTS = 20
LIST_DEFAULT, LIST_MAX = 20, 100  # payrolls per page (``page``)
LIST_SCAN = 1_000  # registry events one ``page`` reads at most: bounded whatever the store
LIST_CHUNK = 250  # registry events per further read while a page is not full


class PayrollRejected(InvalidInput):
    code = "payroll_rejected"

    def __init__(self, problems: list[dict[str, Any]]):
        self.problems = problems
        shown = "; ".join(f"line {p['line'] or '-'}: {p['problem']}" for p in problems[:20])
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        super().__init__(f"payroll refused, nothing was paid: {shown}{more}")


class PayrollNotFound(NotFound):
    code = "payroll_not_found"


class PayrollConflict(Conflict):
    code = "payroll_conflict"


@dataclass(frozen=True, slots=True)
class _Tracked:
    """A saga as this process last saw it: its state, its stream's head hash, and who started
    it. A run keeps it in memory and extends it with what it appends; the stream is read again
    (only past ``state.version``) when an append finds that another process wrote first."""

    state: Payroll
    head: str
    started_by: str | None

    def extended(self, events: Sequence[RecordedEvent]) -> _Tracked:
        state, head = self.state, self.head
        for event in events:
            state, head = saga.apply(state, event.event_type, dict(event.data)), event.hash
        return _Tracked(state, head, self.started_by)


@dataclass(frozen=True, slots=True)
class RawLine:
    line_no: int
    account_id: str
    amount: Any
    reference: str


def parse_lines(text: str, fmt: str = "csv") -> tuple[list[RawLine], list[dict[str, Any]]]:
    """Lines of ``account_id,amount,reference`` (CSV, header optional) or JSON objects (jsonl)."""
    rows: list[RawLine] = []
    problems: list[dict[str, Any]] = []
    if fmt == "csv":
        for line_no, fields in enumerate(_csv_records(text, problems), start=1):
            if not fields or not "".join(fields).strip():
                continue
            cells = [f.strip() for f in fields]
            if line_no == 1 and [c.lower() for c in cells[:2]] == ["account_id", "amount"]:
                continue
            if len(cells) not in (2, 3):
                problems.append(
                    {"line": line_no, "problem": "expected account_id,amount,reference"}
                )
                continue
            rows.append(RawLine(line_no, cells[0], cells[1], cells[2] if len(cells) == 3 else ""))
    elif fmt == "jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = loads_without_duplicates(line)
                rows.append(RawLine(line_no, obj["account_id"], obj["amount"],
                                    str(obj.get("reference", ""))))  # fmt: skip
            except MalformedJson as exc:  # e.g. two amounts: which one would be paid?
                problems.append({"line": line_no, "problem": str(exc)})
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
                problems.append({"line": line_no, "problem": "expected a JSON object with "
                                 "account_id, amount and reference"})  # fmt: skip
    else:
        raise InvalidInput(f"format must be csv or jsonl, not {fmt!r}")
    return rows, problems


def _csv_records(text: str, problems: list[dict[str, Any]]) -> Iterator[list[str]]:
    """CSV records; a lone CR ends a line too (newline=""), and what the csv module cannot
    read (e.g. a field over its size limit) is reported as a problem, not raised."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from reader
    except csv.Error as exc:
        problems.append({"line": reader.line_num, "problem": f"not valid CSV: {exc}"})


def _checksum(lines: list[tuple[str, int, str]]) -> str:
    """sha256 of the payroll's content (account, amount in minor units, reference per line)."""
    return hashlib.sha256(canonical_json([list(line) for line in lines]).encode()).hexdigest()


def _checksum_of_text(text: str, fmt: str, currency: str) -> str | None:
    """The checksum ``text`` would have, or None if it does not even parse."""
    rows, problems = parse_lines(text, fmt)
    try:
        amounts = [parse_amount(r.amount, currency).amount_minor for r in rows]
    except EventbankError:
        return None
    if problems:
        return None
    return _checksum([(r.account_id, a, r.reference) for r, a in zip(rows, amounts, strict=True)])


def saga_id_for(idempotency_key: str | None) -> str:
    """The saga ``start`` records for a key (a fresh one without a key)."""
    if idempotency_key:
        return "payroll#" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return "payroll#" + uuid.uuid4().hex


class PayrollService:
    """``reads``: the read model the start's checks read every line's account from at once
    (``_account_states``); without it each account is loaded from the events in turn."""

    def __init__(
        self, ledger: LedgerService, *, reads: ReadStore | None = None, record_every: int = 25
    ):
        self.ledger = ledger
        self.reads = reads
        self.events: EventStore = ledger.store
        self.record_every = record_every
        # The registry as last read (see ``unfinished``): its version and the open sagas.
        self._registry_lock = threading.Lock()
        self._registry_version = 0
        self._open_sagas: dict[str, None] = {}

    # ------------------------------------------------------------ start

    def start(
        self,
        employer_id: str,
        text: str,
        *,
        fmt: str = "csv",
        policy: str = "all-or-nothing",
        idempotency_key: str | None = None,
        saga_id: str | None = None,
    ) -> Payroll:
        """Validate every line and record the saga; nothing is paid yet (see ``run``).

        The same key started concurrently is answered like a retry. A store that keeps
        reporting concurrent writes is given ``START_ATTEMPTS``, then ``PayrollConflict``.
        ``saga_id``: what ``saga_id_for(idempotency_key)`` gave the caller, for a caller that
        needs the id before the saga is recorded (the HTTP layer, to keep resumes off it)."""
        saga.check_policy(policy)
        saga_id = saga_id or saga_id_for(idempotency_key)
        validated: tuple[list[PayrollLine], str] | None = None
        for _ in range(START_ATTEMPTS):
            existing = self.load(saga_id) if idempotency_key else None
            if existing is not None:  # a retry: answer with the first run, before re-validating
                if (existing.employer_id, existing.policy, existing.checksum) != (
                    employer_id, policy, _checksum_of_text(text, fmt, existing.currency)
                ):  # fmt: skip
                    raise IdempotencyKeyReused(
                        f"idempotency key {idempotency_key!r} started a different payroll"
                    )
                return existing
            lines, currency = validated = validated or self._validated(employer_id, text, fmt)
            checksum = _checksum([(ln.account_id, ln.amount_minor, ln.reference) for ln in lines])
            payroll = Payroll(saga_id, employer_id, currency, policy, checksum, len(lines),
                              sum(ln.amount_minor for ln in lines))  # fmt: skip
            chunks = [lines[i : i + saga.LINES_PER_EVENT]
                      for i in range(0, len(lines), saga.LINES_PER_EVENT)]  # fmt: skip
            try:
                self._append(saga_id, [saga.started(payroll), *map(saga.lines_recorded, chunks)],
                             registry=("PayrollRegistered", {"saga_id": saga_id}))  # fmt: skip
            except ConcurrencyConflict:  # e.g. the same key, started concurrently: look again
                continue
            return self.status(saga_id)
        raise PayrollConflict(
            f"payroll {saga_id} was not recorded: the store reported a concurrent write "
            f"{START_ATTEMPTS} times in a row; nothing was paid, retry later"
            + (" with the same idempotency key" if idempotency_key else "")
        )

    def _validated(self, employer_id: str, text: str, fmt: str) -> tuple[list[PayrollLine], str]:
        rows, problems = parse_lines(text, fmt)
        employer = self.ledger.get_account(employer_id)
        if employer.status is not AccountStatus.OPEN:
            raise RuleViolation(
                f"employer account {employer_id!r} is {str(employer.status).lower()}"
            )
        if len(rows) + len(problems) > saga.MAX_LINES:
            raise InvalidInput(f"a payroll has at most {saga.MAX_LINES} lines; split the file")
        if not rows and not problems:
            raise InvalidInput("the payroll has no lines")
        readable: list[tuple[RawLine, str, Money]] = []  # the lines whose own fields pass
        for row in rows:
            try:
                account_id = check_account_id(row.account_id)
                amount = parse_amount(row.amount, employer.currency)
                if account_id == employer_id:
                    raise InvalidInput("the employer cannot pay itself")
                readable.append((row, account_id, amount))
            except EventbankError as exc:
                problems.append({"line": row.line_no, "problem": str(exc)})
        states = self._account_states([a for _, a, _ in readable], employer.currency)
        lines: list[saga.PayrollLine] = []
        seen: dict[tuple[str, str], int] = {}
        for row, account_id, amount in readable:
            try:
                if account_id not in states:
                    raise AccountNotFound(f"account {account_id!r} does not exist")
                status, currency = states[account_id]
                if status == AccountStatus.CLOSED:
                    raise RuleViolation(f"account {account_id!r} is closed")
                if currency != employer.currency:
                    raise RuleViolation(f"account {account_id!r} holds {currency}, "
                                        f"the employer pays {employer.currency}")  # fmt: skip
                if (account_id, row.reference) in seen:
                    raise InvalidInput(f"duplicate of line {seen[(account_id, row.reference)]} "
                                       "(same account and reference)")  # fmt: skip
            except EventbankError as exc:
                problems.append({"line": row.line_no, "problem": str(exc)})
                continue
            seen[(account_id, row.reference)] = row.line_no
            lines.append(PayrollLine(row.line_no, account_id, amount.amount_minor, row.reference))
        total = sum(ln.amount_minor for ln in lines)
        if total > employer.available_minor:
            currency = employer.currency
            problems.append({"line": None, "problem":
                             f"insufficient funds: the payroll totals "
                             f"{format_money(total, currency)}, {employer_id!r} has "
                             f"{format_money(employer.available_minor, currency)} "
                             "available"})  # fmt: skip
        if problems:
            raise PayrollRejected(sorted(problems, key=lambda p: p["line"] or 0))
        return lines, employer.currency

    def _account_states(
        self, account_ids: Sequence[str], currency: str
    ) -> dict[str, tuple[str, str]]:
        """Each existing account's status and currency, for the start's checks: from the read
        model, all in one read, where it shows the account open or frozen in ``currency`` and
        its projection is not parked (a parked stream's row stays behind its events until the
        retry); from the events (as ``get_account``) otherwise, so a read model that lags, or
        fails, never refuses a line. An account the read model still shows open a moment after
        it was closed is refused when its transfer runs, as one closed after the start is."""
        ids = list(dict.fromkeys(account_ids))
        shown: dict[str, BalanceRow] = {}
        if self.reads is not None:
            try:
                parked = {failure.aggregate_id for failure in self.reads.failures(ACCOUNTS)}
                shown = {account_id: row for account_id, row in self.reads.balances(ids).items()
                         if account_id not in parked}  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a shortcut only: the events decide
                log.warning("payroll start: read model unavailable (%s); loading accounts", exc)
        states = {account_id: (row.status, row.currency) for account_id, row in shown.items()
                  if row.status != AccountStatus.CLOSED and row.currency == currency}  # fmt: skip
        for account_id in ids:
            if account_id not in states and (found := self.ledger.load_account(account_id)):
                states[account_id] = (found.status, found.currency)
        return states

    # ------------------------------------------------------------ run and resume

    def run(self, saga_id: str, on_progress: Progress | None = None) -> Payroll:
        """Pay (and, if the policy says so, compensate) until the saga is finished.

        The saga's state is kept in memory while it runs, so recording outcomes costs one
        append, not a read of the saga's stream. Its transfers and events are recorded as done
        by whoever started the payroll (the ``actor`` of its first event), whoever runs it.
        """
        tracked = self._open(saga_id)
        actor = current_actor.set(tracked.started_by) if tracked.started_by else None
        try:
            return self._run(tracked, on_progress).state
        finally:
            if actor is not None:
                current_actor.reset(actor)

    def _run(self, tracked: _Tracked, on_progress: Progress | None) -> _Tracked:
        if tracked.state.status == "running":
            stop_on_failure = tracked.state.policy == "all-or-nothing"
            tracked = self._steps(tracked, "pay", stop_on_failure, on_progress)
        if tracked.state.status == "compensating":
            tracked = self._steps(tracked, "undo", False, on_progress)
        if not tracked.state.finished:
            status = tracked.state.finish_status()
            saga_id = tracked.state.saga_id
            closing = ("PayrollClosed", {"saga_id": saga_id, "status": status})
            try:
                appended = self._append(saga_id, [saga.finished(status, tracked.state)],
                                        registry=closing, known=tracked)  # fmt: skip
            except ConcurrencyConflict:  # another resumer wrote first (and finishes it)
                return self._catch_up(tracked)
            tracked = tracked.extended(appended)
        return tracked

    def _steps(
        self, tracked: _Tracked, step: str, stop_on_failure: bool, on_progress: Progress | None
    ) -> _Tracked:
        """Run each outstanding ``pay`` (employer -> line) or ``undo`` (line -> employer)
        transfer, ``record_every`` lines per atomic batch (``_transfers``), recording outcomes
        every ``record_every`` lines and at a stopping failure. A batch too large for one
        append on this engine (DynamoDB's 100 transaction items) shrinks to the lines that fit
        (``BatchTooLarge.fitting``: 16 of 25 on DynamoDB), and the rest of the run goes in
        batches of that size."""
        payroll = tracked.state
        lines = payroll.pending if step == "pay" else payroll.to_compensate
        record = saga.payments_recorded if step == "pay" else saga.compensations_recorded
        outcomes: list[list[Any]] = []
        size, start = self.record_every, 0
        while start < len(lines):
            part = lines[start : start + size]
            try:
                outcomes += self._transfers(payroll, step, part, stop_on_failure)
            except BatchTooLarge as exc:
                size = exc.fitting(len(part))
                continue
            start += len(part)
            stop = stop_on_failure and outcomes[-1][1] == "failed"
            if stop or len(outcomes) >= self.record_every:
                tracked = self._record(tracked, record(outcomes), on_progress)
                outcomes = []
            if stop:
                break
        if outcomes:
            tracked = self._record(tracked, record(outcomes), on_progress)
        return tracked

    def _transfers(
        self, payroll: Payroll, step: str, lines: Sequence[PayrollLine], stop_on_failure: bool
    ) -> list[list[Any]]:
        """Each line's ``[line_no, outcome, transfer id or why it failed]`` for these lines'
        transfers, with command ids ``<saga>:<step>:<line>``. Several lines go in one atomic
        batch: one append and one commit for all of them, where one transfer each waited for a
        commit of its own. If a line is refused (a rule; on ``undo``, say, the employee spent
        it), the batch moved nothing, and its lines are run again one transfer each, so every
        line has the outcome it has alone; with ``stop_on_failure``, none after the first
        refused. A line done before (the run resumed after a crash) answers from its first run,
        in a batch as alone, so nobody is paid twice."""
        paying = step == "pay"
        done = "paid" if paying else "compensated"
        items = []
        for line in lines:
            source, target = (payroll.employer_id, line.account_id)[:: 1 if paying else -1]
            amount = format_minor(line.amount_minor, payroll.currency)
            key = f"{payroll.saga_id}:{step}:{line.line_no}"
            items.append(BatchItem(source, target, amount, idempotency_key=key))
        if len(items) > 1:
            results = self.ledger.transfer_batch(items, atomic=True)
            moved = [result.outcome for result in results if result.outcome is not None]
            if len(moved) == len(lines):
                return [[line.line_no, done, outcome["transfer_id"]]
                        for line, outcome in zip(lines, moved, strict=True)]  # fmt: skip
        outcomes: list[list[Any]] = []
        for line, item in zip(lines, items, strict=True):
            try:
                receipt = self.ledger.transfer(
                    item.from_account_id,
                    item.to_account_id,
                    item.amount,
                    command_id=item.idempotency_key,
                )
                outcomes.append([line.line_no, done, receipt.outcome["transfer_id"]])
            except RuleViolation as exc:
                outcomes.append([line.line_no, "failed", f"{exc.code}: {exc}"])
                if stop_on_failure:
                    break
        return outcomes

    def unfinished(self) -> list[str]:
        """The ids of the sagas started and never closed, oldest first. The registry is read
        from where this service last read it, so asking again costs only what is new."""
        with self._registry_lock:
            for event in self.events.read_stream(saga.REGISTRY, self._registry_version):
                if event.event_type == "PayrollRegistered":
                    self._open_sagas[event.data["saga_id"]] = None
                else:
                    self._open_sagas.pop(event.data["saga_id"], None)
                self._registry_version = event.version
            return list(self._open_sagas)

    def resume_all(self, on_progress: Progress | None = None) -> list[Payroll]:
        """Finish or compensate every saga that was started and never closed."""
        return [self.run(saga_id, on_progress) for saga_id in self.unfinished()]

    # ------------------------------------------------------------ list

    def page(
        self, after: str | None = None, limit: int | str = LIST_DEFAULT
    ) -> tuple[list[Listed], str | None]:
        """Payrolls newest first, at most ``limit`` (1 to ``LIST_MAX``), and the cursor of the
        next page (None: no older payroll). The registry stream is the index: its versions
        number registrations in start order with no gaps, so windows below the cursor (a
        registry version) are indexed range reads on every engine. A call reads at most
        ``LIST_SCAN`` registry events (closings sit between registrations, so a page may be
        short and still have a ``next``) and the streams of the payrolls it returns."""
        size = _page_size(limit)
        head = stream_head(self.events, saga.REGISTRY)
        top = head.version + 1 if head else 1
        if after:
            top = min(top, _cursor_version(after))
        found: list[Listed] = []
        budget, step = LIST_SCAN, 2 * size + 2  # a registration and a closing per payroll
        while top > 1 and budget > 0 and len(found) < size:
            take = min(top - 1, budget, step)
            window = self.events.read_stream(saga.REGISTRY, top - 1 - take, limit=take)
            budget, step = budget - take, LIST_CHUNK
            for event in reversed(window):
                top = event.version
                if event.event_type == "PayrollRegistered" and (
                    tracked := self._read(event.data["saga_id"])
                ):
                    found.append(Listed(tracked.state, _started_at(event), tracked.started_by))
                    if len(found) == size:
                        break
        # Registry version 1 is a registration, so one below ``top`` is left iff top > 1.
        return found, _encode_cursor(top) if top > 1 else None

    # ------------------------------------------------------------ state

    def load(self, saga_id: str) -> Payroll | None:
        tracked = self._read(saga_id)
        return tracked.state if tracked is not None else None

    def status(self, saga_id: str) -> Payroll:
        """The saga, by its id with or without the ``payroll#`` prefix."""
        return self._open(saga_id).state

    def _open(self, saga_id: str) -> _Tracked:
        stream = saga_id if saga_id.startswith("payroll#") else f"payroll#{saga_id}"
        if not stream[len("payroll#") :].isalnum() or (tracked := self._read(stream)) is None:
            raise PayrollNotFound(f"payroll {saga_id!r} does not exist")
        return tracked

    def _read(self, saga_id: str) -> _Tracked | None:
        """The saga folded from its whole stream, or None if it was never started."""
        events = self.events.read_stream(saga_id)
        if not events:
            return None
        first = events[0]
        actor = first.metadata.get("actor")
        started = _Tracked(saga.apply(None, first.event_type, dict(first.data)), first.hash,
                           str(actor) if actor else None)  # fmt: skip
        return started.extended(events[1:])

    def _catch_up(self, tracked: _Tracked) -> _Tracked:
        """``tracked`` with the events others appended since: only those are read."""
        return tracked.extended(self.events.read_stream(tracked.state.saga_id,
                                                        tracked.state.version))  # fmt: skip

    def _record(
        self, tracked: _Tracked, event: tuple[str, dict[str, Any]], on_progress: Progress | None
    ) -> _Tracked:
        """Record step outcomes. If another process recorded some first (two resumers), keep
        only the lines still without an outcome: their transfers were idempotent anyway."""
        event_type, data = event
        for _ in range(RECORD_ATTEMPTS):
            if not data["outcomes"]:
                break
            try:
                tracked = tracked.extended(
                    self._append(tracked.state.saga_id, [(event_type, data)], known=tracked)
                )
                break
            except ConcurrencyConflict:
                tracked = self._catch_up(tracked)
                payroll = tracked.state
                known = (
                    (payroll.paid | payroll.failed)
                    if event_type == "PaymentsRecorded"
                    else (payroll.compensated | payroll.compensation_failed)
                )
                data = {"outcomes": [o for o in data["outcomes"] if o[0] not in known]}
        else:
            raise PayrollConflict(
                f"payroll {tracked.state.saga_id}: outcomes not recorded after "
                f"{RECORD_ATTEMPTS} concurrent writes; its transfers are idempotent, resume it"
            )
        if on_progress is not None:
            on_progress(len(tracked.state.paid) + len(tracked.state.failed),
                        tracked.state.line_count)  # fmt: skip
        return tracked

    def _append(
        self,
        saga_id: str,
        events: list[tuple[str, dict[str, Any]]],
        registry: tuple[str, dict[str, Any]] | None = None,
        known: _Tracked | None = None,
    ) -> list[RecordedEvent]:
        """Append saga events (and a registry entry, atomically) chained onto each stream's head,
        and return the saga's events as recorded. ``known``: the saga as last seen, whose
        stream is then not read to learn its head.

        A concurrent writer on the registry is retried; one on the saga stream itself means
        another process is running this saga, which the caller must not race: it is refused.
        """
        recorded_at = self.ledger.clock().isoformat()  # as account events have it
        for _ in range(20):
            streams = {saga_id: events} | ({saga.REGISTRY: [registry]} if registry else {})
            heads, expected, new = {}, {}, []
            for stream, items in streams.items():
                if stream == saga_id and known is not None:
                    heads[stream], expected[stream] = known.head, known.state.version
                else:
                    stored = self.events.read_stream(stream)
                    heads[stream] = stored[-1].hash if stored else GENESIS_HASH
                    expected[stream] = len(stored)
                aggregate_type = "PayrollRegistry" if stream == saga.REGISTRY else saga.PAYROLL
                for offset, (event_type, data) in enumerate(items, start=1):
                    new.append(NewEvent(
                        new_id(), stream, aggregate_type, expected[stream] + offset,
                        event_type, 1, data, {"actor": current_actor.get(), "saga_id": saga_id,
                                              "recorded_at": recorded_at},
                    ))  # fmt: skip
            try:
                recorded = self.events.append(chained(new, heads), expected)
            except ConcurrencyConflict as exc:
                if saga_id in exc.aggregate_ids:
                    raise
                continue
            return [event for event in recorded if event.aggregate_id == saga_id]
        raise ConcurrencyConflict([saga.REGISTRY])


@dataclass(frozen=True, slots=True)
class Listed:
    """A payroll as ``page`` lists it: its state, when and by whom it was started."""

    payroll: Payroll
    started_at: str | None
    started_by: str | None

    def summary(self) -> dict[str, Any]:
        return self.payroll.summary() | {"started_at": self.started_at,
                                         "started_by": self.started_by}  # fmt: skip


def _page_size(limit: int | str) -> int:
    """An integer from 1 to ``LIST_MAX`` (decimal text too, as a query string has it)."""
    if isinstance(limit, str) and re.fullmatch(r"\d{1,4}", limit):
        limit = int(limit)
    if type(limit) is not int or not 1 <= limit <= LIST_MAX:
        raise InvalidLimit(f"limit must be an integer from 1 to {LIST_MAX}, not {limit!r}")
    return limit


def _encode_cursor(version: int) -> str:
    """An opaque cursor: the registry version the next page lies below."""
    return base64.urlsafe_b64encode(f"[{version}]".encode()).decode().rstrip("=")


def _cursor_version(cursor: str) -> int:
    refused = InvalidCursor("after is not a cursor a previous page returned")
    if len(cursor) > 64 or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise refused
    try:
        (version,) = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    if type(version) is not int or not 1 <= version <= 2**62:
        raise refused
    return version


def _started_at(registered: RecordedEvent) -> str | None:
    """When the payroll was registered, as RFC 3339 UTC: its ``recorded_at``, or, for one
    recorded before payroll events had it, the time in its event id (a UUIDv7)."""
    try:
        if isinstance(text := registered.metadata.get("recorded_at"), str):
            moment = datetime.fromisoformat(text)
        elif (event_id := uuid.UUID(registered.event_id)).version == 7:
            moment = datetime.fromtimestamp((event_id.int >> 80) / 1000, UTC)
        else:
            return None
    except ValueError:
        return None
    return utc_text(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
