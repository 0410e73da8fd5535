"""Webhooks (application/webhooks) with a real HTTP receiver on loopback: subscriptions kept in
the event store on every engine, each event delivered in feed order with a valid signature, a
checkpoint that moves only after a 2xx, failures retried with backoff and never skipped,
replay, filters, pause, secret rotation, and every bad input refused with nothing stored.

Loopback receivers need ``allow_http`` (http) and so loopback addresses; a service with the
defaults refuses them, as tested below."""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import CollectorRegistry

from eventbank.application.webhooks import (
    DeliveryWorker,
    Subscription,
    WebhookService,
    load_or_create_key,
)
from eventbank.domain.canonical import canonical_json
from eventbank.domain.errors import EventbankError, InvalidInput, NotFound
from eventbank.engines.urls import open_read_store
from eventbank.ports.event_store import RecordedEvent
from eventbank.ports.read_store import ReadStore
from eventbank.webhooks import SIGNATURE_HEADER, SignatureError, parse, verify
from eventbank.wiring import Ledger, open_ledger

KEY = Fernet.generate_key()
# Short backoffs; timeouts long enough that a busy machine's slow answer is not a failure.
FAST = {"backoff_base_s": 0.001, "backoff_cap_s": 0.005, "connect_timeout_s": 5.0,
        "read_timeout_s": 10.0}  # fmt: skip


# ------------------------------------------------------------ the receiver


class Receiver:
    """A real HTTP server on 127.0.0.1 that records each request and answers as told:
    ``status``, after ``delay_s``, with ``headers`` and a body (``body``, or ``endless``)."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.requests: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, …)
        self.status, self.delay_s, self.body, self.endless = 200, 0.0, b"", False
        self.headers: dict[str, str] = {}
        self._lock = threading.Lock()
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                with receiver._lock:
                    receiver.requests.append((status, dict(self.headers.items()), body))
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                try:
                    self.send_response(status)
                    for name, value in receiver.headers.items():
                        self.send_header(name, value)
                    if receiver.endless:
                        self.end_headers()
                        chunk = b"x" * 65_536
                        for _ in range(100_000):  # 6.5 GB, were it read to the end
                            self.wfile.write(chunk)
                    else:
                        self.send_header("Content-Length", str(len(receiver.body)))
                        self.end_headers()
                        self.wfile.write(receiver.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        if self.tls is not None:
            self._server.socket = self.tls.wrap_socket(self._server.socket, server_side=True)
        self._port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Down: connections to its port are refused until ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}/hooks/eventbank"

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The requests it answered with a 2xx."""
        with self._lock:
            return [(h, b) for status, h, b in self.requests if 200 <= status < 300]

    def events(self, secret: str | list[str] | None = None) -> list[dict[str, Any]]:
        """Every event of the accepted requests, in the order received; each request's
        signature checked against ``secret`` (any of a list)."""
        found = []
        for headers, body in self.accepted():
            if secret is not None:
                verify_any(body, headers[SIGNATURE_HEADER], secret)
            found.extend(json.loads(body)["events"])
        return found


def verify_any(body: bytes, header: str, secret: str | list[str]) -> None:
    for candidate in [secret] if isinstance(secret, str) else secret:
        verify(body, header, candidate)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for r in made:
        r.stop()


# ------------------------------------------------------------ ledgers and workloads


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    yield ledger
    ledger.close()


