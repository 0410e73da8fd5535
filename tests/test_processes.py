"""The specification's race, between two OS processes sharing one store, on every engine.

Each round opens an account with 100.00; two worker processes wait at a barrier, then both
withdraw 80.00. Exactly one may succeed; the balance must end at 20.00, never -60.00.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from eventbank.application.service import LedgerService
from eventbank.domain.errors import EventbankError
from eventbank.engines.urls import open_store

ROUNDS = 12
_worker: dict = {}


def _start_worker(store_url: str, barrier) -> None:
    _worker["service"] = LedgerService(open_store(store_url))
    _worker["barrier"] = barrier


def _withdraw(account_id: str, amount: str) -> str:
    _worker["barrier"].wait(timeout=60)
    try:
        _worker["service"].withdraw(account_id, amount)
        return "ok"
    except EventbankError as exc:
        return exc.code


def test_two_processes_withdrawing_80_from_100_never_both_succeed(store_url):
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    service = LedgerService(open_store(store_url))
    with ProcessPoolExecutor(2, context, _start_worker, (store_url, barrier)) as pool:
        for round_ in range(ROUNDS):
            account = f"proc-{round_}"
            service.open_account(account, owner="Ann", account_type="CHECKING",
                                 initial_deposit="100.00")  # fmt: skip
            futures = [pool.submit(_withdraw, account, "80.00") for _ in range(2)]
            outcomes = sorted(f.result(timeout=120) for f in futures)
            assert outcomes.count("ok") == 1, outcomes
            assert set(outcomes) <= {"ok", "insufficient_funds", "concurrency_conflict"}
            assert service.get_account(account).describe()["balance"] == "20.00"
    service.store.close()
