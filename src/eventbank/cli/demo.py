"""``eventbank demo`` (what ``make run`` shows until the HTTP service lands): each guarantee,
demonstrated on a real store rather than described."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from rich.console import Console

from eventbank.application.service import LedgerService
from eventbank.domain.errors import EventbankError
from eventbank.domain.money import format_minor
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import DuplicateEvent, NewEvent


def run_demo(out: Console, store_url: str | None = None) -> None:
    if store_url is None:
        store_url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='eventbank-demo-')) / 'demo.db'}"
    store = open_store(store_url)
    ledger = LedgerService(store)
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

        out.rule("4. the books balance")
        total = sum(ledger.get_account(a).balance_minor for a in ("alice", "bob"))
        out.print(f"alice + bob = {format_minor(total, 'USD')} USD "
                  "= 100.00 deposited - 80.00 withdrawn")  # fmt: skip
    finally:
        store.close()
