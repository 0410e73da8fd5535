"""The peer: the ``eventsourcing`` library's bank, run on the shared workload in its own venv.

    benchmarks/.venv-peer/bin/python -m bench.targets.eventsourcing_app URL SCENARIO N SEED

prints one ``bench.workload.Measurement`` as JSON (bench/targets/peer.py runs it). Imports only
the library and the standard library, never eventbank.

Modelled like the library's bank-accounts example: an ``Account`` aggregate whose ``credit`` and
``debit`` are events, and a transfer command that saves both aggregates in one ``app.save``
(atomic in the library's recorders). Aggregate caching is on, as eventbank's account cache, and
snapshots are taken every 100 events, as eventbank does. Amounts are integer minor units. A
save refused for a version conflict is retried with eventbank's policy (12 attempts, full
jitter from 2 ms, capped at 250 ms), so both sides do the same work for a successful transfer.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import RecordConflictError

from bench.workload import SCENARIOS, SETUP_THREADS, Transfer, concurrently, measure

NAMESPACE = uuid.UUID("5b3c8f1e-2a4d-4e8b-9c1f-0d6e7a8b9c10")
MAX_ATTEMPTS = 12
BACKOFF_BASE_S = 0.002
BACKOFF_CAP_S = 0.25


class InsufficientFunds(Exception):
    pass


class Account(Aggregate):
    @staticmethod
    def create_id(account_id: str) -> uuid.UUID:
        return uuid.uuid5(NAMESPACE, account_id)

    @event("Opened")
    def __init__(self, account_id: str):
        self.account_id = account_id
        self.balance_minor = 0

    @event("Credited")
    def credit(self, amount_minor: int) -> None:
        self.balance_minor += amount_minor

    @event("Debited")
    def debit(self, amount_minor: int) -> None:
        if amount_minor > self.balance_minor:
            raise InsufficientFunds(self.account_id)
        self.balance_minor -= amount_minor


class Bank(Application):
    snapshotting_intervals = {Account: 100}

    def open_account(self, account_id: str, initial_minor: int) -> None:
        account = Account(account_id)
        account.credit(initial_minor)
        self.save(account)

    def transfer(self, source: str, target: str, amount_minor: int) -> None:
        debited = self.repository.get(Account.create_id(source))
        credited = self.repository.get(Account.create_id(target))
        debited.debit(amount_minor)
        credited.credit(amount_minor)
        self.save(debited, credited)


class PeerTarget:
    system = "eventsourcing"
    batch_size = 1
    events_per_transfer = 2  # Debited + Credited

    def __init__(self, store_url: str):
        self.variant = f"{version('eventsourcing')}, cache on"
        self.engine, env = _environment(store_url)
        self.app = Bank(env=env)
        self.durability = self._durability()

    def _durability(self) -> str:
        """What the library's own connections do on commit, read back rather than assumed."""
        if self.engine != "sqlite":
            return "the server's settings"
        with self.app.factory.datastore.transaction(commit=False) as cursor:
            cursor.execute("PRAGMA synchronous")
            level = cursor.fetchone()[0]
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()[0]
        return f"journal_mode={mode}, synchronous={level} (2 = FULL)"

    def open_accounts(self, account_ids: Sequence[str], initial_minor: int) -> None:
        concurrently(lambda account: self.app.open_account(account, initial_minor), account_ids)

    def transfer_batch(self, transfers: Sequence[Transfer]) -> int:
        conflicts = 0
        for t in transfers:
            for attempt in range(MAX_ATTEMPTS):
                try:
                    self.app.transfer(t.source, t.target, t.amount_minor)
                    break
                except RecordConflictError:
                    conflicts += 1
                    if attempt == MAX_ATTEMPTS - 1:
                        raise
                    cap = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt + 1))
                    time.sleep(random.uniform(0, cap))
        return conflicts

    def close(self) -> None:
        self.app.close()


def _environment(store_url: str) -> tuple[str, dict[str, Any]]:
    """The engine name and the library's settings for ``store_url`` (sqlite:///PATH or
    postgresql://USER[:PASSWORD]@HOST:PORT/DB)."""
    common = {"AGGREGATE_CACHE_MAXSIZE": "10000"}  # eventbank's cache_size default
    parts = urlsplit(store_url)
    if parts.scheme == "sqlite":
        path = store_url[len("sqlite:///") :]
        return "sqlite", {
            **common,
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
        }
    return "postgresql", {
        **common,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_PASSWORD": parts.password or "",
        "POSTGRES_POOL_SIZE": str(SETUP_THREADS),  # no client ever waits for a connection
    }


def main() -> None:
    url, scenario_name, transfers, seed, cpu = sys.argv[1:]
    scenario = next(s for s in SCENARIOS if s.name == scenario_name)
    target = PeerTarget(url)
    try:
        measured = measure(
            target, scenario, int(transfers), int(seed), None if cpu == "any" else int(cpu)
        )
    finally:
        target.close()
    print(json.dumps({"measurement": asdict(measured), "durability": target.durability}))


if __name__ == "__main__":
    main()
