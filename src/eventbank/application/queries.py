"""The query side: balances, statements and totals served from the read models.

Read-your-writes: a caller that passes ``min_version`` (the version a write returned) gets an
answer at least that new. The read model is polled for up to ``wait_s``; if it is still behind
(a slow or stopped projection), the answer is computed by replaying the account's events from
the event store with the same projection function — slower, never stale. An account missing
from the read model is also checked against the event store before it is called unknown.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventbank.application import transfer_search
from eventbank.application.auditor import AUDIT_STREAM
from eventbank.application.projections import accounts
from eventbank.domain.account import CREDIT, DEBIT, check_account_id, describe_account
from eventbank.domain.errors import (
    AccountNotFound,
    Conflict,
    InvalidInput,
    NotFound,
    TransferNotFound,
)
from eventbank.domain.events import event_from_data
from eventbank.domain.journal import Leg, NotReversible, Original
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import MAX_READ_LIMIT, EventStore, RecordedEvent, stream_head
from eventbank.ports.read_store import (
    MAX_ACCOUNTS_PAGE,
    BalanceRow,
    ReadStore,
    TransactionRow,
    summarize,
)

SEARCH_SCAN = 2_000  # rows one account search examines at most (find_accounts)
SEARCH_CHUNK = 500  # rows per further read while searching: a page filled early stops reading
ACTIVITY_TAIL = 2_000  # feed events sampled before the projection checkpoint (as many after)
ACTIVITY_WINDOW_S, ACTIVITY_BUCKET_S = 300, 10


class AuditNotFound(NotFound):
    code = "audit_not_found"


_CLOSED = ("posted", "voided", "expired")  # how a pending transfer ends


UNPROJECTED_SCAN = 10_000  # feed events past the checkpoint a transfer look-up reads at most


@dataclass(frozen=True, slots=True)
class _Half:
    """One account's side of a transfer or transaction: a read-model row's or an event's."""

    account_id: str
    kind: str
    amount_minor: int
    currency: str
    counterparty: str | None


def movement_halves(reads: ReadStore, events: EventStore, movement_id: str) -> list[_Half]:
    """Every side of a transfer or transaction, from the read model, completed from the feed
    past the projection's checkpoint, which the read model may not hold yet (an acknowledged
    write is found at once, even after a crash left it unprojected). Empty: unknown.

    The checkpoint is read before the rows: a projection commits its rows with (or before)
    the checkpoint they reach, so every event up to the checkpoint read has its rows in the
    read that follows, and the feed covers the rest. Read after the rows, a projection
    committing in between would hide what it projected from both."""
    after, scanned = reads.checkpoint(accounts.NAME), 0
    halves = {(r.account_id, r.kind): _Half(r.account_id, r.kind, r.amount_minor, r.currency,
                                            r.counterparty)
              for r in reads.transfer(movement_id)}  # fmt: skip
    while scanned < UNPROJECTED_SCAN and (feed := events.read_all(after, MAX_READ_LIMIT)):
        for event in feed:
            data = event.data
            if movement_id not in (data.get("transfer_id"), data.get("transaction_id")):
                continue
            domain_event = event_from_data(event.event_type, dict(data), event.schema_version)
            kind = accounts.kind_of(domain_event)
            if kind is not None:
                counterparty = data.get("to_account_id") or data.get("from_account_id")
                halves[(event.aggregate_id, kind)] = _Half(
                    event.aggregate_id, kind, int(data["amount_minor"]), str(data["currency"]),
                    counterparty or data.get("counterparty_id"),
                )  # fmt: skip
        if feed[-1].position is None:
            break  # not a feed with positions: nothing more to page through
        after, scanned = feed[-1].position, scanned + len(feed)
    return list(halves.values())


def transfer_accounts(
    reads: ReadStore, events: EventStore, transfer_id: str
) -> tuple[str, str] | None:
    """A transfer's (debit, credit) account ids, None if it is unknown."""
    for half in movement_halves(reads, events, transfer_id):
        if half.kind in ("hold_out", "transfer_out") and half.counterparty is not None:
            return half.account_id, half.counterparty
    return None


