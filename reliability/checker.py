"""The bank-test checker: given what clients saw and what the store holds, list every violation.

Invariants (issue 10; transactions and reversals: issue 21):

1. the total of all balances is conserved — at every append boundary of the event log where
   the engine has a global order (a linearised history, as Jepsen's bank test checks), and at
   the end on every engine. A transfer's halves and a transaction's legs count as one: the
   total is checked only where every movement begun has all its stored events;
2. no balance is ever negative — in any client read, and at any point of any account's stream;
3. every acknowledged transfer is in the event store exactly once, as it was sent (and no
   transfer is there that no client asked for, or that was refused); the same for pending
   transfers (``hold``), their posts and their voids (each closing at most one pending
   transfer; expiries are the server's own, keyed ``expire-<transfer id>``), multi-leg
   transactions (with the legs sent) and reversals (of the original named, by the amount
   asked);
4. every movement is whole, and none is reversed past what it moved: a transfer's debit and
   credit are both present, or neither; a transaction's legs all came in one command, each
   account once, debits equal to credits; a reversal is its movement back (the original's
   legs flipped, in exact proportion) and its ``ReversalRecorded``, under one key; and the
   reversals of an original, all recorded on one of its debited accounts, together move back
   at most what it moved;
5. every indeterminate request (its answer lost and the request sent again with the same key,
   or still unanswered when the run ended) had at most one effect, and exactly one if a later
   answer acknowledged it;
6. after recovery the read models equal a replay and the audit is clean — the harness runs the
   Auditor and passes its findings in as ``recovery_problems``;
7. every answer is a documented one: no 5xx but ``503 store_unavailable`` (or, under
   ``serve --ledger-process``, ``503 ledger_process_lost``), no 4xx but a refusal
   (``insufficient_funds``, ``reversal_exceeds_original``, …) or a retryable
   ``concurrency_conflict`` or ``not_yet_projected``.

Reader observations are checked for (2) only: per-account GETs are no atomic snapshot, so
their sum may differ from the total while transfers are in flight. (1) is checked on the log.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventbank.ports.event_store import RecordedEvent

_SIGN = {"FundsDeposited": 1, "TransferredIn": 1, "FundsWithdrawn": -1, "TransferredOut": -1}
_LEG_SIGN = {"debit": -1, "credit": 1}
_HALVES = ("TransferredOut", "TransferredIn")
INVARIANTS = {
    1: "total of all balances conserved",
    2: "no balance ever negative",
    3: "acknowledged requests stored exactly once",
    4: "every movement whole, never over-reversed",
    5: "indeterminate requests: at most one effect",
    6: "read models = replay, audit clean",
    7: "only documented answers (no 500s)",
}


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: int
    detail: str


@dataclass
class CheckReport:
    counts: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def flag(self, invariant: int, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    def by_invariant(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {number: [] for number in INVARIANTS}
        for violation in self.violations:
            found[violation.invariant].append(violation.detail)
        return found


def check(
    history: Iterable[Mapping[str, Any]],
    events: Sequence[RecordedEvent],
    expected_total_minor: int,
    *,
    ordered: bool,
    recovery_problems: Sequence[str] = (),
) -> CheckReport:
    """``history``: the client log (``op`` transfer/hold/post/void/transaction/reverse/read/
    crash/fault); ``events``: the whole event store in feed order; ``expected_total_minor``:
    the sum of balances before the run; ``recovery_problems``: what the audit after recovery
    found (invariant 6)."""
    report = CheckReport()
    accounts = [e for e in events if e.aggregate_type == "Account"]
    movements = _movements(accounts)
    written = _by_kind(movements)
    # a pending transfer by its debit side: placed by the hold's key, released by a post's, a
    # void's or its expiry's
    written["hold"] = _by_command(_debit_sides(accounts, "HoldPlaced"))
    written["release"] = _by_command(_debit_sides(accounts, "HoldReleased"))
    requested = _check_history(history, written, movements, report)
    _check_unsent(written, requested, report)
    for movement_id, movement in movements.items():
        _check_whole(movement_id, movement, report)
    _check_reversals(movements, _recorded(accounts), report)
    _check_balances(accounts, report)
    _check_totals(accounts, expected_total_minor, ordered, report)
    for problem in recovery_problems:
        report.flag(6, problem)
    return report


# the operations that write, and the kind of write (``_by_kind``) each is checked against
_EFFECTS = {"transfer": "transfer", "post": "transfer", "hold": "hold", "void": "release",
            "transaction": "transaction", "reverse": "reversal"}  # fmt: skip
# the operations whose keys may write each kind of movement
_SENT_BY = {"transfer": ("transfer", "post"), "transaction": ("transaction",),
            "reversal": ("reverse",)}  # fmt: skip


@dataclass
class _Movement:
    """A transfer or a transaction (a reversal is one too) as stored: every event that moved
    its money."""

    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "transaction" if self.events[0].event_type == "LegPosted" else "transfer"

    @property
    def reverses(self) -> str:
        return str(self.events[0].data.get("reverses", ""))

    @property
    def commands(self) -> set[str]:
        return {e.metadata.get("command_id", "") for e in self.events}

    @property
    def legs(self) -> Counter[str]:
        """What it did to each account (debits negative)."""
        legs: Counter[str] = Counter()
        for event in self.events:
            legs[event.aggregate_id] += _delta(event)
        return legs

    @property
    def debits(self) -> int:
        return -sum(_delta(e) for e in self.events if _delta(e) < 0)

    @property
    def credits(self) -> int:
        return sum(_delta(e) for e in self.events if _delta(e) > 0)


def _delta(event: RecordedEvent) -> int:
    """What ``event`` adds to its account's balance (a leg: by its direction)."""
    if event.event_type == "LegPosted":
        sign = _LEG_SIGN.get(event.data.get("direction"), 0)
    else:
        sign = _SIGN.get(event.event_type, 0)
    return sign * event.data.get("amount_minor", 0)


