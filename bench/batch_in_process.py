"""What the batch scenario's server could do at most: ``LedgerService.transfer_batch`` called in
the benchmark's own process, no HTTP, on the service ``eventbank serve`` builds (inline projection
of each group-commit batch), over the same accounts and batches as wrk sends. Measured again
with no projection at all (``NOT_PROJECTED``: each transfer decided, its events and command
record written durably, nothing read back into the read model): what the commands cost alone,
the floor under the batch bar that no HTTP or projection work can lower.

``scenario.connections`` threads each send batches of ``scenario.batch`` random transfers (the
same amounts and keys as bench/http_transfers.lua) for ``seconds``. The row is an
``HttpMeasurement`` so that it sits beside the HTTP rows of its scenario: transfers/s, latency per
batch, this process's CPU per transfer (making the batches' items included, as the server's
includes reading them), no projection lag (projected inline before each answer).
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
import uuid

from bench.http_load import CURRENCY, HttpMeasurement, HttpScenario
from bench.workload import INITIAL_MINOR, MAX_AMOUNT_MINOR, account_id, concurrently
from eventbank.application.batch import BatchItem
from eventbank.domain.money import format_minor
from eventbank.wiring import open_ledger

IN_PROCESS = "in process, no HTTP"
NOT_PROJECTED = "no HTTP, no projection"


def measure_in_process_batch(
    engine: str,
    scenario: HttpScenario,
    seconds: int,
    seed: int,
    store_url: str,
    *,
    projected: bool = True,
) -> HttpMeasurement:
    """The ``IN_PROCESS`` row, or with ``projected=False`` the ``NOT_PROJECTED`` one (no inline
    projection and no runner: nothing is read back into the read model)."""
    ledger = open_ledger(store_url, inline=projected)
    try:
        started = time.perf_counter()
        deposit = format_minor(INITIAL_MINOR, CURRENCY)
        concurrently(
            lambda account: ledger.service.open_account(
                account, owner="Bench", account_type="CHECKING", initial_deposit=deposit
            ),
            [account_id(i) for i in range(scenario.opened)],
        )
        setup_s = time.perf_counter() - started
        done, latencies = [0], []
        lock = threading.Lock()
        deadline = time.perf_counter() + seconds
        prefix = uuid.uuid4().hex[:12]

        def client(number: int) -> None:
            rng = random.Random(f"{seed}:{number}")
            while time.perf_counter() < deadline:
                items = [_item(rng, scenario.accounts, f"{prefix}-{number}-{uuid.uuid4().hex}")
                         for _ in range(scenario.batch)]  # fmt: skip
                took = time.perf_counter()
                results = ledger.service.transfer_batch(items)
                took = time.perf_counter() - took
                with lock:
                    done[0] += sum(result.status == "ok" for result in results)
                    latencies.append(took)

        cpu_before, began = time.process_time(), time.perf_counter()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(scenario.connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        run_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu_before
    finally:
        ledger.close()
    ok = done[0]
    cuts = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else latencies * 99
    )
    return HttpMeasurement(
        system=IN_PROCESS if projected else NOT_PROJECTED,
        engine=engine,
        scenario=scenario.name,
        connections=scenario.connections,
        accounts=scenario.accounts,
        setup_s=round(setup_s, 3),
        seconds=round(run_s, 3),
        requests=len(latencies),
        ok=ok,
        non_2xx={},
        socket_errors={},
        transfers_per_s=ok / run_s,
        p50_ms=cuts[49] * 1000,
        p90_ms=cuts[89] * 1000,
        p99_ms=cuts[98] * 1000,
        max_ms=max(latencies) * 1000,
        server_cpu_us=cpu_s / ok * 1e6 if ok else 0.0,
        server_cpu_s=round(cpu_s, 3),
        lag_events=None,
        lag_zero_s=None,
        load_average=round(os.getloadavg()[0], 2),
    )


def _item(rng: random.Random, accounts: int, key: str) -> BatchItem:
    source, target = rng.sample(range(accounts), 2)
    amount = format_minor(rng.randint(1, MAX_AMOUNT_MINOR), CURRENCY)
    return BatchItem(account_id(source), account_id(target), amount, key)