def find_original(reads: ReadStore, events: EventStore, movement_id: str) -> Original | None:
    """What a reversal of ``movement_id`` reverses: the money it moved, leg by leg (None: no
    such transfer or transaction). A pending transfer that moved nothing yet is not
    reversible."""
    halves = movement_halves(reads, events, movement_id)
    if not halves:
        return None
    legs = [Leg(h.account_id, _DIRECTIONS[h.kind], h.amount_minor)
            for h in halves if h.kind in _DIRECTIONS]  # fmt: skip
    if not legs:
        raise NotReversible(
            f"transfer {movement_id!r} moved no money (pending, voided or expired); void it "
            "instead of reversing it"
        )
    kind = "transfer" if any(h.kind == "transfer_out" for h in halves) else "transaction"
    legs.sort(key=lambda leg: (leg.direction != DEBIT, leg.account_id))
    original = Original(movement_id, kind, halves[0].currency, tuple(legs))
    credits = sum(leg.amount_minor for leg in legs if leg.direction == CREDIT)
    if original.total_minor != credits or (kind == "transfer" and len(legs) != 2):
        # a side not yet projected and past the feed scan (a parked stream): deciding on part
        # of it could count its reversals on the wrong account
        raise NotYetKnown(f"{movement_id!r} is not fully projected yet; try again shortly")
    return original


class NotYetKnown(Conflict):
    code = "not_yet_projected"


_DIRECTIONS = {"transfer_out": DEBIT, "transfer_in": CREDIT,
               "transaction_debit": DEBIT, "transaction_credit": CREDIT}  # fmt: skip


def transfer_outcome(reads: ReadStore, transfer_id: str) -> str | None:
    """How a pending transfer ended, as projected (None: open, unknown, or never pending)."""
    kinds = {half.kind for half in reads.transfer(transfer_id)}
    return next((outcome for outcome in _CLOSED if f"{outcome}_out" in kinds), None)


