"""``eventbank audit``: prove the books from the events themselves.

Three checks, each finding naming the stream, version and kind of break:

1. Integrity: every stream's versions run 1, 2, 3 … without gaps, and every stored hash equals
   ``chain_hash(previous hash, event)`` — a changed, removed, reordered or forged event breaks it.
2. Conservation: per currency, the sum of all balances equals external deposits minus external
   withdrawals; every transfer id has exactly one debit and one credit of equal amount; no
   account's available amount is ever below minus its overdraft limit. Pending transfers: each
   is placed once on each side, alike, and closed at most once on each side, after it was
   placed, with one outcome; per currency the pending debits, the pending credits and the open
   pending transfers sum alike. Journal: each transaction's legs balance, in one currency;
   each reversal moved what it recorded, and no original is reversed by more than it moved.
3. Read models: every projected row, movement and total equals a replay of the events.

What the chain does not do on its own: someone able to rewrite the *whole* store can recompute
every hash. The head hashes (``digest()``) close that gap once published somewhere the ledger's
operators cannot rewrite: ``verify_digest`` checks the store still contains each published head,
which pins every event before it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventbank.application.ids import new_id
from eventbank.application.projections import accounts
from eventbank.application.write_path import current_actor
from eventbank.domain import account as domain
from eventbank.domain.canonical import canonical_json
from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import Conflict
from eventbank.domain.events import (
    ACCOUNT,
    HoldPlaced,
    HoldReleased,
    LegPosted,
    ReversalRecorded,
    TransferredIn,
    TransferredOut,
    event_from_data,
)
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import (
    GENESIS_HASH,
    ConcurrencyConflict,
    EventStore,
    NewEvent,
    RecordedEvent,
    chain_hash,
    chained,
    stream_head,
)
from eventbank.ports.read_store import ReadStore

AUDIT_STREAM = "audit#trail"  # "#" never appears in an account id, so no account collides
AUDIT_TYPE = "Audit"
RECORD_ATTEMPTS = 10  # appends tried by ``Auditor.record`` before it gives up
_STREAM_PAGE = 1000


class AuditNotRecorded(ConcurrencyConflict):
    """The audit ran but its record lost every race for the audit trail's head."""

    code = "audit_not_recorded"

    def __init__(self, attempts: int):
        self.aggregate_ids = (AUDIT_STREAM,)
        Conflict.__init__(
            self,
            f"the audit ran but was not recorded: {AUDIT_STREAM} changed concurrently on each of "
            f"{attempts} attempts; run the audit again",
        )


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # version_gap | chain_break | unreadable_event | negative_balance |
    #            transfer_unbalanced | hold_unbalanced | hold_closed_twice | holds_unbalanced |
    #            conservation_break | read_model_mismatch | digest_mismatch |
    #            transaction_unbalanced | reversal_unbalanced | reversal_exceeds_original
    stream: str | None
    version: int | None
    detail: str


@dataclass
class CurrencyBooks:
    balances_minor: int = 0
    deposits_minor: int = 0
    withdrawals_minor: int = 0
    pending_debits_minor: int = 0  # the accounts' totals, as their last events leave them
    pending_credits_minor: int = 0


@dataclass
class AuditReport:
    streams: int = 0
    events: int = 0
    findings: list[Finding] = field(default_factory=list)
    books: dict[str, CurrencyBooks] = field(default_factory=dict)
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def digest(self) -> str:
        return digest_of(self.heads)

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "streams": self.streams,
            "events": self.events,
            "findings": [vars_of(f) for f in self.findings],
            "books": {
                c: {
                    "balances": format_minor(b.balances_minor, c),
                    "deposits": format_minor(b.deposits_minor, c),
                    "withdrawals": format_minor(b.withdrawals_minor, c),
                }
                for c, b in sorted(self.books.items())
            },  # fmt: skip
            "digest": self.digest,
        }


def vars_of(finding: Finding) -> dict[str, Any]:
    return {"kind": finding.kind, "stream": finding.stream, "version": finding.version,
            "detail": finding.detail}  # fmt: skip