def _movement_id(event: RecordedEvent) -> str | None:
    """The transfer or transaction ``event`` moves money for (None: it moves none between
    accounts)."""
    if event.event_type in _HALVES:
        return event.data["transfer_id"]
    if event.event_type == "LegPosted":
        return event.data["transaction_id"]
    return None


def _movements(accounts: Sequence[RecordedEvent]) -> dict[str, _Movement]:
    found: dict[str, _Movement] = defaultdict(_Movement)
    for event in accounts:
        if (movement_id := _movement_id(event)) is not None:
            found[movement_id].events.append(event)
    return dict(found)


def _by_kind(movements: Mapping[str, _Movement]) -> dict[str, dict[str, list[str]]]:
    """Movement ids by kind (transfer, transaction, reversal) and the command (key) that wrote
    each: a reversal is a movement that ``reverses`` another."""
    found: dict[str, dict[str, list[str]]] = {kind: defaultdict(list) for kind in
                                              ("transfer", "transaction", "reversal")}  # fmt: skip
    for movement_id, movement in movements.items():
        kind = "reversal" if movement.reverses else movement.kind
        for command in sorted(movement.commands):
            found[kind][command].append(movement_id)
    return found


def _by_command(events: Iterable[RecordedEvent]) -> dict[str, list[str]]:
    """Transfer ids by the command (key) that wrote each of ``events``."""
    found: dict[str, list[str]] = defaultdict(list)
    for event in events:
        found[event.metadata.get("command_id", "")].append(event.data["transfer_id"])
    return found


def _debit_sides(accounts: Sequence[RecordedEvent], event_type: str) -> list[RecordedEvent]:
    return [e for e in accounts if e.event_type == event_type and e.data["side"] == "debit"]


