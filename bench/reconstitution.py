"""Reconstitution and projection figures for the report.

Loading an account with 100 and with 100,000 events, with snapshots (snapshot + a short tail)
and, for contrast, by full replay: with snapshots a 100,000-event account should cost about
what a 100-event one does. And rebuilding the read models from a store's whole feed, in
events/s (``ProjectionRunner.rebuild``, as ``eventbank projections rebuild``).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass

from bench.engines import engine_of
from eventbank.application.service import LedgerService
from eventbank.engines.dynamodb import event_store as dynamodb
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import MAX_EVENTS_PER_APPEND, NewEvent, chained
from eventbank.wiring import open_ledger


@dataclass(frozen=True, slots=True)
class LoadTimes:
    engine: str
    events: int
    snapshot_ms: float  # median load: newest snapshot + the events after it
    replay_ms: float  # median load: every event from version 1


@dataclass(frozen=True, slots=True)
class Rebuild:
    engine: str
    events: int
    seconds: float
    events_per_s: float


class NoSnapshots:
    """The same store with snapshots hidden: every load replays the whole stream."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def load_snapshot(self, aggregate_id):
        return None


def fill(service: LedgerService, account: str, events: int) -> None:
    """Open ``account`` and bulk-append deposits until it has ``events`` events; snapshot it."""
    service.open_account(account, owner="Bench", account_type="CHECKING")
    store = service.store
    batch_limit = MAX_EVENTS_PER_APPEND
    if isinstance(store, dynamodb.DynamoEventStore):  # one transaction: a guard per event and
        batch_limit = (dynamodb.MAX_TRANSACTION_ITEMS - 1) // 2  # the expected version's check
    deposit = {"account_id": account, "amount_minor": 1, "currency": "USD", "channel": "bench"}
    version, head = 1, store.read_stream(account)[-1].hash
    while version < events:
        size = min(batch_limit, events - version)
        batch = chained([
            NewEvent(str(uuid.uuid4()), account, "Account", version + i + 1, "FundsDeposited", 2,
                     deposit)
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


def measure_loads(store_url: str, sizes: tuple[int, ...], repeats: int) -> list[LoadTimes]:
    """For each size, an account of that many events loaded with and without snapshots.

    Services are built with ``cache_size=0``: a load must read the store, not the cache.
    """
    store = open_store(store_url)
    try:
        service = LedgerService(store, cache_size=0)
        replaying = LedgerService(NoSnapshots(store), cache_size=0)
        accounts = {size: f"load-{size}-{uuid.uuid4().hex[:6]}" for size in sizes}
        for size, account in accounts.items():  # all written before any is timed
            fill(service, account, size)
            service.deposit(account, "1")  # a short tail after the snapshot, as in real life
        return [
            LoadTimes(
                engine_of(store_url),
                size,
                median_load_ms(service, account, repeats),
                median_load_ms(replaying, account, repeats if size <= 10_000 else 3),  # slow
            )
            for size, account in accounts.items()
        ]
    finally:
        store.close()


def measure_rebuild(store_url: str) -> Rebuild:
    """Drop the read models beside ``store_url`` and project its whole feed again."""
    ledger = open_ledger(store_url, inline=False)
    try:
        events, seconds = ledger.runner.rebuild()
    finally:
        ledger.close()
    return Rebuild(engine_of(store_url), events, round(seconds, 3), events / seconds)