def digest_of(heads: Mapping[str, Mapping[str, Any]]) -> str:
    """One sha256 over every stream's head (version and hash): publish it to pin the store."""
    return hashlib.sha256(canonical_json(dict(sorted(heads.items()))).encode()).hexdigest()


def stream_ids(events: EventStore) -> list[str]:
    """Every stream in the store, in the store's order, listed by the store itself (not from
    the feed: DynamoDB's holds 24 hours, and an audit must cover every stream ever written)."""
    found: list[str] = []
    while page := events.stream_ids(found[-1] if found else "", _STREAM_PAGE):
        found += page
        if len(page) < _STREAM_PAGE:
            break
    return found


class Auditor:
    def __init__(self, events: EventStore, reads: ReadStore | None = None):
        self.events, self.reads = events, reads

    def run(
        self,
        streams: list[str] | None = None,
        on_stream: Callable[[str], None] | None = None,
    ) -> AuditReport:
        """Audit ``streams`` (default: every stream in the store), calling ``on_stream`` after
        each so a caller can show progress."""
        report = AuditReport()
        transfers: dict[str, list[tuple[str, RecordedEvent, int, str]]] = defaultdict(list)
        holds: dict[str, list[tuple[HoldPlaced | HoldReleased, RecordedEvent]]] = defaultdict(list)
        journal = _Journal()
        replayed: dict[str, tuple[Any, list[Any]]] = {}
        for stream in streams if streams is not None else stream_ids(self.events):
            stored = self.events.read_stream(stream)
            report.streams += 1
            report.events += len(stored)
            if stored:
                report.heads[stream] = {"version": stored[-1].version, "hash": stored[-1].hash}
            report.findings.extend(_integrity(stream, stored))
            if stored and stored[0].aggregate_type == ACCOUNT:
                report.findings.extend(
                    self._books(stream, stored, report, transfers, holds, journal)
                )
                if self.reads is not None:
                    replayed[stream] = _safe_replay(stored)
            if on_stream is not None:
                on_stream(stream)
        report.findings.extend(_transfer_findings(transfers))
        report.findings.extend(_hold_findings(holds, report.books))
        report.findings.extend(journal.findings(transfers))
        report.findings.extend(_conservation_findings(report.books))
        if self.reads is not None:
            report.findings.extend(_read_model_findings(self.reads, replayed))
        return report

    def _books(
        self,
        stream: str,
        stored: list[RecordedEvent],
        report: AuditReport,
        transfers: dict[str, list[tuple[str, RecordedEvent, int, str]]],
        holds: dict[str, list[tuple[HoldPlaced | HoldReleased, RecordedEvent]]],
        journal: _Journal,
    ) -> Iterator[Finding]:
        state = None
        for event in stored:
            try:
                fact = event_from_data(event.event_type, dict(event.data), event.schema_version)
                state = domain.apply(state, fact)
            except Exception as exc:  # noqa: BLE001 - any undecodable event is a finding
                yield Finding("unreadable_event", stream, event.version, f"{exc}")
                return
            books = report.books.setdefault(state.currency, CurrencyBooks())
            amount = getattr(fact, "amount_minor", 0)
            if event.event_type == "FundsDeposited":
                books.deposits_minor += amount
            elif event.event_type == "FundsWithdrawn":
                books.withdrawals_minor += amount
            elif isinstance(fact, TransferredOut | TransferredIn):
                transfers[fact.transfer_id].append(
                    (event.event_type, event, amount, state.currency)
                )
            elif isinstance(fact, HoldPlaced | HoldReleased):
                holds[fact.transfer_id].append((fact, event))
            elif isinstance(fact, LegPosted):
                journal.legs[fact.transaction_id].append((fact, event))
            elif isinstance(fact, ReversalRecorded):
                journal.reversals.append((fact, event))
            # below zero, or below -limit with an overdraft, counting what pending transfers
            # held then (one past its timeout held nothing more: deadlines.py)
            if state.available_at(_moment(event)) < 0:
                shown = format_minor(state.balance_minor, state.currency)
                limit = format_minor(state.overdraft_limit_minor, state.currency)
                yield Finding("negative_balance", stream, event.version,
                              f"balance {shown} under an overdraft limit of {limit}")  # fmt: skip
        if state is not None:
            books = report.books.setdefault(state.currency, CurrencyBooks())
            books.balances_minor += state.balance_minor
            books.pending_debits_minor += state.pending_debits_minor
            books.pending_credits_minor += state.pending_credits_minor

    def record(self, report: AuditReport, clock: Callable[[], datetime] | None = None) -> None:
        """Append the audit's result to the ``audit`` stream (who ran it, when, what it found),
        chained onto the trail's head: one event read per attempt, however long the trail.
        Raises ``AuditNotRecorded`` (a ConcurrencyConflict) after ``RECORD_ATTEMPTS`` lost
        races."""
        now = (clock or (lambda: datetime.now(UTC)))()
        kinds: dict[str, int] = defaultdict(int)
        for finding in report.findings:
            kinds[finding.kind] += 1
        for _ in range(RECORD_ATTEMPTS):
            head = stream_head(self.events, AUDIT_STREAM)
            version = head.version if head else 0
            event = NewEvent(
                event_id=new_id(), aggregate_id=AUDIT_STREAM, aggregate_type=AUDIT_TYPE,
                version=version + 1, event_type="AuditCompleted", schema_version=1,
                data={"clean": report.clean, "streams": report.streams, "events": report.events,
                      "findings": dict(kinds), "digest": report.digest},
                metadata={"actor": current_actor.get(), "recorded_at": now.isoformat()},
            )  # fmt: skip
            previous = head.hash if head else GENESIS_HASH
            try:
                self.events.append(
                    chained([event], {AUDIT_STREAM: previous}), {AUDIT_STREAM: version}
                )
                return
            except ConcurrencyConflict:
                continue  # another audit recorded first: chain after it
        raise AuditNotRecorded(RECORD_ATTEMPTS)

    def verify_digest(self, published: Mapping[str, Mapping[str, Any]]) -> list[Finding]:
        """Each published head must still be in the store with the same hash."""
        findings = []
        for stream, head in sorted(published.items()):
            version, expected = int(head["version"]), head["hash"]
            found = self.events.read_stream(stream, version - 1, limit=1) if version >= 1 else []
            if not found or found[0].version != version or found[0].hash != expected:
                actual = found[0].hash if found else "missing"
                findings.append(Finding("digest_mismatch", stream, version,
                                        f"published hash {expected}, stored {actual}"))  # fmt: skip
        return findings