def _recorded(accounts: Sequence[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    """Each reversal's ``ReversalRecorded`` events, by reversal id."""
    found: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in accounts:
        if event.event_type == "ReversalRecorded":
            found[event.data["reversal_id"]].append(event)
    return found


def _check_history(
    history: Iterable[Mapping[str, Any]],
    written: Mapping[str, Mapping[str, list[str]]],
    movements: Mapping[str, _Movement],
    report: CheckReport,
) -> dict[str, set[str]]:
    """Every operation counted and checked against what its key wrote; the keys clients sent,
    by operation."""
    requested: dict[str, set[str]] = defaultdict(set)
    for op in history:
        _count(op, report.counts)
        for answer in op.get("unexpected", ()):
            report.flag(7, f"{op['op']} {op.get('key', '')} was answered {answer}".strip())
        kind = op["op"]
        if kind == "read":
            for account, minor in op["balances"].items():
                if minor < 0:
                    report.flag(2, f"a read saw {account} at {minor}")
        elif kind in _EFFECTS:
            requested[kind].add(op["key"])
            _check_request(op, written[_EFFECTS[kind]], report)
            if op["outcome"] == "ok":
                _check_as_sent(op, movements, report)
    return requested


def _check_unsent(
    written: Mapping[str, Mapping[str, list[str]]],
    requested: Mapping[str, set[str]],
    report: CheckReport,
) -> None:
    """Nothing is stored under a key no client sent, but the server's own expiries."""
    for kind, ops in _SENT_BY.items():
        for command in written[kind].keys() - set().union(*(requested[op] for op in ops)):
            report.flag(3, f"{kind} {written[kind][command]} (key {command!r}) that no client "
                           "sent")  # fmt: skip
    placed, released = written["hold"], written["release"]
    for command in placed.keys() - requested["hold"]:
        report.flag(3, f"pending transfer {placed[command]} (key {command!r}) no client sent")
    for command in released.keys() - requested["post"] - requested["void"]:
        expiry = [f"expire-{transfer_id}" for transfer_id in released[command]] == [command]
        report.counts["expired"] += expiry
        if not expiry:
            report.flag(3, f"pending transfer {released[command]} closed by {command!r}, which "
                           "no client sent")  # fmt: skip
    for command, closed in released.items():
        if len(closed) > 1:
            report.flag(3, f"{command!r} closed {len(closed)} pending transfers")


def _count(op: Mapping[str, Any], counts: Counter) -> None:
    kind = op["op"]
    if kind in _EFFECTS:
        lost = op.get("lost", 0)
        statuses = op.get("statuses", {})
        tally = {f"{kind}_{op['outcome']}": 1, "answers_lost": lost,
                 "answers_503": statuses.get("503", 0),
                 "answers_not_yet_projected": statuses.get("409 not_yet_projected", 0),
                 "ok_after_lost_answer": op["outcome"] == "ok" and lost > 0}  # fmt: skip
        counts.update({key: int(n) for key, n in tally.items() if n})
    else:
        counts[kind] += 1
        if "kind" in op:
            counts[f"{kind}:{op['kind']}"] += 1


def _acknowledged_id(op: Mapping[str, Any]) -> str | None:
    """The transfer or transaction an acknowledged request names (a post: the one posted)."""
    return op.get("transaction_id") or op.get("transfer_id")


def _check_request(
    op: Mapping[str, Any], by_command: Mapping[str, list[str]], report: CheckReport
) -> None:
    """One client operation against what its key wrote: once if acknowledged, never if
    refused, at most once if its answer was lost."""
    effects = by_command.get(op["key"], [])
    # Indeterminate: the run ended before an answer, or an answer was lost and the request
    # sent again with its key. Either way it may have landed more than once; it must not have.
    indeterminate = op["outcome"] == "indeterminate" or op.get("lost", 0) > 0
    if indeterminate:
        report.counts["indeterminate_requests"] += 1
    if len(effects) > 1:
        report.flag(5 if indeterminate else 3,
                    f"request {op['key']} took effect {len(effects)} times")  # fmt: skip
    if op["outcome"] == "ok":
        movement_id = _acknowledged_id(op)
        if movement_id not in effects:
            report.flag(3, f"acknowledged {op['op']} of {movement_id} (key {op['key']}) is "
                           "missing")  # fmt: skip
    elif op["outcome"] in ("refused", "error") and effects:
        report.flag(5 if indeterminate else 3,
                    f"{op['outcome']} request {op['key']} took effect anyway")  # fmt: skip
    elif op["outcome"] == "indeterminate":
        report.counts[f"indeterminate_{'applied' if effects else 'not_applied'}"] += 1


def _check_as_sent(
    op: Mapping[str, Any], movements: Mapping[str, _Movement], report: CheckReport
) -> None:
    """An acknowledged transaction moved the legs sent; a reversal reversed the original
    named, by the amount asked (all that was left, when none)."""
    movement = movements.get(_acknowledged_id(op) or "")
    if movement is None or op["op"] not in ("transaction", "reverse"):
        return  # a missing one is flagged already
    if op["op"] == "transaction":
        sent = Counter({account: _LEG_SIGN[direction] * minor
                        for account, direction, minor in op["legs"]})  # fmt: skip
        if movement.legs != sent:
            report.flag(3, f"transaction {op['transaction_id']} (key {op['key']}) moved "
                           f"{dict(movement.legs)}, not the legs sent")  # fmt: skip
    elif movement.reverses != op["original"] or op["amount_minor"] not in (None, movement.debits):
        report.flag(3, f"reversal {_acknowledged_id(op)} (key {op['key']}) moved "
                       f"{movement.debits} back from {movement.reverses!r}, asked "
                       f"{op['amount_minor']} from {op['original']!r}")  # fmt: skip


def _check_whole(movement_id: str, movement: _Movement, report: CheckReport) -> None:
    """A transfer is its two halves; a transaction at least two legs, each account once; both
    written by one command, debits equal to credits."""
    problems = []
    kinds = sorted(e.event_type for e in movement.events)
    if movement.kind == "transfer" and kinds != ["TransferredIn", "TransferredOut"]:
        problems.append(str(kinds))
    if movement.kind == "transaction" and not 2 <= len(movement.events) == len(movement.legs):
        problems.append(f"{len(movement.events)} legs over {len(movement.legs)} accounts")
    if movement.debits != movement.credits:
        problems.append(f"debits {movement.debits} != credits {movement.credits}")
    if len(movement.commands) > 1:
        problems.append(f"written by {len(movement.commands)} commands")
    if problems:
        report.flag(4, f"{movement.kind} {movement_id} is not whole: {'; '.join(problems)}")


def _check_reversals(
    movements: Mapping[str, _Movement],
    recorded: Mapping[str, list[RecordedEvent]],
    report: CheckReport,
) -> None:
    """Each reversal moved back a proportional part of its original and recorded it, under its
    own key; together an original's reversals moved back at most what it moved, and were all
    recorded on one of its debited accounts (the stream whose version check keeps racing
    reversals from passing the original)."""
    reversed_minor: Counter[str] = Counter()
    keepers: dict[str, set[str]] = defaultdict(set)  # original -> where its reversals recorded
    for reversal_id, reversal in movements.items():
        if not reversal.reverses:
            continue
        reversed_minor[reversal.reverses] += reversal.debits
        records = [(r.data["original_id"], r.data["amount_minor"], r.metadata.get("command_id"))
                   for r in recorded.get(reversal_id, [])]  # fmt: skip
        expected = [(reversal.reverses, reversal.debits, *reversal.commands)]
        if records != expected:
            report.flag(4, f"reversal {reversal_id} recorded {records}, not {expected}")
        keepers[reversal.reverses].update(r.aggregate_id for r in recorded.get(reversal_id, []))
        original = movements.get(reversal.reverses)
        if original is not None and not _mirrors(reversal, original):
            report.flag(4, f"reversal {reversal_id} moved {dict(reversal.legs)}: not "
                           f"{dict(original.legs)} in proportion")  # fmt: skip
    for reversal_id in recorded.keys() - movements.keys():
        report.flag(4, f"reversal {reversal_id} recorded, but it moved nothing")
    for original_id, minor in reversed_minor.items():
        original = movements.get(original_id, _Movement())
        if minor > original.debits:
            report.flag(4, f"{original_id} reversed by {minor} in all, but it moved "
                           f"{original.debits}")  # fmt: skip
        debited = {account for account, delta in original.legs.items() if delta < 0}
        if len(kept := keepers[original_id]) > 1 or not kept <= debited:
            report.flag(4, f"the reversals of {original_id} are recorded on {sorted(kept)}, "
                           f"not on one of {sorted(debited)}")  # fmt: skip


def _mirrors(reversal: _Movement, original: _Movement) -> bool:
    """``reversal`` takes back from each of ``original``'s accounts the same share of what it
    gave it (exactly: no rounding)."""
    back, legs = reversal.legs, original.legs
    return back.keys() == legs.keys() and all(
        back[account] * original.debits == -legs[account] * reversal.debits for account in legs
    )


def _check_balances(accounts: Sequence[RecordedEvent], report: CheckReport) -> None:
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in accounts:
        streams[event.aggregate_id].append(event)
    for stream, stored in streams.items():
        balance = 0
        for event in sorted(stored, key=lambda e: e.version):
            balance += _delta(event)
            if balance < 0:
                report.flag(2, f"{stream} went to {balance} at version {event.version}")
                break


def _check_totals(
    accounts: Sequence[RecordedEvent], expected: int, ordered: bool, report: CheckReport
) -> None:
    """The total may only change through deposits and withdrawals; with a global order it is
    checked at every point where no transfer or transaction is part-way (some of its stored
    events seen, not all), else only at the end."""
    unseen = Counter(_movement_id(e) for e in accounts)  # events of each movement yet to come
    total, external, part_way = 0, 0, set()
    for event in accounts:
        delta = _delta(event)
        total += delta
        if event.event_type in ("FundsDeposited", "FundsWithdrawn"):
            external += delta
        elif (movement_id := _movement_id(event)) is not None:
            unseen[movement_id] -= 1
            if unseen[movement_id]:
                part_way.add(movement_id)
            else:
                part_way.discard(movement_id)
        if ordered and not part_way and total != external:
            report.flag(1, f"total {total} != deposits - withdrawals {external} "
                           f"at position {event.position}")  # fmt: skip
            return
    if total != expected:
        report.flag(1, f"final total {total} != {expected} expected")