class AccountQueries:
    def __init__(self, reads: ReadStore, events: EventStore, *, wait_s: float = 1.0):
        self.reads, self.events, self.wait_s = reads, events, wait_s

    def balance(self, account_id: str, min_version: int = 0) -> dict[str, Any]:
        return describe_account(self._resolve(account_id, min_version)[0])

    def history(
        self, account_id: str, after_version: int = 0, limit: int = 100, min_version: int = 0
    ) -> list[dict[str, Any]]:
        """Money movements after ``after_version``, oldest first, at most ``limit``."""
        if type(limit) is not int or not 1 <= limit <= MAX_READ_LIMIT:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_READ_LIMIT}")
        _, replayed_moves = self._resolve(account_id, min_version)
        if replayed_moves is None:
            moves = self.reads.transactions(account_id, after_version, limit)
        else:
            moves = [t for t in replayed_moves if t.version > after_version][:limit]
        return self._with_actors([(account_id, describe_transaction(t)) for t in moves])

    def transfer(self, transfer_id: str) -> dict[str, Any]:
        """One transfer or transaction, from its projected movements and its transfers row:
        ``status`` ``posted`` for one made final; a pending transfer's ``pending``, ``posted``,
        ``voided`` or ``expired``, with the amount it reserved (``pending_amount``) and, once
        posted, the amount that moved; its metadata and reversal links; a transaction's legs;
        and every movement it made on each account (a hold, its post or release)."""
        halves = self.reads.transfer(transfer_id)
        kinds = {t.kind for t in halves}
        legs = [t for t in halves if t.kind in ("transaction_debit", "transaction_credit")]
        if not legs and "hold_out" not in kinds and {"transfer_out", "transfer_in"} - kinds:
            raise TransferNotFound(f"transfer {transfer_id!r} is not known (yet)")
        row = self.reads.transfer_rows([transfer_id]).get(transfer_id)
        # a read model made before the transfers rows existed has movements only
        view = transfer_search.describe(row or summarize(halves))
        view["recorded_at"] = min(t.recorded_at for t in halves)
        in_order = sorted(halves, key=lambda t: (t.recorded_at, t.account_id, t.version))
        movements = [(t.account_id, {"account_id": t.account_id, **describe_transaction(t)})
                     for t in in_order]  # fmt: skip
        view["movements"] = self._with_actors(movements)
        if legs:
            view["legs"] = [{"account_id": t.account_id, "direction": _DIRECTIONS[t.kind],
                             "amount": format_minor(t.amount_minor, t.currency)}
                            for t in legs]  # fmt: skip
        return view

    def totals(self) -> list[dict[str, Any]]:
        return [
            {"currency": t.currency, "accounts_open": t.accounts_open,
             "balance": format_minor(t.balance_minor, t.currency)}
            for t in self.reads.totals()
        ]  # fmt: skip

    def find_accounts(
        self, q: str = "", after: str = "", limit: int = 50
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Accounts in id order after ``after`` whose id or owner contains ``q`` (any case), at
        most ``limit``, and the ``after`` of the next page (None: no account is left after it).

        Bounded, whatever the store's size: rows are read in id order from ``after`` through the
        read store's index (``accounts_page``), ``limit + 1`` without ``q``; with ``q`` at most
        ``SEARCH_SCAN`` rows are examined, so a rare match costs no more than a common one. A
        search page may therefore hold fewer than ``limit`` accounts, even none, and still have
        a next page: the cursor is then the last id examined, and the search goes on from it."""
        if type(limit) is not int or not 1 <= limit <= MAX_ACCOUNTS_PAGE - 1:
            raise InvalidInput(f"limit must be an integer from 1 to {MAX_ACCOUNTS_PAGE - 1}")
        needle = q.casefold()
        budget = max(limit + 1, SEARCH_SCAN) if needle else limit + 1
        found: list[BalanceRow] = []
        cursor, step = after, limit + 1  # enough when every row matches; then larger reads
        while budget > 0:
            asked = min(budget, step)
            step = SEARCH_CHUNK
            rows = self.reads.accounts_page(cursor, asked)
            budget -= len(rows)
            for r in rows:
                if needle in r.account_id.casefold() or needle in r.owner.casefold():
                    if len(found) == limit:  # one more than asked for: there is a next page
                        return [describe_account(f) for f in found], found[-1].account_id
                    found.append(r)
                cursor = r.account_id
            if len(rows) < asked:  # the end of the store
                return [describe_account(f) for f in found], None
        return [describe_account(f) for f in found], cursor  # examined all it may

    def account_events(
        self, account_id: str, after_version: int = 0, limit: int = 100
    ) -> list[RecordedEvent]:
        """An account's stored events after ``after_version``, oldest first, at most ``limit``
        (the store reads no more than ``limit``)."""
        self.balance(account_id)  # an unknown account is a 404, not an empty page
        return self.events.read_stream(account_id, after_version, limit=limit)

    def latest_audit(self) -> dict[str, Any]:
        """The last recorded audit run: the audit trail's head, one event read."""
        last = stream_head(self.events, AUDIT_STREAM)
        if last is None:
            raise AuditNotFound("no audit has been recorded yet")
        return {**dict(last.data), "version": last.version, "hash": last.hash,
                "actor": last.metadata.get("actor"),
                "recorded_at": last.metadata.get("recorded_at")}  # fmt: skip

    def activity(self, checkpoint: int, now: datetime) -> dict[str, Any]:
        """Events and transfers per second in ``ACTIVITY_BUCKET_S`` buckets over the last
        ``ACTIVITY_WINDOW_S`` seconds, from the feed's ``recorded_at`` metadata.

        Bounded: one feed read of at most ``2 * ACTIVITY_TAIL`` events, starting that many
        positions before the projection ``checkpoint`` (dense positions on SQLite and PostgreSQL;
        DynamoDB's sequence numbers are sparse, so there the sample starts near the checkpoint).
        A bucket the sample does not fully cover is ``None`` (unknown), not 0. Events without
        ``recorded_at`` (a payroll saga's own bookkeeping) are not counted."""
        start, limit = max(0, checkpoint - ACTIVITY_TAIL), 2 * ACTIVITY_TAIL
        feed = self.events.read_all(start, limit)
        stamped = [(datetime.fromisoformat(e.metadata["recorded_at"]), e.event_type)
                   for e in feed if e.metadata.get("recorded_at")]  # fmt: skip
        times = [at for at, _ in stamped]
        first = now - timedelta(seconds=ACTIVITY_WINDOW_S)
        known_from = first if start == 0 else min(times, default=now)  # older events unread
        known_to = now if len(feed) < limit else max(times, default=first)  # newer ones unread
        size = timedelta(seconds=ACTIVITY_BUCKET_S)
        counts = [[0, 0] for _ in range(ACTIVITY_WINDOW_S // ACTIVITY_BUCKET_S)]
        for at, event_type in stamped:
            index = (at - first) // size
            if 0 <= index < len(counts):
                counts[index][0] += 1
                counts[index][1] += event_type == "TransferredOut"  # one per transfer
        buckets = []
        for n, (events, transfers) in enumerate(counts):
            begins = first + n * size
            known = known_from <= begins and begins + size <= known_to
            buckets.append({
                "start": begins.isoformat(),
                "events_per_s": round(events / ACTIVITY_BUCKET_S, 2) if known else None,
                "transfers_per_s": round(transfers / ACTIVITY_BUCKET_S, 2) if known else None,
            })  # fmt: skip
        return {"bucket_seconds": ACTIVITY_BUCKET_S, "window_seconds": ACTIVITY_WINDOW_S,
                "sampled_events": len(feed), "buckets": buckets}  # fmt: skip

    def _resolve(
        self, account_id: str, min_version: int
    ) -> tuple[BalanceRow, list[TransactionRow] | None]:
        """The account's row, from the read model (moves None) or from a replay (moves given)."""
        check_account_id(account_id)
        deadline = time.monotonic() + self.wait_s
        while True:
            row = self.reads.balance(account_id)
            if row is not None and row.version >= min_version:
                return row, None
            if (row is None and min_version == 0) or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        replayed, moves = self._replay(account_id)
        if replayed is None or replayed.version < min_version:
            raise AccountNotFound(
                f"account {account_id!r} does not exist"
                + (f" at version {min_version}" if replayed is not None else "")
            )
        return replayed, moves

    def _with_actors(self, movements: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """The movements (each with its account) with who made them: the ``actor`` their
        events recorded. The read models keep no actor, so the events shown are read, one read
        per run of consecutive versions of an account: a page of history is one read."""
        actors: dict[tuple[str, int], str | None] = {}
        wanted = sorted({(account_id, m["version"]) for account_id, m in movements})
        for account_id, first, count in _runs(wanted):
            for event in self.events.read_stream(account_id, first - 1, limit=count):
                actors[(account_id, event.version)] = event.metadata.get("actor")
        return [
            {**m, "actor": actors.get((account_id, m["version"]))} for account_id, m in movements
        ]

    def _replay(self, account_id: str) -> tuple[BalanceRow | None, list[TransactionRow]]:
        """The account's row and movements computed straight from its events."""
        return accounts.replay(self.events.read_stream(account_id))


def _runs(keys: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Sorted (stream, version) keys as runs of consecutive versions: (stream, first, count)."""
    runs: list[tuple[str, int, int]] = []
    for stream, version in keys:
        if runs and runs[-1][0] == stream and runs[-1][1] + runs[-1][2] == version:
            runs[-1] = (stream, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((stream, version, 1))
    return runs


def describe_transaction(t: TransactionRow) -> dict[str, Any]:
    """A movement as an account's history shows it: ``describe_movement``, with the account's
    version, the balance after it and its time."""
    return {
        "version": t.version,
        **describe_movement(t),
        "balance_after": format_minor(t.balance_after_minor, t.currency),
        "recorded_at": t.recorded_at,
    }


def describe_movement(m: accounts.Moved | TransactionRow) -> dict[str, Any]:
    """What a money movement shows wherever it is listed (an account's history, the
    recent-activity feed), the amount as a decimal string."""
    return {
        "kind": m.kind,
        "amount": format_minor(m.amount_minor, m.currency),
        "currency": m.currency,
        "counterparty": m.counterparty,
        "transfer_id": m.transfer_id,
        "metadata": dict(m.metadata),
        "description": m.description,
        "reverses": m.reverses,
    }