def _integrity(stream: str, stored: list[RecordedEvent]) -> Iterator[Finding]:
    previous = GENESIS_HASH
    for expected_version, event in enumerate(stored, start=1):
        if event.version != expected_version:
            detail = f"expected version {expected_version}, found {event.version}"
            yield Finding("version_gap", stream, expected_version, detail)
        if chain_hash(previous, event) != event.hash:
            yield Finding("chain_break", stream, event.version,
                          f"stored hash {event.hash[:16]}… does not match the event's content "
                          "and its predecessor")  # fmt: skip
        previous = event.hash


def _safe_replay(stored: list[RecordedEvent]) -> tuple[Any, list[Any]]:
    try:
        return accounts.replay(stored)
    except Exception:  # noqa: BLE001 - already reported as unreadable_event
        return None, []


def _transfer_findings(
    transfers: Mapping[str, list[tuple[str, RecordedEvent, int, str]]],
) -> Iterator[Finding]:
    for transfer_id, halves in transfers.items():
        debits = [h for h in halves if h[0] == "TransferredOut"]
        credits = [h for h in halves if h[0] == "TransferredIn"]
        _, first, _, _ = halves[0]
        if len(debits) != 1 or len(credits) != 1:
            yield Finding("transfer_unbalanced", first.aggregate_id, first.version,
                          f"transfer {transfer_id} has {len(debits)} debit(s) and "
                          f"{len(credits)} credit(s)")  # fmt: skip
        elif debits[0][2:] != credits[0][2:]:
            yield Finding("transfer_unbalanced", first.aggregate_id, first.version,
                          f"transfer {transfer_id} debits {debits[0][2]} {debits[0][3]} but "
                          f"credits {credits[0][2]} {credits[0][3]}")  # fmt: skip


