"""The payroll saga as a pure aggregate: its events and the state they fold into.

A payroll pays many employees from one employer account. It is too big for one atomic write
(DynamoDB: 100 items), so it runs as a saga with its own stream: started (with a checksum of
its input), its lines, each step's outcome, compensations, and how it finished. Every step is a
transfer whose command id derives from the saga id and the line, so re-running a step after a
crash is answered from its first run instead of paying twice.

Policies: ``all-or-nothing`` (a failure mid-way compensates every paid line by a reverse
transfer) and ``best-effort`` (failed lines are reported, the rest paid).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from eventbank.domain.errors import InvalidInput

PAYROLL = "Payroll"  # aggregate_type of saga streams
REGISTRY = "payroll#registry"  # one stream listing started and closed sagas, for resume
POLICIES = ("all-or-nothing", "best-effort")
MAX_LINES = 20_000  # a limit on everything: larger batches split into several payrolls
LINES_PER_EVENT = 500  # keeps each event well under DynamoDB's 400 KB item limit


@dataclass(frozen=True, slots=True)
class PayrollLine:
    line_no: int
    account_id: str
    amount_minor: int
    reference: str


@dataclass(frozen=True, slots=True)
class Payroll:
    """A saga's state as of ``version`` events."""

    saga_id: str
    employer_id: str
    currency: str
    policy: str
    checksum: str
    line_count: int
    total_minor: int
    lines: dict[int, PayrollLine] = field(default_factory=dict)
    paid: dict[int, str] = field(default_factory=dict)  # line -> transfer id
    failed: dict[int, str] = field(default_factory=dict)  # line -> reason
    compensated: dict[int, str] = field(default_factory=dict)  # line -> reverse transfer id
    compensation_failed: dict[int, str] = field(default_factory=dict)
    status: str = "running"  # running | compensating | <a finished status>
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.status not in ("running", "compensating")

    @property
    def pending(self) -> list[PayrollLine]:
        """Lines with no outcome yet, in input order."""
        done = self.paid.keys() | self.failed.keys()
        return [line for n, line in sorted(self.lines.items()) if n not in done]

    @property
    def to_compensate(self) -> list[PayrollLine]:
        done = self.compensated.keys() | self.compensation_failed.keys()
        return [self.lines[n] for n in sorted(self.paid) if n not in done]

    @property
    def paid_minor(self) -> int:
        return sum(self.lines[n].amount_minor for n in self.paid if n not in self.compensated)

    def finish_status(self) -> str:
        if self.compensation_failed:
            return "compensation_failed"
        if self.compensated or (self.failed and self.policy == "all-or-nothing"):
            return "compensated"
        return "completed_with_failures" if self.failed else "completed"

    def summary(self) -> dict[str, Any]:
        return {
            "saga_id": self.saga_id, "employer_id": self.employer_id, "currency": self.currency,
            "policy": self.policy, "status": self.status, "lines": self.line_count,
            "paid": len(self.paid) - len(self.compensated), "failed": len(self.failed),
            "compensated": len(self.compensated),
            "compensation_failed": len(self.compensation_failed),
            "total_minor": self.total_minor, "moved_minor": self.paid_minor,
            "checksum": self.checksum,
            "failures": {str(n): reason for n, reason in sorted(self.failed.items())},
        }  # fmt: skip


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidInput(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


# ---------------------------------------------------------------- events as (type, data)
# Saga events are plain (type, data) pairs: the saga is application bookkeeping, and its data
# shapes are simple lists that a dataclass per event would only restate.


def started(payroll: Payroll) -> tuple[str, dict[str, Any]]:
    return "PayrollStarted", {
        "saga_id": payroll.saga_id, "employer_id": payroll.employer_id,
        "currency": payroll.currency, "policy": payroll.policy, "checksum": payroll.checksum,
        "line_count": payroll.line_count, "total_minor": payroll.total_minor,
    }  # fmt: skip


def lines_recorded(lines: list[PayrollLine]) -> tuple[str, dict[str, Any]]:
    rows = [[ln.line_no, ln.account_id, ln.amount_minor, ln.reference] for ln in lines]
    return "PayrollLinesRecorded", {"lines": rows}


def payments_recorded(outcomes: list[list[Any]]) -> tuple[str, dict[str, Any]]:
    """``outcomes``: [line_no, "paid", transfer_id] or [line_no, "failed", reason]."""
    return "PaymentsRecorded", {"outcomes": outcomes}


def compensations_recorded(outcomes: list[list[Any]]) -> tuple[str, dict[str, Any]]:
    """``outcomes``: [line_no, "compensated", transfer_id] or [line_no, "failed", reason]."""
    return "CompensationsRecorded", {"outcomes": outcomes}


def finished(status: str, payroll: Payroll) -> tuple[str, dict[str, Any]]:
    return "PayrollFinished", {"status": status, "paid": len(payroll.paid),
                               "failed": len(payroll.failed),
                               "compensated": len(payroll.compensated),
                               "moved_minor": payroll.paid_minor}  # fmt: skip


def apply(state: Payroll | None, event_type: str, data: dict[str, Any]) -> Payroll:
    """Fold one saga event into its state."""
    if event_type == "PayrollStarted":
        return Payroll(**data, version=1)
    if state is None:
        raise ValueError(f"{event_type} before PayrollStarted")
    state = replace(state, version=state.version + 1)
    if event_type == "PayrollLinesRecorded":
        lines = {row[0]: PayrollLine(*row) for row in data["lines"]}
        return replace(state, lines={**state.lines, **lines})
    if event_type == "PaymentsRecorded":
        paid, failed = dict(state.paid), dict(state.failed)
        for line_no, outcome, detail in data["outcomes"]:
            (paid if outcome == "paid" else failed)[line_no] = detail
        status = "compensating" if failed and state.policy == "all-or-nothing" else state.status
        return replace(state, paid=paid, failed=failed, status=status)
    if event_type == "CompensationsRecorded":
        done, failed = dict(state.compensated), dict(state.compensation_failed)
        for line_no, outcome, detail in data["outcomes"]:
            (done if outcome == "compensated" else failed)[line_no] = detail
        return replace(state, compensated=done, compensation_failed=failed)
    if event_type == "PayrollFinished":
        return replace(state, status=data["status"])
    raise ValueError(f"unknown payroll event {event_type!r}")