@pytest.fixture
def sqlite_ledger(sqlite_store_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(sqlite_store_url)
    yield ledger
    ledger.close()


def service_of(ledger: Ledger, **options: Any) -> WebhookService:
    options = {"allow_http": True} | options
    return WebhookService(ledger.events, ledger.reads, key=KEY, **options)


def worker_of(service: WebhookService, **options: Any) -> DeliveryWorker:
    worker = DeliveryWorker(service, service.events, **(FAST | options))
    return worker


def workload(ledger: Ledger, commands: int, seed: int, prefix: str = "acct") -> None:
    """Accounts opened, then random deposits, withdrawals and transfers (some refused)."""
    rng = random.Random(seed)
    s = ledger.service
    accounts = [f"{prefix}-{i}" for i in range(4)]
    for account in accounts:
        s.open_account(account, owner=account, account_type="CHECKING", initial_deposit="50.00")
    for _ in range(commands):
        kind = rng.choice(["deposit", "withdraw", "transfer"])
        a, b = rng.sample(accounts, 2)
        amount = f"{rng.randint(1, 3000) / 100:.2f}"
        try:
            if kind == "deposit":
                s.deposit(a, amount)
            elif kind == "withdraw":
                s.withdraw(a, amount)
            else:
                s.transfer(a, b, amount)
        except EventbankError:
            pass  # insufficient funds: refused, nothing recorded


def feed(ledger: Ledger, after: int = 0) -> list[RecordedEvent]:
    """Every event of the feed after ``after``, in feed order."""
    found: list[RecordedEvent] = []
    while batch := ledger.events.read_all(after, 1_000):
        found += batch
        after = batch[-1].position or after
        if len(batch) < 1_000:
            break
    return found


def wanted(ledger: Ledger, subscription: Subscription, after: int = 0) -> list[str]:
    """The ids of the events ``subscription`` is to be delivered, in feed order."""
    return [e.event_id for e in feed(ledger, after) if subscription.wants(e)]


def drain(worker: DeliveryWorker, until: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Delivery passes until ``until()`` holds."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "delivery did not finish in time"
        worker.deliver_once()
        time.sleep(0.005)


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["event_id"] for e in events]


# ------------------------------------------------------------ delivery, on every engine


def test_every_event_of_a_random_workload_is_delivered_in_feed_order_signed(
    ledger: Ledger, receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    service = service_of(ledger)
    before = feed(ledger)  # events before the subscription are not delivered
    ledger.service.open_account("early", owner="E", account_type="CHECKING")
    subscription, secret = service.add(receiver.url, description="warehouse")
    assert secret.startswith("whsec_") and len(secret) >= 32 + len("whsec_")
    workload(ledger, 30, seed=7)
    expected = wanted(ledger, subscription)
    early = [e.event_id for e in feed(ledger) if e.aggregate_id == "early"]
    expected = [i for i in expected if i not in early]
    assert len(expected) >= 30 and not before
    worker = worker_of(service, batch_size=7, metrics=registry)
    drain(worker, lambda: len(receiver.events()) >= len(expected))
    delivered = receiver.events(secret)  # every signature verified
    assert ids(delivered) == expected
    assert len(receiver.requests) > 1  # in batches of at most 7 events read
    positions = [e["position"] for e in delivered]
    assert positions == sorted(positions)
    first = delivered[0]
    stored = next(e for e in feed(ledger) if e.event_id == first["event_id"])
    assert first == {
        "event_id": stored.event_id, "event_type": stored.event_type,
        "aggregate_id": stored.aggregate_id, "aggregate_type": stored.aggregate_type,
        "version": stored.version, "position": stored.position,
        "recorded_at": stored.metadata["recorded_at"], "schema_version": stored.schema_version,
        "data": dict(stored.data),
    }  # fmt: skip
    headers, body = receiver.accepted()[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "eventbank-webhooks"
    assert headers["Eventbank-Webhook-Id"] == subscription.webhook_id
    assert json.loads(body)["webhook_id"] == subscription.webhook_id
    assert not any(e["aggregate_id"].startswith("webhook#") for e in delivered)
    status = service.status(subscription.webhook_id)
    assert status["checkpoint"] == feed(ledger)[-1].position
    assert (status["lag_events"], status["attempts"], status["failing"]) == (0, 0, False)
    assert status["last_success_at"] is not None
    value = registry.get_sample_value
    assert value("eventbank_webhook_deliveries_total", {"outcome": "delivered"}) == len(
        receiver.requests
    )
    assert value("eventbank_webhook_deliveries_total", {"outcome": "failed"}) == 0
    assert value("eventbank_webhook_lag_events", {"webhook_id": subscription.webhook_id}) == 0
    assert value("eventbank_webhook_failing", {"webhook_id": subscription.webhook_id}) == 0
    assert worker.deliver_once() == 0  # nothing new: nothing sent
    worker.close()


def test_a_receiver_down_then_up_gets_everything_in_order_and_the_checkpoint_waits_for_2xx(
    ledger: Ledger, receiver: Receiver
) -> None:
    registry = CollectorRegistry()
    service = service_of(ledger)
    subscription, secret = service.add(receiver.url)
    start = service.status(subscription.webhook_id)["checkpoint"]
    receiver.stop()  # connection refused
    workload(ledger, 8, seed=3)
    expected = wanted(ledger, subscription)
    worker = worker_of(service, batch_size=5, failing_after=3, metrics=registry)
    for _ in range(3):
        time.sleep(0.01)  # past the backoff
        assert worker.deliver_once() == 0
    status = service.status(subscription.webhook_id)
    assert status["checkpoint"] == start and status["attempts"] == 3
    assert status["lag_events"] == len(expected)
    assert "ConnectError" in status["last_error"]
    failing = service.get(subscription.webhook_id)
    assert failing.failing and "ConnectError" in (failing.last_error or "")
    assert (
        registry.get_sample_value(
            "eventbank_webhook_failing", {"webhook_id": subscription.webhook_id}
        )
        == 1
    )
    # Another process sees it failing: the verdict is an event.
    assert service_of(ledger).get(subscription.webhook_id).failing

    receiver.start()
    receiver.status = 503  # up, but refusing
    for _ in range(2):
        time.sleep(0.01)
        assert worker.deliver_once() == 0
    assert service.status(subscription.webhook_id)["checkpoint"] == start
    refused = [ids(json.loads(body)["events"]) for _, _, body in receiver.requests]
    assert len(refused) == 2 and refused[0] == refused[1]  # the same first batch again
    assert refused[0] == expected[: len(refused[0])]
    assert "HTTP 503" in service.status(subscription.webhook_id)["last_error"]

    receiver.status = 200
    drain(worker, lambda: len(receiver.events()) >= len(expected))
    assert ids(receiver.events(secret)) == expected  # nothing missing, nothing twice, in order
    recovered = service.get(subscription.webhook_id)
    assert not recovered.failing and recovered.last_error is None
    status = service.status(subscription.webhook_id)
    assert (status["attempts"], status["last_error"], status["lag_events"]) == (0, None, 0)
    assert (
        registry.get_sample_value("eventbank_webhook_deliveries_total", {"outcome": "failed"}) == 5
    )
    worker.close()
    # The checkpoint is durable: a new worker of another service delivers nothing again.
    again = worker_of(service_of(ledger))
    assert again.deliver_once() == 0
    again.close()


def test_a_resume_or_a_new_url_is_tried_at_once_not_after_the_backoff(
    sqlite_ledger: Ledger, make_receiver: Callable[[], Receiver]
) -> None:
    """The failures set a backoff of up to an hour; the operator's answer to them (resuming
    the subscription, or pointing it at a new URL) is tried on the next pass."""
    down, up = make_receiver(), make_receiver()
    down.status = 503
    service = service_of(sqlite_ledger)
    subscription, secret = service.add(down.url)
    webhook_id = subscription.webhook_id
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    worker = worker_of(service, backoff_base_s=3600, backoff_cap_s=3600)
    try:
        assert worker.deliver_once() == 0
        assert service.status(webhook_id)["next_attempt_at"] > service.clock().isoformat()
        down.status = 200
        assert worker.deliver_once() == 0 and len(down.requests) == 1  # backing off

        service.update(webhook_id, paused=True)
        assert worker.deliver_once() == 0 and len(down.requests) == 1
        service.update(webhook_id, paused=False)
        assert worker.deliver_once() == 1
        assert ids(down.events(secret)) == wanted(sqlite_ledger, subscription)

        down.status = 503
        sqlite_ledger.service.open_account("b", owner="B", account_type="CHECKING")
        assert worker.deliver_once() == 0 and len(down.requests) == 3  # backing off again
        assert worker.deliver_once() == 0 and len(down.requests) == 3
        service.update(webhook_id, url=up.url)
        assert worker.deliver_once() == 1 and len(up.requests) == 1

        # Paused and resumed between two passes (the worker never saw it paused), and resumed
        # while no worker ran (a new one loads the stored backoff): tried at once all the same.
        up.status = 503
        sqlite_ledger.service.open_account("c", owner="C", account_type="CHECKING")
        assert worker.deliver_once() == 0 and worker.deliver_once() == 0
        assert len(up.requests) == 2  # backing off
        service.update(webhook_id, paused=True)
        service.update(webhook_id, paused=False)
        assert worker.deliver_once() == 0 and len(up.requests) == 3  # tried, still failing
        worker.close()
        service.update(webhook_id, paused=True)
        service.update(webhook_id, paused=False)
        up.status = 200
        worker = worker_of(service, backoff_base_s=3600, backoff_cap_s=3600)
        assert worker.deliver_once() == 1 and len(up.requests) == 4
        assert ids(down.events(secret) + up.events(secret)) == wanted(sqlite_ledger, subscription)
    finally:
        worker.close()


def test_replay_delivers_again_exactly_from_the_position_asked(
    ledger: Ledger, receiver: Receiver
) -> None:
    service = service_of(ledger)
    subscription, secret = service.add(receiver.url)
    workload(ledger, 10, seed=11)
    worker = worker_of(service, batch_size=50)
    expected = wanted(ledger, subscription)
    drain(worker, lambda: len(receiver.events()) >= len(expected))
    events = [e for e in feed(ledger) if e.event_id in expected]
    start = events[len(events) // 2]
    delivered_before = len(receiver.requests)
    service.replay(subscription.webhook_id, start.position or 0)
    assert service.status(subscription.webhook_id)["checkpoint"] == (start.position or 0) - 1
    again = [e.event_id for e in events if (e.position or 0) >= (start.position or 0)]
    drain(worker, lambda: len(receiver.events()) >= len(expected) + len(again))
    replayed = receiver.events(secret)[len(expected) :]
    assert ids(replayed) == again
    assert len(receiver.requests) > delivered_before
    # New events go on after the replayed ones, once each.
    ledger.service.deposit(events[0].aggregate_id, "1.00")
    newest = wanted(ledger, subscription)[-1]
    drain(worker, lambda: ids(receiver.events())[-1] == newest)
    assert ids(receiver.events()).count(newest) == 1
    # A position past the checkpoint skips nothing: delivery goes on from the checkpoint.
    receiver.stop()
    ledger.service.deposit(events[0].aggregate_id, "2.00")
    pending = wanted(ledger, subscription)[-2:]
    assert pending[0] == newest
    service.replay(subscription.webhook_id, 10**30)
    receiver.start()
    total = len(receiver.events())
    drain(worker, lambda: len(receiver.events()) > total)
    assert ids(receiver.events())[-1] == pending[-1]
    worker.close()


def test_subscriptions_are_durable_and_their_secrets_never_in_clear_text(
    ledger: Ledger, store_url: str, receiver: Receiver
) -> None:
    service = service_of(ledger)
    kept, secret = service.add(receiver.url, ["FundsDeposited", "AccountOpened"], "crm")
    removed, removed_secret = service.add(receiver.url)
    service.update(kept.webhook_id, paused=True, description="crm sync")
    rotated = service.rotate_secret(kept.webhook_id, overlap_s=60)
    given = "a-receiver-chosen-secret-of-40-bytes-xxx"
    service.rotate_secret(removed.webhook_id, given)
    service.remove(removed.webhook_id)
    other = open_ledger(store_url)  # another process's view of the same store
    try:
        again = WebhookService(other.events, other.reads, key=KEY)
        [seen] = again.list()
        assert seen == service.get(kept.webhook_id)
        assert (seen.url, seen.event_types, seen.description, seen.paused) == (
            receiver.url, ("FundsDeposited", "AccountOpened"), "crm sync", True
        )  # fmt: skip
        assert seen.created_at and seen.version == 4
        with pytest.raises(NotFound) as gone:
            again.get(removed.webhook_id)
        assert gone.value.code == "webhook_not_found"
        stored = canonical_json([[e.data, e.metadata] for e in feed(other)])
        for clear in (secret, rotated, removed_secret, given):
            assert clear not in stored
        tracked = again.cached(kept.webhook_id)
        assert tracked is not None
        assert again.signing_secrets(tracked) == [rotated, secret]  # in the overlap
    finally:
        other.close()


def test_the_event_type_filter_and_pause_skip_nothing_they_should_deliver(
    ledger: Ledger, make_receiver: Callable[[], Receiver]
) -> None:
    deposits_to, all_to = make_receiver(), make_receiver()
    service = service_of(ledger)
    deposits, deposits_secret = service.add(deposits_to.url, ["FundsDeposited"])
    everything, secret = service.add(all_to.url)
    service.update(everything.webhook_id, paused=True)
    workload(ledger, 12, seed=5)
    worker = worker_of(service, batch_size=10)
    expected_deposits = wanted(ledger, deposits)
    drain(worker, lambda: len(deposits_to.events()) >= len(expected_deposits))
    assert ids(deposits_to.events(deposits_secret)) == expected_deposits
    assert {e["event_type"] for e in deposits_to.events()} == {"FundsDeposited"}
    assert service.status(deposits.webhook_id)["lag_events"] == 0
    for _ in range(3):
        worker.deliver_once()
    assert all_to.requests == []  # paused
    assert service.status(everything.webhook_id)["lag_events"] == len(wanted(ledger, everything))
    service.update(everything.webhook_id, paused=False)
    expected = wanted(ledger, everything)
    drain(worker, lambda: len(all_to.events()) >= len(expected))
    assert ids(all_to.events(secret)) == expected  # everything since it was added
    worker.close()


def test_an_empty_apply_moves_a_webhook_checkpoint_forward_only_and_rebuilds_keep_it(
    read_store_url: str,
) -> None:
    reads: ReadStore = open_read_store(read_store_url)
    try:
        assert reads.checkpoint("webhook:w") == 0
        reads.apply("webhook:w", [], 5)
        assert reads.checkpoint("webhook:w") == 5
        reads.apply("webhook:w", [], 3)  # never backwards: a replay starts a new checkpoint
        assert reads.checkpoint("webhook:w") == 5
        reads.apply("accounts", [], 9)
        reads.reset("accounts")  # what `eventbank projections rebuild` does
        assert reads.checkpoint("webhook:w") == 5
        assert reads.checkpoint("accounts") == 0
    finally:
        reads.close()


# ------------------------------------------------------------ the receiver's behaviour


def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    sqlite_ledger: Ledger, make_receiver: Callable[[], Receiver]
) -> None:
    moved, elsewhere = make_receiver(), make_receiver()
    moved.status, moved.headers = 307, {"Location": elsewhere.url}
    service = service_of(sqlite_ledger)
    subscription, _ = service.add(moved.url)
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    worker = worker_of(service)
    assert worker.deliver_once() == 0
    assert len(moved.requests) == 1 and elsewhere.requests == []
    status = service.status(subscription.webhook_id)
    assert status["attempts"] == 1 and status["lag_events"] == 1
    assert "307" in status["last_error"] and "not followed" in status["last_error"]
    assert status["checkpoint"] < feed(sqlite_ledger)[-1].position
    worker.close()


def test_a_huge_response_body_is_read_only_so_far(
    sqlite_ledger: Ledger, receiver: Receiver
) -> None:
    receiver.endless = True  # gigabytes, were they read
    service = service_of(sqlite_ledger)
    subscription, _ = service.add(receiver.url)
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    worker = worker_of(service, max_response_bytes=1_000)
    started = time.monotonic()
    assert worker.deliver_once() == 1  # a 2xx: delivered, the body dropped
    receiver.status = 500
    sqlite_ledger.service.deposit("a", "1.00")
    assert worker.deliver_once() == 0
    assert time.monotonic() - started < 20  # reading the gigabytes would take minutes
    error = service.status(subscription.webhook_id)["last_error"]
    assert error.startswith("HTTP 500: xxx") and len(error) < 300
    worker.close()


def test_an_answer_sent_a_byte_at_a_time_is_cut_off_at_the_total_timeout(
    sqlite_ledger: Ledger,
) -> None:
    """Each byte comes well within the read timeout, so only the whole-exchange deadline ends
    it; without one, 100 KiB of headers at this pace would hold the thread for hours."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(65_536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.is_set():
                try:
                    connection.sendall(b"x")
                except OSError:
                    return  # cut off by the sender
                stop.wait(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    service = service_of(sqlite_ledger)
    port = listener.getsockname()[1]
    subscription, _ = service.add(f"http://127.0.0.1:{port}/hooks")
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    worker = worker_of(service, read_timeout_s=10.0, total_timeout_s=1.5)
    try:
        assert worker.deliver_once() == 0
        status = service.status(subscription.webhook_id)
        assert status["attempts"] == 1 and status["lag_events"] == 1
        assert status["last_error"] == "no whole answer within 1.5 s (127.0.0.1)"
    finally:
        stop.set()
        worker.close()
        listener.close()


def test_a_slow_receiver_does_not_delay_another_subscription(
    sqlite_ledger: Ledger, make_receiver: Callable[[], Receiver]
) -> None:
    slow, fast = make_receiver(), make_receiver()
    slow.delay_s = 8.0  # past the read timeout, every time
    service = service_of(sqlite_ledger)
    slow_subscription, _ = service.add(slow.url)
    fast_subscription, secret = service.add(fast.url)
    # Held up behind the slow one, each event would wait out the read timeout (4 s); not held
    # up, it arrives within a poll or two (20 ms each): the bound below sits between the two.
    worker = worker_of(service, read_timeout_s=4.0, poll_interval_s=0.02,
                       refresh_interval_s=0.05)  # fmt: skip
    stop = threading.Event()
    running = threading.Thread(target=worker.run, args=(stop,))
    running.start()
    try:
        for n in range(5):
            sqlite_ledger.service.open_account(f"a{n}", owner="A", account_type="CHECKING")
            appended = time.monotonic()
            expected = wanted(sqlite_ledger, fast_subscription)
            while len(fast.events()) < len(expected):
                assert time.monotonic() - appended < 3, "the fast receiver was held up"
                time.sleep(0.005)
            time.sleep(0.1)
        assert ids(fast.events(secret)) == expected
        assert slow.requests  # it answers, too late to count
        deadline = time.monotonic() + 30
        while service.status(slow_subscription.webhook_id)["attempts"] < 1:
            assert time.monotonic() < deadline, "the slow receiver's timeout was not recorded"
            time.sleep(0.05)
        assert "timed out" in service.status(slow_subscription.webhook_id)["last_error"]
    finally:
        stop.set()
        running.join(timeout=30)
    assert not running.is_alive()


def test_delivery_checks_the_url_and_address_again_with_the_worker_s_own_rules(
    sqlite_ledger: Ledger, receiver: Receiver
) -> None:
    """A subscription a permissive process accepted is not delivered by a strict one: the
    checks run again right before each delivery (so a DNS answer changed since is caught)."""
    http = service_of(sqlite_ledger).add(receiver.url)[0]
    private_only = WebhookService(sqlite_ledger.events, sqlite_ledger.reads, key=KEY,
                                  allow_private=True)  # fmt: skip
    port = receiver.url.split(":")[2].split("/")[0]
    https = private_only.add(f"https://127.0.0.1:{port}/")[0]  # loopback: private allowed
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    strict = WebhookService(sqlite_ledger.events, sqlite_ledger.reads, key=KEY)
    worker = worker_of(strict)
    assert worker.deliver_once() == 0
    assert receiver.requests == []  # no connection at all
    assert strict.status(http.webhook_id)["last_error"].startswith("invalid_webhook_url")
    assert strict.status(https.webhook_id)["last_error"].startswith("webhook_address_refused")
    worker.close()


def self_signed(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, Path]:
    """A server context with a self-signed certificate for DNS name ``name`` only, and the
    certificate's file (for a client to trust)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, cert_path


def test_https_goes_to_the_checked_address_with_the_host_s_name_and_certificate(
    sqlite_ledger: Ledger, tmp_path: Path
) -> None:
    """The connection is pinned to the address just checked, yet TLS still names the host
    (SNI) and checks the certificate against it: a certificate the client trusts, but for
    another name, is refused."""
    server_context, cert = self_signed(tmp_path, "localhost")
    receiver = Receiver(tls=server_context)
    impostor_context, impostor_cert = self_signed(tmp_path, "impostor.example")
    impostor = Receiver(tls=impostor_context)
    trusted = ssl.create_default_context(cafile=str(cert))
    trusted.load_verify_locations(cafile=str(impostor_cert))
    try:
        service = service_of(sqlite_ledger, allow_http=False, allow_private=True)
        subscription, secret = service.add(f"https://localhost:{receiver.port}/in")
        wrong, _ = service.add(f"https://localhost:{impostor.port}/in")
        sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
        worker = worker_of(service, verify=trusted)
        assert worker.deliver_once() == 1
        [(headers, body)] = receiver.accepted()
        assert headers["Host"] == f"localhost:{receiver.port}"
        verify(body, headers[SIGNATURE_HEADER], secret)
        assert impostor.requests == []  # its certificate is not for localhost: no request
        error = service.status(wrong.webhook_id)["last_error"]
        assert "CERTIFICATE_VERIFY_FAILED" in error and "Hostname mismatch" in error, error
        assert service.status(subscription.webhook_id)["attempts"] == 0
        worker.close()
    finally:
        receiver.stop()
        impostor.stop()


def test_a_wrong_key_fails_delivery_and_does_not_sign(
    sqlite_ledger: Ledger, receiver: Receiver
) -> None:
    subscription, _ = service_of(sqlite_ledger).add(receiver.url)
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    other_key = WebhookService(sqlite_ledger.events, sqlite_ledger.reads,
                               key=Fernet.generate_key(), allow_http=True)  # fmt: skip
    worker = worker_of(other_key)
    assert worker.deliver_once() == 0 and receiver.requests == []
    error = other_key.status(subscription.webhook_id)["last_error"]
    assert error.startswith("webhook_key_mismatch")
    worker.close()
    # nor may it add a secret that the processes holding the store's key could not read
    feed_before = feed(sqlite_ledger)
    with pytest.raises(EventbankError) as refused:
        other_key.add(receiver.url)
    assert refused.value.code == "webhook_key_mismatch"
    assert feed(sqlite_ledger) == feed_before
    assert [s.webhook_id for s in service_of(sqlite_ledger).list()] == [subscription.webhook_id]


class OffsetClock:
    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def test_rotation_signs_with_both_secrets_during_the_overlap_only(
    sqlite_ledger: Ledger, receiver: Receiver
) -> None:
    clock = OffsetClock()
    service = service_of(sqlite_ledger, clock=clock)
    subscription, old = service.add(receiver.url)
    new = service.rotate_secret(subscription.webhook_id, overlap_s=3_600)
    assert new != old and new.startswith("whsec_")
    worker = worker_of(service)
    sqlite_ledger.service.open_account("a", owner="A", account_type="CHECKING")
    assert worker.deliver_once() == 1
    headers, body = receiver.accepted()[-1]
    header = headers[SIGNATURE_HEADER]
    assert len(parse(header)[1]) == 2
    for secret in (new, old):  # a receiver on either secret accepts it
        verify(body, header, secret)
    clock.offset = timedelta(seconds=3_601)  # the overlap is over
    sqlite_ledger.service.deposit("a", "1.00")
    assert worker.deliver_once() == 1
    headers, body = receiver.accepted()[-1]
    header = headers[SIGNATURE_HEADER]
    now = clock().timestamp()
    assert len(parse(header)[1]) == 1
    verify(body, header, new, now=now)
    with pytest.raises(SignatureError):
        verify(body, header, old, now=now)
    given = "x" * 32
    assert service.rotate_secret(subscription.webhook_id, given, overlap_s=0) == given
    sqlite_ledger.service.deposit("a", "1.00")
    assert worker.deliver_once() == 1
    headers, body = receiver.accepted()[-1]
    assert len(parse(headers[SIGNATURE_HEADER])[1]) == 1
    verify(body, headers[SIGNATURE_HEADER], given, now=clock().timestamp())
    worker.close()


# ------------------------------------------------------------ bad input


def refused(
    ledger: Ledger, code: str, call: Callable[[], object], family: type[Exception] = InvalidInput
) -> None:
    """``call`` raises an error of ``family`` with ``code`` and appends nothing."""
    before = feed(ledger)
    with pytest.raises(family) as caught:
        call()
    assert getattr(caught.value, "code", None) == code, caught.value
    assert [e.event_id for e in feed(ledger)] == [e.event_id for e in before]


BAD_URLS = [
    "", "not a url", "ftp://files.example/x", "https://", "https:///path", "//host.example/x",
    "https://user:pw@host.example/x", "https://host.example/x#fragment", "https://exa mple.com/",
    "https://host.example:99999/", "https://host.example:0/", "https://bad_host!.example/",
    "https://ex\u00e4mple.com/", "https://host.example/\n", "https://" + "a" * 2_000 + ".example",
    "http://host.example/x",  # http only to loopback
    "http://127.0.0.1.example/", 7,
]  # fmt: skip

PRIVATE_ADDRESSES = [  # refused unless private targets are allowed
    "https://10.0.0.1/", "https://172.16.5.4/", "https://192.168.1.1/", "https://100.64.0.1/",
    "https://[fd00::1]/", "https://[::ffff:10.0.0.1]/", "https://[2002:a00:1::]/",
]  # fmt: skip
ALWAYS_REFUSED = [  # link-local (cloud metadata), multicast, unspecified, reserved
    "https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/", "https://224.0.0.1/",
    "https://0.0.0.0/", "https://240.0.0.1/", "https://[::]/", "https://[ff02::1]/",
    "https://[::ffff:169.254.169.254]/",
]  # fmt: skip


def test_every_bad_input_is_refused_with_its_code_and_nothing_stored(
    ledger: Ledger, receiver: Receiver
) -> None:
    service = service_of(ledger)
    strict = WebhookService(ledger.events, ledger.reads, key=KEY)
    for url in BAD_URLS:
        refused(ledger, "invalid_webhook_url", lambda url=url: service.add(url))
    # loopback needs http or private targets allowed; http needs http allowed
    refused(ledger, "invalid_webhook_url", lambda: strict.add(receiver.url))
    for url in ("https://127.0.0.1/", "https://localhost/", "https://[::1]:8443/x",
                "https://[::ffff:127.0.0.1]/"):  # fmt: skip
        refused(ledger, "webhook_address_refused", lambda url=url: strict.add(url))
    permissive = service_of(ledger, allow_private=True)
    for url in PRIVATE_ADDRESSES + ALWAYS_REFUSED:
        refused(ledger, "webhook_address_refused", lambda url=url: service.add(url))
    for url in ALWAYS_REFUSED:
        refused(ledger, "webhook_address_refused", lambda url=url: permissive.add(url))
    refused(ledger, "unknown_event_type", lambda: service.add(receiver.url, ["FundsStolen"]))
    refused(ledger, "unknown_event_type", lambda: service.add(receiver.url, ["webhookadded"]))
    refused(ledger, "unknown_event_type", lambda: service.add(receiver.url, ["WebhookAdded"]))
    refused(ledger, "invalid_webhook", lambda: service.add(receiver.url, "FundsDeposited"))
    refused(ledger, "invalid_webhook",
            lambda: service.add(receiver.url, ["FundsDeposited"] * 51))  # fmt: skip
    refused(ledger, "invalid_webhook", lambda: service.add(receiver.url, [3]))
    refused(ledger, "invalid_webhook", lambda: service.add(receiver.url, (), "d" * 501))
    subscription, _ = service.add(receiver.url, (), "d" * 500)
    webhook_id = subscription.webhook_id
    refused(ledger, "weak_webhook_secret",
            lambda: service.rotate_secret(webhook_id, "s" * 31))  # fmt: skip
    refused(ledger, "weak_webhook_secret",
            lambda: service.rotate_secret(webhook_id, "\u00e9" * 15))  # 30 bytes  # fmt: skip
    refused(ledger, "weak_webhook_secret", lambda: service.rotate_secret(webhook_id, ""))
    refused(ledger, "invalid_webhook",
            lambda: service.rotate_secret(webhook_id, "s" * 32, overlap_s=-1))  # fmt: skip
    refused(ledger, "invalid_webhook",
            lambda: service.rotate_secret(webhook_id, "s" * 32, overlap_s=10**9))  # fmt: skip
    refused(ledger, "invalid_webhook", lambda: service.replay(webhook_id, -1))
    refused(ledger, "invalid_webhook", lambda: service.replay(webhook_id, True))
    refused(ledger, "invalid_webhook", lambda: service.update(webhook_id, paused="yes"))
    refused(
        ledger, "invalid_webhook_url", lambda: service.update(webhook_id, url="ftp://x.example")
    )
    refused(ledger, "webhook_address_refused",
            lambda: service.update(webhook_id, url="https://10.1.2.3/"))  # fmt: skip
    refused(ledger, "unknown_event_type", lambda: service.update(webhook_id, event_types=["X"]))
    for unknown in ("0190d5a0-0000-7000-8000-000000000000", "nope", "", "webhook#registry"):
        for call in (
            lambda u=unknown: service.get(u), lambda u=unknown: service.remove(u),
            lambda u=unknown: service.update(u, paused=True),
            lambda u=unknown: service.rotate_secret(u), lambda u=unknown: service.replay(u, 0),
            lambda u=unknown: service.status(u),
        ):  # fmt: skip
            refused(ledger, "webhook_not_found", call, NotFound)
    # Nothing changes: nothing is written.
    refused_nothing = feed(ledger)
    assert service.update(webhook_id, description="d" * 500, paused=False) == service.get(
        webhook_id
    )
    assert len(feed(ledger)) == len(refused_nothing)
    service.remove(webhook_id)
    refused(ledger, "webhook_not_found", lambda: service.remove(webhook_id), NotFound)
    assert service.list() == []


def test_at_most_100_subscriptions(sqlite_ledger: Ledger, receiver: Receiver) -> None:
    service = service_of(sqlite_ledger)
    made = [service.add(receiver.url)[0] for _ in range(100)]
    refused(sqlite_ledger, "webhook_limit_reached", lambda: service.add(receiver.url),
            EventbankError)  # fmt: skip
    service.remove(made[0].webhook_id)
    service.add(receiver.url)
    assert len(service.list()) == 100


def test_the_key_file_is_made_once_private_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVENTBANK_WEBHOOK_KEY", raising=False)
    path = tmp_path / "webhook.key"
    key = load_or_create_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_key(path) == key
    Fernet(key)
    assert [p.name for p in tmp_path.iterdir()] == ["webhook.key"]
    other = Fernet.generate_key()
    monkeypatch.setenv("EVENTBANK_WEBHOOK_KEY", other.decode())
    assert load_or_create_key(path) == other
    monkeypatch.setenv("EVENTBANK_WEBHOOK_KEY", "not-a-key")
    with pytest.raises(InvalidInput) as bad:
        load_or_create_key(path)
    assert bad.value.code == "invalid_webhook_key"