@dataclass
class _Journal:
    """Transactions' legs and reversals' records, gathered stream by stream."""

    legs: dict[str, list[tuple[LegPosted, RecordedEvent]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    reversals: list[tuple[ReversalRecorded, RecordedEvent]] = field(default_factory=list)

    def findings(
        self, transfers: Mapping[str, list[tuple[str, RecordedEvent, int, str]]]
    ) -> Iterator[Finding]:
        for transaction_id, legs in self.legs.items():
            debits = sum(leg.amount_minor for leg, _ in legs if leg.direction == domain.DEBIT)
            credits = sum(leg.amount_minor for leg, _ in legs if leg.direction == domain.CREDIT)
            if debits != credits or len(legs) < 2 or len({leg.currency for leg, _ in legs}) != 1:
                _, first = legs[0]
                yield Finding("transaction_unbalanced", first.aggregate_id, first.version,
                              f"transaction {transaction_id}: {len(legs)} legs, debits {debits},"
                              f" credits {credits}")  # fmt: skip

        def moved(movement_id: str) -> int | None:
            """What a transfer or transaction moved (None: no such movement)."""
            out = [h[2] for h in transfers.get(movement_id, ()) if h[0] == "TransferredOut"]
            if out:
                return sum(out)
            legs = self.legs.get(movement_id)
            if legs is None:
                return None
            return sum(leg.amount_minor for leg, _ in legs if leg.direction == domain.DEBIT)

        reversed_minor: dict[str, int] = defaultdict(int)
        for record, event in self.reversals:
            where = (event.aggregate_id, event.version)
            reversed_minor[record.original_id] += record.amount_minor
            if moved(record.reversal_id) != record.amount_minor:
                yield Finding("reversal_unbalanced", *where, f"reversal {record.reversal_id} "
                              f"records {record.amount_minor} but moved "
                              f"{moved(record.reversal_id)}")  # fmt: skip
            original = moved(record.original_id) or 0
            if reversed_minor[record.original_id] > original:
                yield Finding("reversal_exceeds_original", *where,
                              f"{record.original_id} moved {original} but "
                              f"{reversed_minor[record.original_id]} is reversed")  # fmt: skip


def _hold_findings(
    holds: Mapping[str, list[tuple[HoldPlaced | HoldReleased, RecordedEvent]]],
    books: Mapping[str, CurrencyBooks],
) -> Iterator[Finding]:
    """Each pending transfer placed once on each side, alike; closed at most once on each side,
    after it was placed, with one outcome on both; per currency, pending debits = pending
    credits = what the open pending transfers hold."""
    open_minor: dict[str, int] = defaultdict(int)
    for transfer_id, facts in holds.items():
        _, first = facts[0]
        where = (first.aggregate_id, first.version)
        placed = [(f, e) for f, e in facts if isinstance(f, HoldPlaced)]
        released = [(f, e) for f, e in facts if isinstance(f, HoldReleased)]
        sides = {f.side: (f, e) for f, e in placed}
        if len(placed) != 2 or set(sides) != {domain.DEBIT, domain.CREDIT}:
            yield Finding("hold_unbalanced", *where, f"pending transfer {transfer_id} was "
                          f"placed {len(placed)} time(s), on sides {sorted(sides)}")  # fmt: skip
            continue
        (debit, debit_at), (credit, credit_at) = sides[domain.DEBIT], sides[domain.CREDIT]
        if (debit.amount_minor, debit.currency, debit.expires_at, debit.counterparty_id) != (
            credit.amount_minor,
            credit.currency,
            credit.expires_at,
            credit_at.aggregate_id,
        ) or credit.counterparty_id != debit_at.aggregate_id:
            yield Finding("hold_unbalanced", *where,
                          f"pending transfer {transfer_id} has sides that disagree")  # fmt: skip
        closed = defaultdict(list)
        for fact, event in released:
            closed[fact.side].append((fact, event))
            side_at = sides[fact.side][1] if fact.side in sides else None
            if (
                side_at is None
                or event.aggregate_id != side_at.aggregate_id
                or (event.version < side_at.version or fact.amount_minor != debit.amount_minor)
            ):
                yield Finding("hold_unbalanced", event.aggregate_id, event.version,
                              f"pending transfer {transfer_id} closed apart from its "
                              "hold")  # fmt: skip
        if any(len(both) > 1 for both in closed.values()):
            yield Finding("hold_closed_twice", *where,
                          f"pending transfer {transfer_id} was closed more than once")  # fmt: skip
        elif closed and (
            set(closed) != {domain.DEBIT, domain.CREDIT}
            or len({fact.outcome for fact, _ in released}) != 1
        ):
            yield Finding("hold_unbalanced", *where, f"pending transfer {transfer_id} was "
                          "closed on one side only, or two ways")  # fmt: skip
        if not closed:
            open_minor[debit.currency] += debit.amount_minor
    for currency in sorted(set(open_minor) | set(books)):
        b = books.get(currency, CurrencyBooks())
        if not b.pending_debits_minor == b.pending_credits_minor == open_minor[currency]:
            yield Finding(
                "holds_unbalanced", None, None,
                f"{currency}: pending debits {format_minor(b.pending_debits_minor, currency)}, "
                f"pending credits {format_minor(b.pending_credits_minor, currency)}, open "
                f"pending transfers {format_minor(open_minor[currency], currency)}",
            )  # fmt: skip


def _conservation_findings(books: Mapping[str, CurrencyBooks]) -> Iterator[Finding]:
    for currency, b in sorted(books.items()):
        if b.balances_minor != b.deposits_minor - b.withdrawals_minor:
            yield Finding(
                "conservation_break", None, None,
                f"{currency}: balances sum to {format_minor(b.balances_minor, currency)} but "
                f"deposits minus withdrawals is "
                f"{format_minor(b.deposits_minor - b.withdrawals_minor, currency)}",
            )  # fmt: skip


def _read_model_findings(
    reads: ReadStore, replayed: Mapping[str, tuple[Any, list[Any]]]
) -> Iterator[Finding]:
    expected_totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for stream, (row, moves) in replayed.items():
        if row is None:
            continue
        totals = expected_totals[row.currency]
        totals[0] += row.status == "OPEN"
        totals[1] += row.balance_minor
        if reads.balance(stream) != row:
            yield Finding("read_model_mismatch", stream, row.version,
                          "account_balances row differs from a replay")  # fmt: skip
        if reads.transactions(stream, 0, 10_000) != moves[:10_000]:
            yield Finding("read_model_mismatch", stream, None,
                          "account_transactions differ from a replay")  # fmt: skip
    for extra in {r.account_id for r in reads.all_balances()} - set(replayed):
        yield Finding("read_model_mismatch", extra, None, "row for a stream with no events")
    actual = {t.currency: [t.accounts_open, t.balance_minor] for t in reads.totals()}
    if actual != dict(expected_totals):
        yield Finding("read_model_mismatch", None, None,
                      f"totals {actual} differ from a replay {dict(expected_totals)}")  # fmt: skip


def _moment(event: RecordedEvent) -> str:
    """When ``event`` was recorded, as the rules' ``now`` ("" if it does not say)."""
    recorded_at = event.metadata.get("recorded_at")
    if not isinstance(recorded_at, str):
        return ""
    try:
        return utc_text(datetime.fromisoformat(recorded_at))
    except ValueError:
        return ""
