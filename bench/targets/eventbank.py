"""eventbank on any store URL: the service's command path, as a library user calls it.

No read models here (the peer library has none either): projection speed is measured apart.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from bench.engines import engine_of
from bench.workload import Transfer, concurrently
from eventbank.application.service import LedgerService
from eventbank.domain.money import format_minor
from eventbank.engines.urls import open_store

CURRENCY = "USD"


class ConflictCounter:
    """A CommandObserver counting, per thread, the attempts a version conflict refused."""

    def __init__(self) -> None:
        self._local = threading.local()

    def count(self) -> int:
        return getattr(self._local, "count", 0)

    def command_retried(self, command: str, reason: str) -> None:
        if reason == "ConcurrencyConflict":
            self._local.count = self.count() + 1

    def command_finished(self, command: str, outcome: str, seconds: float) -> None:
        """Outcomes are counted by the workload itself."""


class EventbankTarget:
    system = "eventbank"
    variant = "LedgerService"
    batch_size = 1
    events_per_transfer = 2  # TransferredOut + TransferredIn

    def __init__(self, store_url: str):
        self.store_url = store_url
        self.engine = engine_of(store_url)
        self._conflicts = ConflictCounter()
        self.service = LedgerService(open_store(store_url), observer=self._conflicts)

    def open_accounts(self, account_ids: Sequence[str], initial_minor: int) -> None:
        deposit = format_minor(initial_minor, CURRENCY)
        concurrently(
            lambda account: self.service.open_account(
                account, owner="Bench", account_type="CHECKING", initial_deposit=deposit
            ),
            account_ids,
        )

    def transfer_batch(self, transfers: Sequence[Transfer]) -> int:
        before = self._conflicts.count()
        for t in transfers:
            self.service.transfer(t.source, t.target, format_minor(t.amount_minor, CURRENCY))
        return self._conflicts.count() - before

    def close(self) -> None:
        self.service.store.close()
