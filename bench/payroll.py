"""The payroll figure: one payroll of many lines, validated, recorded and paid as a saga.

A payroll is paid by one process, 25 lines at a time (one transfer each, the 25 in one atomic
batch: one append and one commit; its read models projected as ``eventbank serve`` does), with
an outcome event every 25 lines. Its speed is therefore a batch's latency plus the saga's own
bookkeeping, which must not grow with the payroll: the saga's state stays in memory while it
runs (it used to re-read its whole stream twice per outcome event, so a 20,000-line payroll
spent most of its time reading).
Timed on SQLite; the accounts are opened beforehand, untimed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.engines import engine_of
from eventbank.application.payroll_service import PayrollService
from eventbank.domain.events import ACCOUNT, AccountOpened
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import MAX_EVENTS_PER_APPEND, NewEvent, chained
from eventbank.wiring import Ledger, open_ledger

PAYROLL_ENGINES = ("sqlite",)
EMPLOYEE_OPENINGS_PER_APPEND = min(MAX_EVENTS_PER_APPEND, 25)  # within every engine's limit


@dataclass(frozen=True, slots=True)
class PayrollTiming:
    engine: str
    lines: int
    status: str  # the saga's end: "completed" unless something went wrong
    start_seconds: float  # every line validated, the saga recorded
    seconds: float  # start and every line paid
    lines_per_s: float


def open_employees(ledger: Ledger, count: int) -> list[str]:
    """``count`` empty accounts, opened by bulk appends and projected (not part of the timing)."""
    ids = [f"emp-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
    now = datetime.now(UTC).isoformat()
    for start in range(0, count, EMPLOYEE_OPENINGS_PER_APPEND):
        chunk = ids[start : start + EMPLOYEE_OPENINGS_PER_APPEND]
        opened = [AccountOpened(a, "Bench", "CHECKING", "USD") for a in chunk]
        events = [NewEvent(str(uuid.uuid4()), e.account_id, ACCOUNT, 1, e.event_type,
                           e.SCHEMA_VERSION, e.to_data(), {"recorded_at": now})
                  for e in opened]  # fmt: skip
        ledger.events.append(chained(events, {}), dict.fromkeys(chunk, 0))
    ledger.runner.catch_up()
    return ids


def measure_payroll(store_url: str, lines: int) -> PayrollTiming:
    """Pay a ``lines``-line payroll (CSV, all-or-nothing) on a fresh store; time it."""
    ledger = open_ledger(store_url)  # read models projected inline, as when serving
    try:
        staff = open_employees(ledger, lines)
        amounts = [100 + n % 1000 for n in range(lines)]  # 1.00 to 10.99 USD
        ledger.service.open_account("employer", owner="Bench", account_type="CHECKING",
                                    initial_deposit=format_minor(sum(amounts), "USD"))  # fmt: skip
        text = "".join(
            f"{account},{format_minor(amount, 'USD')},bench\n"
            for account, amount in zip(staff, amounts, strict=True)
        )
        payrolls = PayrollService(ledger.service, reads=ledger.reads)  # as serve and the CLI
        started = time.perf_counter()
        payroll = payrolls.start("employer", text, idempotency_key=f"bench-{uuid.uuid4()}")
        recorded = time.perf_counter()
        done = payrolls.run(payroll.saga_id)
        seconds = time.perf_counter() - started
    finally:
        ledger.close()
    return PayrollTiming(engine_of(store_url), lines, done.status, round(recorded - started, 3),
                         round(seconds, 3), lines / seconds)  # fmt: skip
