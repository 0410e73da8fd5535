"""``eventbank demo`` (what ``make run`` shows until the HTTP service lands): each guarantee,
demonstrated on a real store rather than described."""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from eventbank.application.service import LedgerService
from eventbank.application.statements import statement
from eventbank.domain.errors import EventbankError
from eventbank.domain.money import format_minor, format_money
from eventbank.ports.event_store import DuplicateEvent, NewEvent
from eventbank.wiring import open_ledger


def run_demo(out: Console, store_url: str | None = None) -> None:
    if store_url is None:
        store_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='eventbank-demo-')) / 'demo.db'}"
    opened = open_ledger(store_url)
    store, ledger = opened.events, opened.service
    try:
        out.rule("eventbank demo")
        out.print(f"store: {store_url}")
        ledger.open_account("alice", owner="Alice", account_type="CHECKING",
                            initial_deposit="100.00")  # fmt: skip
        ledger.open_account("bob", owner="Bob", account_type="SAVINGS")
        out.print("opened alice (100.00 USD) and bob (0.00 USD)")

        out.rule("1. two racing withdrawals of 80.00 from 100.00")
        outcomes: list[str] = []
        start = threading.Barrier(2)

        def withdraw() -> None:
            start.wait()
            try:
                ledger.withdraw("alice", "80.00")
                outcomes.append("succeeded")
            except EventbankError as exc:
                outcomes.append(f"refused ({exc.code})")

        threads = [threading.Thread(target=withdraw) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        out.print(f"outcomes: {sorted(outcomes)}; alice now {ledger.get_account('alice').balance}"
                  " (never -60.00)")  # fmt: skip

        out.rule("2. a retried transfer moves money once")
        for attempt in (1, 2):
            receipt = ledger.transfer("alice", "bob", "5.00", command_id="demo-transfer-1")
            out.print(f"attempt {attempt}: replayed={receipt.replayed}, "
                      f"bob now {ledger.get_account('bob').balance}")  # fmt: skip

        out.rule("3. the same event appended twice")
        last = store.read_stream("bob")[-1]
        again = NewEvent(
            last.event_id,
            last.aggregate_id,
            last.aggregate_type,
            last.version + 1,
            last.event_type,
            last.schema_version,
            last.data,
            last.metadata,
        )
        try:
            store.append([again], {"bob": last.version})
        except DuplicateEvent as exc:
            out.print(f"refused: {exc}; bob still has {len(store.read_stream('bob'))} events")

        _holds(out, ledger)
        _journal(out, ledger)

        out.rule("6. the books balance")
        names = ("alice", "bob", "fees")
        total = sum(ledger.get_account(a).balance_minor for a in names)
        out.print(f"alice + bob + fees = {format_minor(total, 'USD')} USD "
                  "= 100.00 deposited - 80.00 withdrawn")  # fmt: skip
    finally:
        opened.close()


def _journal(out: Console, ledger: LedgerService) -> None:
    """A fee split as one multi-leg entry, a partial refund of it, and the fee account's
    statement."""
    out.rule("5. a fee split, a partial refund and a statement")
    ledger.open_account("fees", owner="Fees", account_type="CHECKING")
    split = ledger.post_transaction(
        [("alice", "debit", "4.00"), ("bob", "credit", "3.80"), ("fees", "credit", "0.20")],
        currency="USD", description="order 1042", metadata={"order_id": "1042"},
    ).outcome  # fmt: skip
    shown = ", ".join(f"{leg['account_id']} {'-' if leg['direction'] == 'debit' else '+'}"
                      f"{leg['amount']}" for leg in split["legs"])  # fmt: skip
    out.print(f"one entry, three legs, one atomic write: {shown}")
    refund = ledger.reverse(split["transaction_id"], "2.00").outcome
    legs = ", ".join(f"{leg['account_id']} {leg['amount']}" for leg in refund["legs"])
    out.print(f"refunded 2.00 of it, leg by leg in proportion ({legs}); "
              f"{refund['reversed_total']} of 4.00 reversed so far")  # fmt: skip
    try:
        ledger.reverse(split["transaction_id"], "2.50")
    except EventbankError as exc:
        out.print(f"refunding 2.50 more: refused ({exc.code})")
    now = ledger.clock()
    found = statement(ledger.store, "fees", now - timedelta(days=1), now, now=now)
    out.print("fees' statement, from its events:")
    for line in found.lines:
        out.print(f"  {line.description}: {format_minor(line.amount_minor, 'USD')}, "
                  f"balance {format_minor(line.balance_after_minor, 'USD')}")  # fmt: skip
    out.print(f"  opening {format_minor(found.opening_minor, 'USD')} + in "
              f"{format_minor(found.total_in_minor, 'USD')} - out "
              f"{format_minor(found.total_out_minor, 'USD')} = closing "
              f"{format_minor(found.closing_minor, 'USD')}")  # fmt: skip


def _holds(out: Console, ledger: LedgerService) -> None:
    """A pending transfer posted in part, and one that expires."""

    def available(account: str) -> str:
        state = ledger.get_account(account)
        return format_money(state.available_minor, state.currency)

    out.rule("4. a hold, a partial post and an expiry")
    held = ledger.transfer("alice", "bob", "10.00", pending=True, timeout_s=3600).outcome
    out.print(f"hold of 10.00 from alice to bob: alice available {available('alice')}, "
              f"bob balance {ledger.get_account('bob').balance} (nothing moved yet)")  # fmt: skip
    ledger.post_transfer(held["transfer_id"], "6.00")
    out.print(f"posted 6.00 of it: bob now {ledger.get_account('bob').balance}, the other 4.00 "
              f"released: alice available {available('alice')}")  # fmt: skip
    brief = ledger.transfer("alice", "bob", "4.00", pending=True, timeout_s=1).outcome
    out.print(f"a hold of 4.00 with a 1 s timeout: alice available {available('alice')}")
    time.sleep(1.1)
    try:
        ledger.post_transfer(brief["transfer_id"])
    except EventbankError as exc:
        out.print(f"posting it 1.1 s later: refused ({exc.code})")
    ledger.expire_transfer(brief["transfer_id"])
    out.print(f"its expiry recorded: alice available {available('alice')} again")
