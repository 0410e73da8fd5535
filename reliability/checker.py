"""The bank-test checker: given what clients saw and what the store holds, list every violation.

Invariants (issue 10):

1. the total of all balances is conserved — at every append boundary of the event log where
   the engine has a global order (a linearised history, as Jepsen's bank test checks), and at
   the end on every engine;
2. no balance is ever negative — in any client read, and at any point of any account's stream;
3. every acknowledged transfer is in the event store exactly once (and no transfer is there
   that no client asked for, or that was refused); the same for pending transfers (``hold``),
   their posts and their voids (each closing at most one pending transfer; expiries are the
   server's own, keyed ``expire-<transfer id>``);
4. every transfer is whole: its debit and its credit are both present, or neither;
5. every indeterminate request (its answer lost and the request sent again with the same key,
   or still unanswered when the run ended) had at most one effect, and exactly one if a later
   answer acknowledged it;
6. after recovery the read models equal a replay and the audit is clean — the harness runs the
   Auditor and passes its findings in as ``recovery_problems``;
7. every answer is a documented one: no 5xx but ``503 store_unavailable``, no 4xx but a refusal
   (``insufficient_funds``) or a retryable ``concurrency_conflict``.

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
INVARIANTS = {
    1: "total of all balances conserved",
    2: "no balance ever negative",
    3: "acknowledged transfers stored exactly once",
    4: "every transfer whole",
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
    """``history``: the client log (``op`` transfer/read/crash/fault); ``events``: the whole
    event store in feed order; ``expected_total_minor``: the sum of balances before the run;
    ``recovery_problems``: what the audit after recovery found (invariant 6)."""
    report = CheckReport()
    accounts = [e for e in events if e.aggregate_type == "Account"]
    transfers = _transfers(accounts)
    by_command = _by_command(halves[0] for halves in transfers.values())
    # a pending transfer by its debit side: placed by the hold's key, released by a post's, a
    # void's or its expiry's
    placed = _by_command(_debit_sides(accounts, "HoldPlaced"))
    released = _by_command(_debit_sides(accounts, "HoldReleased"))
    requested: dict[str, set[str]] = defaultdict(set)  # op -> the keys clients sent
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
            found = {"transfer": by_command, "post": by_command, "hold": placed,
                     "void": released}[kind]  # fmt: skip
            _check_request(op, found, report)
    for command in by_command.keys() - requested["transfer"] - requested["post"]:
        report.flag(3, f"transfer {by_command[command]} (key {command!r}) that no client sent")
    for command in placed.keys() - requested["hold"]:
        report.flag(3, f"pending transfer {placed[command]} (key {command!r}) no client sent")
    closers = requested["post"] | requested["void"]
    for command in released.keys() - closers:
        expiry = [f"expire-{transfer_id}" for transfer_id in released[command]] == [command]
        report.counts["expired"] += expiry
        if not expiry:
            report.flag(3, f"pending transfer {released[command]} closed by {command!r}, which "
                           "no client sent")  # fmt: skip
    for command, closed in released.items():
        if len(closed) > 1:
            report.flag(3, f"{command!r} closed {len(closed)} pending transfers")
    for transfer_id, halves in transfers.items():
        kinds = sorted(h.event_type for h in halves)
        if kinds != ["TransferredIn", "TransferredOut"]:
            report.flag(4, f"transfer {transfer_id} is not whole: {kinds}")
    _check_balances(accounts, report)
    _check_totals(accounts, expected_total_minor, ordered, report)
    for problem in recovery_problems:
        report.flag(6, problem)
    return report


def _count(op: Mapping[str, Any], counts: Counter) -> None:
    kind = op["op"]
    if kind in _EFFECTS:
        lost = op.get("lost", 0)
        tally = {f"{kind}_{op['outcome']}": 1, "answers_lost": lost,
                 "answers_503": op.get("statuses", {}).get("503", 0),
                 "ok_after_lost_answer": op["outcome"] == "ok" and lost > 0}  # fmt: skip
        counts.update({key: int(n) for key, n in tally.items() if n})
    else:
        counts[kind] += 1
        if "kind" in op:
            counts[f"{kind}:{op['kind']}"] += 1


def _transfers(accounts: Sequence[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    found: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in accounts:
        if event.event_type in ("TransferredOut", "TransferredIn"):
            found[event.data["transfer_id"]].append(event)
    return found


_EFFECTS = ("transfer", "hold", "post", "void")  # the operations that write


def _by_command(events: Iterable[RecordedEvent]) -> dict[str, list[str]]:
    """Transfer ids by the command (key) that wrote each of ``events``."""
    found: dict[str, list[str]] = defaultdict(list)
    for event in events:
        found[event.metadata.get("command_id", "")].append(event.data["transfer_id"])
    return found


def _debit_sides(accounts: Sequence[RecordedEvent], event_type: str) -> list[RecordedEvent]:
    return [e for e in accounts if e.event_type == event_type and e.data["side"] == "debit"]


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
        transfer_id = op.get("transfer_id")
        if transfer_id not in effects:
            report.flag(3, f"acknowledged {op['op']} of {transfer_id} (key {op['key']}) is "
                           "missing")  # fmt: skip
    elif op["outcome"] in ("refused", "error") and effects:
        report.flag(5 if indeterminate else 3,
                    f"{op['outcome']} request {op['key']} took effect anyway")  # fmt: skip
    elif op["outcome"] == "indeterminate":
        report.counts[f"indeterminate_{'applied' if effects else 'not_applied'}"] += 1


def _check_balances(accounts: Sequence[RecordedEvent], report: CheckReport) -> None:
    streams: dict[str, list[RecordedEvent]] = defaultdict(list)
    for event in accounts:
        streams[event.aggregate_id].append(event)
    for stream, stored in streams.items():
        balance = 0
        for event in sorted(stored, key=lambda e: e.version):
            balance += _SIGN.get(event.event_type, 0) * event.data.get("amount_minor", 0)
            if balance < 0:
                report.flag(2, f"{stream} went to {balance} at version {event.version}")
                break


def _check_totals(
    accounts: Sequence[RecordedEvent], expected: int, ordered: bool, report: CheckReport
) -> None:
    """The total may only change through deposits and withdrawals; with a global order it is
    checked at every point where no transfer is half-applied, else only at the end."""
    total, external, open_transfers = 0, 0, set()
    for event in accounts:
        delta = _SIGN.get(event.event_type, 0) * event.data.get("amount_minor", 0)
        total += delta
        if event.event_type in ("FundsDeposited", "FundsWithdrawn"):
            external += delta
        elif event.event_type in ("TransferredOut", "TransferredIn"):
            open_transfers ^= {event.data["transfer_id"]}
        if ordered and not open_transfers and total != external:
            report.flag(1, f"total {total} != deposits - withdrawals {external} "
                           f"at position {event.position}")  # fmt: skip
            return
    if total != expected:
        report.flag(1, f"final total {total} != {expected} expected")
