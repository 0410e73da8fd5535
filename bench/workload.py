"""The one workload every system runs, and how it is timed.

Standard library only: the eventsourcing peer runs this same module inside its own venv
(bench/targets/eventsourcing_peer.py), so both sides execute the identical plan and clock.

A scenario opens ``ACCOUNTS`` accounts, then ``clients`` threads start together at a barrier and
each works through its share of a seeded random list of transfers between the scenario's
``hot`` accounts (all of them unless it is the hot-account variant). Amounts are integer minor
units; balances are large enough that no transfer is ever refused for funds, so every failure
counted is a real one.

Where a CPU is given, the scenario's threads run on that one CPU (Linux affinity, inherited by
the threads it starts). Why: a Python process runs one thread at a time (the GIL), so it gains
nothing from a second core, and a hand-off of the GIL to a thread sleeping on another core waits
for a cross-CPU wake-up; every system measured here runs its threads the same way.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

ACCOUNTS = 1_000
INITIAL_MINOR = 1_000_000_000  # 10,000,000.00 each: > 100,000 transfers of at most 100.00
MAX_AMOUNT_MINOR = 10_000
SETUP_THREADS = 16
MAX_TRANSFERS = 100_000  # keeps INITIAL_MINOR sufficient whatever the plan


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    clients: int
    hot: int  # transfers go between the first ``hot`` accounts


SINGLE = Scenario("1 client", 1, ACCOUNTS)
CONCURRENT = Scenario("16 clients", 16, ACCOUNTS)
HOT = Scenario("hot: 4 clients, 10 accounts", 4, 10)
SCENARIOS = (SINGLE, CONCURRENT, HOT)


@dataclass(frozen=True, slots=True)
class Transfer:
    source: str
    target: str
    amount_minor: int


def account_id(index: int) -> str:
    return f"acct-{index:04d}"


def plan(scenario: Scenario, transfers: int, seed: int) -> list[list[Transfer]]:
    """Each client's transfers: the same list for every system given the same arguments."""
    if not 1 <= transfers <= MAX_TRANSFERS:
        raise ValueError(f"transfers must be from 1 to {MAX_TRANSFERS}")
    rng = random.Random(f"{seed}:{scenario.name}")
    work = []
    for _ in range(transfers):
        source, target = rng.sample(range(scenario.hot), 2)
        amount_minor = rng.randint(1, MAX_AMOUNT_MINOR)
        work.append(Transfer(account_id(source), account_id(target), amount_minor))
    return [work[client :: scenario.clients] for client in range(scenario.clients)]


def interleaved(scenario: Scenario, transfers: int, seed: int) -> list[Transfer]:
    """The plan's transfers in the order its clients take turns: each one's first, then each
    one's second, and so on (one thread writing what the clients would)."""
    per_client = plan(scenario, transfers, seed)
    return [t for turn in itertools.zip_longest(*per_client) for t in turn if t is not None]


class Target(Protocol):
    """One system on one engine, on a fresh, empty store."""

    system: str  # eventbank | eventsourcing | raw
    engine: str  # sqlite | postgresql | dynamodb
    variant: str  # how it writes, for the table
    batch_size: int  # transfers per ``transfer_batch`` call (1 unless the raw batched floor)
    events_per_transfer: int

    def open_accounts(self, account_ids: Sequence[str], initial_minor: int) -> None: ...

    def transfer_batch(self, transfers: Sequence[Transfer]) -> int:
        """Make the transfers durable; returns how many attempts a version conflict refused
        (and were retried). Raises if a transfer failed."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Measurement:
    system: str
    engine: str
    variant: str
    scenario: str
    clients: int
    accounts: int
    planned: int
    ok: int
    failed: dict[str, int]  # exception type -> transfers
    failure_sample: str
    conflicts: int  # attempts refused for a version conflict, then retried
    setup_s: float
    seconds: float
    transfers_per_s: float
    events_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # this process's CPU (all its threads) per successful transfer while measured
    load_average: float  # the machine's 1-minute load when the run ended: others' work skews it
    cpu: int | None = None  # the one CPU the scenario's threads ran on; None: any

    @property
    def conflict_rate(self) -> float:
        """Share of all write attempts that a version conflict refused."""
        attempts = self.ok + sum(self.failed.values()) + self.conflicts
        return self.conflicts / attempts if attempts else 0.0


def concurrently(action: Callable[[str], object], items: Iterable[str]) -> None:
    """Run ``action`` over ``items`` on a few threads (setup only; not measured as a result)."""
    with ThreadPoolExecutor(SETUP_THREADS) as pool:
        for _ in pool.map(action, items):
            pass


def client_cpu() -> int | None:
    """The CPU to run a scenario's threads on: the last this process may use (the first tends
    to take more of the kernel's own work); None if it may use only one anyway, or where the
    system has no CPU affinity to set (not Linux)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    return max(allowed) if len(allowed) > 1 else None


@contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """This thread, and the threads it starts meanwhile, run on ``cpu`` (None: unchanged)."""
    if cpu is None:
        yield
        return
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})  # pid 0: the calling thread only
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def measure(
    target: Target, scenario: Scenario, transfers: int, seed: int, cpu: int | None = None
) -> Measurement:
    """Open the accounts, run the scenario's plan on ``target`` and time every call, with the
    scenario's threads on ``cpu`` if given (the module docstring says why)."""
    with on_cpu(cpu):
        measured = _measure(target, scenario, transfers, seed)
    return replace(measured, cpu=cpu)


def _measure(target: Target, scenario: Scenario, transfers: int, seed: int) -> Measurement:
    work = plan(scenario, transfers, seed)
    started = time.perf_counter()
    target.open_accounts([account_id(i) for i in range(ACCOUNTS)], INITIAL_MINOR)
    setup_s = time.perf_counter() - started
    latencies: list[float] = []
    failed: Counter[str] = Counter()
    samples: list[str] = []
    conflicts = 0
    lock = threading.Lock()
    gate = threading.Barrier(scenario.clients + 1)

    def client(mine: list[Transfer]) -> None:
        nonlocal conflicts
        gate.wait()
        for start in range(0, len(mine), target.batch_size):
            batch = mine[start : start + target.batch_size]
            began = time.perf_counter()
            try:
                refused = target.transfer_batch(batch)
            except Exception as exc:  # noqa: BLE001 - a benchmark counts failures, never hides them
                with lock:
                    failed[type(exc).__name__] += len(batch)
                    samples.append(f"{type(exc).__name__}: {exc}")
                continue
            took = time.perf_counter() - began
            with lock:
                latencies.extend([took] * len(batch))  # a batch's transfers are acked together
                conflicts += refused

    threads = [threading.Thread(target=client, args=(mine,)) for mine in work]
    for thread in threads:
        thread.start()
    gate.wait()
    began, cpu_began = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.join()
    seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu_began
    ok = len(latencies)
    return Measurement(
        system=target.system,
        engine=target.engine,
        variant=target.variant,
        scenario=scenario.name,
        clients=scenario.clients,
        accounts=scenario.hot,
        planned=transfers,
        ok=ok,
        failed=dict(failed),
        failure_sample=samples[0][:300] if samples else "",
        conflicts=conflicts,
        setup_s=round(setup_s, 3),
        seconds=round(seconds, 4),
        transfers_per_s=ok / seconds,
        events_per_s=ok * target.events_per_transfer / seconds,
        p50_ms=percentile_ms(latencies, 0.50),
        p99_ms=percentile_ms(latencies, 0.99),
        cpu_us=cpu_s / ok * 1e6 if ok else 0.0,
        load_average=round(os.getloadavg()[0], 2),
    )


def percentile_ms(latencies_s: list[float], q: float) -> float:
    """Nearest-rank percentile, in milliseconds (0 when nothing succeeded)."""
    if not latencies_s:
        return 0.0
    ordered = sorted(latencies_s)
    return ordered[max(math.ceil(q * len(ordered)), 1) - 1] * 1000
