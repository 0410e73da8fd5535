"""The webhook figure: how fast one subscription's delivery empties a backlog, beside the floor
of the same signed requests sent by a bare HTTP client, in the same run.

On a fresh store, one subscription to every event type, then ``transfers`` transfers made in
process (two events each, untimed). Timed: a ``DeliveryWorker`` (as ``eventbank serve`` runs
it) from the first request until the subscription's checkpoint reaches the feed's end: each
batch of 100 events read from the store, filtered, encoded, signed, POSTed, and its checkpoint
written. The floor: the same batches, encoded and signed beforehand, POSTed one after another
by an ``httpx`` client with the worker's settings (one connection per request). The receiver
is a process of its own (bench/webhook_receiver.py) that answers 204.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from bench.engines import engine_of
from eventbank.application.webhooks import DeliveryWorker, WebhookService, event_json
from eventbank.domain.canonical import canonical_json
from eventbank.ports.event_store import RecordedEvent
from eventbank.webhooks import SIGNATURE_HEADER, sign_all
from eventbank.wiring import Ledger, open_ledger
from reliability.chaos import feed

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_ENGINES = ("sqlite",)
BATCH = 100  # events per request: the worker's default
ACCOUNTS = 20


@dataclass(frozen=True, slots=True)
class WebhookTiming:
    engine: str
    events: int
    requests: int
    seconds: float
    events_per_s: float
    cpu_us_per_event: float  # the benchmark process's CPU (the deliverer's), per event
    floor_events_per_s: float  # the same signed batches from a bare client

    @property
    def ratio_to_floor(self) -> float:
        return self.events_per_s / self.floor_events_per_s


def measure_webhooks(store_url: str, transfers: int) -> WebhookTiming:
    receiver = subprocess.Popen(
        [sys.executable, "-m", "bench.webhook_receiver"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    ledger = open_ledger(store_url)
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/hooks"
        service = WebhookService(ledger.events, ledger.reads, key=Fernet.generate_key(),
                                 allow_http=True)  # fmt: skip
        subscription, secret = service.add(url)
        (tracked,) = service.tracked()
        _transfers(ledger, transfers)
        every = feed(ledger.events, service.checkpoint(tracked))
        events = [e for e in every if subscription.wants(e)]  # not the webhook's own events
        worker = DeliveryWorker(service, ledger.events, poll_interval_s=0.005)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), name="webhooks")
        cpu, started = time.process_time(), time.perf_counter()
        thread.start()
        while service.checkpoint(tracked) < (every[-1].position or 0):
            time.sleep(0.002)  # one read-store row per look: little beside the worker
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        stop.set()
        thread.join()
        floor_s = _floor(url, secret, subscription.webhook_id, events)
    finally:
        ledger.close()
        receiver.communicate(timeout=10)
    requests = -(-len(events) // BATCH)
    return WebhookTiming(engine_of(store_url), len(events), requests, round(seconds, 3),
                         len(events) / seconds, cpu / len(events) * 1e6,
                         len(events) / floor_s)  # fmt: skip


def _transfers(ledger: Ledger, count: int) -> None:
    accounts = [f"wh-{n}" for n in range(ACCOUNTS)]
    for account in accounts:
        ledger.service.open_account(account, owner="Bench", account_type="CHECKING",
                                    initial_deposit="1000000.00")  # fmt: skip
    for n in range(count):
        ledger.service.transfer(accounts[n % ACCOUNTS], accounts[(n + 1) % ACCOUNTS], "0.01",
                                command_id=str(uuid.uuid4()))  # fmt: skip


def _floor(url: str, secret: str, webhook_id: str, events: list[RecordedEvent]) -> float:
    """Seconds a bare client takes to POST the same batches, built and signed beforehand."""
    bodies = [
        canonical_json({"webhook_id": webhook_id,
                        "events": [event_json(e) for e in events[i : i + BATCH]]}).encode()
        for i in range(0, len(events), BATCH)
    ]  # fmt: skip
    signed = [(b, sign_all([secret], int(time.time()), b)) for b in bodies]
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(limits=limits, trust_env=False) as client:
        started = time.perf_counter()
        for body, signature in signed:
            client.post(url, content=body, headers={SIGNATURE_HEADER: signature,
                        "Content-Type": "application/json"}).raise_for_status()  # fmt: skip
        return time.perf_counter() - started
