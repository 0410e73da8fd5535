"""Benchmark: loading an account with 100 events vs 100,000 events, with and without snapshots.

    make bench            # or: .venv/bin/python bench/load_account.py [--store URL]

Prints the median of repeated loads for each case side by side. With snapshots, a 100,000-event
account should cost about what a 100-event one does (snapshot + a short tail).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from eventbank.service import LedgerService
from eventbank.store.contract import NewEvent, chained
from eventbank.store.url import open_store

BATCH = 1_000


class NoSnapshots:
    """The same store with snapshots hidden: every load replays the whole stream."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def load_snapshot(self, aggregate_id):
        return None


def fill(service: LedgerService, account: str, events: int) -> None:
    """Open ``account`` and bulk-append deposits until it has ``events`` events."""
    service.open_account(account, owner="Bench", account_type="CHECKING")
    store = service.store
    version, head = 1, store.read_stream(account)[-1].hash
    while version < events:
        size = min(BATCH, events - version)
        batch = chained([
            NewEvent(str(uuid.uuid4()), account, "Account", version + i + 1, "FundsDeposited", 2,
                     {"account_id": account, "amount_minor": 1, "currency": "USD",
                      "channel": "bench"})
            for i in range(size)
        ], {account: head})  # fmt: skip
        store.append(batch, {account: version})
        version, head = version + size, batch[-1].hash
    service.take_snapshot(account)


def median_load_ms(service: LedgerService, account: str, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        service.load_account(account)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URL (default: a temporary SQLite file)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    url = args.store or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    store = open_store(url)
    service = LedgerService(store)
    small, large = f"small-{uuid.uuid4().hex[:6]}", f"large-{uuid.uuid4().hex[:6]}"
    print(f"store: {url}\nwriting 100 + 100,000 events …", flush=True)
    fill(service, small, 100)
    fill(service, large, 100_000)
    service.deposit(small, "1")  # a short tail after each snapshot, as in real life
    service.deposit(large, "1")
    replaying = LedgerService(NoSnapshots(store))
    rows = [
        ("100 events, snapshot + tail", median_load_ms(service, small, args.repeats)),
        ("100,000 events, snapshot + tail", median_load_ms(service, large, args.repeats)),
        ("100 events, full replay", median_load_ms(replaying, small, args.repeats)),
        (
            "100,000 events, full replay",
            median_load_ms(replaying, large, max(3, args.repeats // 3)),
        ),
    ]
    print(f"\n{'load account':<34}{'median ms':>12}")
    for name, ms in rows:
        print(f"{name:<34}{ms:>12.2f}")
    print(f"\n100,000 vs 100 events with snapshots: {rows[1][1] / rows[0][1]:.2f}x "
          f"(without: {rows[3][1] / rows[2][1]:.0f}x)")  # fmt: skip
    store.close()


if __name__ == "__main__":
    main()
