"""Delivering the feed to each subscription: signed, in feed order, at least once.

A pass for one subscription reads the feed after its checkpoint (``batch_size`` events), keeps
the events it wants, and POSTs them as one JSON batch::

    {"webhook_id": "…", "events": [{"event_id", "event_type", "aggregate_id", "aggregate_type",
     "version", "position", "recorded_at", "schema_version", "data"}, …]}

signed (``Eventbank-Signature``, eventbank/webhooks.py). Only a 2xx moves the checkpoint, to the
last event read (unwanted events move it too, without a request). Anything else (a connection
refused, a timeout, a 3xx, which is never followed, a 4xx or 5xx, an address now refused) is a
failure: the same events are tried again after a capped exponential backoff with full jitter,
so an event is never skipped, and a receiver back after an hour gets all it missed, in order.
After ``failing_after`` consecutive failures the subscription is recorded as failing (an event
with the last error, so every process sees it; the next 2xx records its recovery). A crash
between a 2xx and its checkpoint delivers that batch again: receivers de-duplicate by event id.

Each subscription is delivered by a thread of its own (a pool as large as the number of
subscriptions allowed; one subscription never holds two), so a receiver that hangs delays only
itself. Each wait is bounded (connect and read timeouts) and so is the whole exchange
(``total_timeout_s``: a receiver sending its answer a byte at a time is cut off). A response's
body is read to at most ``max_response_bytes``, then dropped. Run one worker per store: two
would deliver the same events concurrently (at least once still holds; receivers get more
duplicates).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from eventbank.application.webhooks.service import MAX_SUBSCRIPTIONS, WebhookService
from eventbank.application.webhooks.subscriptions import Tracked
from eventbank.application.webhooks.targets import check_url, pinned, resolve
from eventbank.backoff import full_jitter
from eventbank.domain.canonical import canonical_json
from eventbank.domain.errors import EventbankError
from eventbank.ports.event_store import EventStore, RecordedEvent
from eventbank.ports.read_store import Failure
from eventbank.webhooks import SIGNATURE_HEADER, WEBHOOK_ID_HEADER, sign_all

log = logging.getLogger(__name__)

USER_AGENT = "eventbank-webhooks"
ERROR_EXCERPT = 200  # characters of a refusing receiver's body kept in the error


class _Failed(Exception):
    """One delivery attempt failed; the message says how."""


@dataclass(slots=True)
class _Health:
    """Consecutive failures of one subscription, as this worker knows them (and the read store
    keeps them, so a restarted worker goes on backing off)."""

    attempts: int = 0
    next_at: float = 0.0  # time.monotonic() before which no attempt is made
    first_failed_at: str = ""
    last_error: str | None = None
    retry_from: str = ""  # the last resume or new URL seen (Tracked.retry_from)


def event_json(event: RecordedEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "version": event.version,
        "position": event.position,
        "recorded_at": event.metadata.get("recorded_at"),
        "schema_version": event.schema_version,
        "data": dict(event.data),
    }


class _Deadline:
    """Cuts a request's connection when the whole exchange outlasts ``seconds``: the connect
    and read timeouts bound each wait, not a receiver that answers a byte at a time. The
    socket comes from httpcore's trace of the connection; shutting it down wakes a blocked
    read at once."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "connection.connect_tcp.complete":
            sock = info["return_value"].get_extra_info("socket")
            if sock is not None:
                self._sockets.append(sock)

    def _cut(self) -> None:
        self.expired = True
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


class DeliveryWorker:
    """Follows the feed for every subscription from its own checkpoint and POSTs signed,
    ordered batches; the checkpoint moves only after a 2xx, a failure is retried with capped,
    jittered backoff and, after ``failing_after`` in a row, marks the subscription failing.
    Each subscription is delivered by one thread at a time, so a slow receiver holds up only
    its own."""

    def __init__(
        self,
        service: WebhookService,
        events: EventStore,
        *,
        metrics: CollectorRegistry | None = None,
        batch_size: int = 100,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        max_response_bytes: int = 65_536,
        failing_after: int = 5,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        poll_interval_s: float = 0.5,
        refresh_interval_s: float = 1.0,
        total_timeout_s: float = 30.0,
        max_concurrency: int = MAX_SUBSCRIPTIONS,  # a receiver that hangs holds only its own
        verify: ssl.SSLContext | bool = True,
    ):
        self.service, self.events, self.reads = service, events, service.reads
        self.batch_size = batch_size
        self.read_timeout_s, self.total_timeout_s = read_timeout_s, total_timeout_s
        self.max_response_bytes = max_response_bytes
        self.failing_after = failing_after
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.poll_interval_s, self.refresh_interval_s = poll_interval_s, refresh_interval_s
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            follow_redirects=False,
            verify=verify,  # certificates checked against the URL's host name (see pinned)
            trust_env=False,  # no proxy from the environment: the pinned address is the target
            limits=httpx.Limits(max_keepalive_connections=0),  # one connection per request
        )
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="webhook")
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # subscriptions a thread is delivering right now
        self._health: dict[str, _Health] = {}
        self._known: list[Tracked] = []
        self._refreshed: float | None = None  # time.monotonic() of the last refresh
        registry = metrics if metrics is not None else CollectorRegistry()
        self.deliveries = Counter(
            "eventbank_webhook_deliveries", "Webhook delivery requests, by outcome "
            "(delivered: 2xx; failed: anything else).", ["outcome"], registry=registry,
        )  # fmt: skip
        for outcome in ("delivered", "failed"):
            self.deliveries.labels(outcome)
        self.lag = Gauge(
            "eventbank_webhook_lag_events", "Wanted events after the subscription's "
            "checkpoint, as its last pass saw them (at most one batch).", ["webhook_id"],
            registry=registry,
        )  # fmt: skip
        self.failing = Gauge(
            "eventbank_webhook_failing", "1 while the subscription is failing (consecutive "
            "failures reached failing_after), else 0.", ["webhook_id"], registry=registry,
        )  # fmt: skip

    # ------------------------------------------------------------ loops

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set: every ``poll_interval_s``, each due subscription no
        thread is delivering gets one, which delivers batch after batch while it keeps up."""
        errors = 0
        try:
            while not stop.is_set():
                try:
                    for tracked in self._subscriptions(fresh=False):
                        self._start(tracked, stop)
                    errors = 0
                except Exception:  # noqa: BLE001 - the loop must outlive a store outage
                    errors += 1
                    log.exception("webhook delivery loop failed (%s in a row)", errors)
                    stop.wait(min(30.0, 0.1 * 2**errors))
                stop.wait(self.poll_interval_s)
        finally:
            self.close()

    def deliver_once(self) -> int:
        """One pass: one batch to each due subscription (in parallel, each in its thread);
        returns the events delivered (2xx)."""
        futures = [f for t in self._subscriptions(fresh=True) if (f := self._start(t, None))]
        return sum(f.result() for f in futures)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _subscriptions(self, *, fresh: bool) -> list[Tracked]:
        now = time.monotonic()
        if fresh or self._refreshed is None or now - self._refreshed >= self.refresh_interval_s:
            known = self.service.tracked()
            gone = {t.subscription.webhook_id for t in self._known} - {
                t.subscription.webhook_id for t in known
            }
            for webhook_id in gone:
                for gauge in (self.lag, self.failing):
                    with contextlib.suppress(KeyError):
                        gauge.remove(webhook_id)
                with self._lock:
                    self._health.pop(webhook_id, None)
            self._known, self._refreshed = known, now
        return self._known

    def _start(self, tracked: Tracked, stop: threading.Event | None) -> Future[int] | None:
        """Hand the subscription to a thread, unless paused, backing off, or already handed."""
        webhook_id = tracked.subscription.webhook_id
        if not self._due(tracked):
            return None
        with self._lock:
            if webhook_id in self._busy:
                return None
            self._busy.add(webhook_id)
        try:
            return self._pool.submit(self._drain, webhook_id, stop)
        except RuntimeError:  # the pool is shut down
            with self._lock:
                self._busy.discard(webhook_id)
            return None

    def _drain(self, webhook_id: str, stop: threading.Event | None) -> int:
        """Batches to one subscription: one (``deliver_once``), or while each is full."""
        delivered = 0
        try:
            while True:
                tracked = self.service.cached(webhook_id)
                if tracked is None or tracked.removed or tracked.subscription.paused:
                    break
                count, more = self._pass(tracked)
                delivered += count
                if stop is None or stop.is_set() or not more:
                    break
        except Exception as exc:  # noqa: BLE001 - a store problem: a later pass tries again
            self._held_up(webhook_id, exc)
        finally:
            with self._lock:
                self._busy.discard(webhook_id)
        return delivered

    # ------------------------------------------------------------ one pass

    def _pass(self, tracked: Tracked) -> tuple[int, bool]:
        """Deliver one batch; returns (events delivered, whether more may be waiting)."""
        s = tracked.subscription
        checkpoint = self.service.checkpoint(tracked)
        read = self.events.read_all(checkpoint, self.batch_size)
        if not read:
            self.lag.labels(s.webhook_id).set(0)
            return 0, False
        last = read[-1].position
        full = len(read) == self.batch_size
        batch = [e for e in read if s.wants(e)]
        if not batch:
            if last is not None:
                self.reads.apply(tracked.checkpoint_name, [], last)
            self.lag.labels(s.webhook_id).set(0)
            return 0, full
        self.lag.labels(s.webhook_id).set(len(batch))
        try:
            self._post(tracked, batch)
        except _Failed as failure:
            self.deliveries.labels("failed").inc()
            self._failed(tracked, str(failure))
            return 0, False
        self.deliveries.labels("delivered").inc()
        if last is not None:
            self.reads.apply(tracked.checkpoint_name, [], last)
        self._succeeded(tracked)
        self.lag.labels(s.webhook_id).set(0 if not full else len(batch))
        return len(batch), full

    def _post(self, tracked: Tracked, batch: list[RecordedEvent]) -> None:
        s = tracked.subscription
        service = self.service
        try:
            secrets = service.signing_secrets(tracked)
            target = check_url(s.url, allow_http=service.allow_http)
            addresses = resolve(target, allow_loopback=service.allow_http or service.allow_private,
                                allow_private=service.allow_private)  # fmt: skip
        except EventbankError as exc:
            raise _Failed(f"{exc.code}: {exc}") from None
        body = canonical_json({"webhook_id": s.webhook_id,
                               "events": [event_json(e) for e in batch]}).encode()  # fmt: skip
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "Accept-Encoding": "identity",
            SIGNATURE_HEADER: sign_all(secrets, int(service.clock().timestamp()), body),
            WEBHOOK_ID_HEADER: s.webhook_id,
        }
        with _Deadline(self.total_timeout_s) as deadline:
            response = None
            for ip in addresses:  # each checked address in turn while connecting is refused
                url, host, extensions = pinned(target, ip)
                request = self._client.build_request(
                    "POST", url, content=body, headers=host | headers,
                    extensions=extensions | {"trace": deadline.trace},
                )  # fmt: skip
                try:
                    response = self._client.send(request, stream=True)
                    break
                except httpx.TimeoutException as exc:
                    raise _Failed(f"timed out: {type(exc).__name__} ({ip})") from None
                except httpx.ConnectError as exc:
                    error = f"{type(exc).__name__}: {exc} ({ip})"[:300]
                except httpx.HTTPError as exc:
                    if deadline.expired:
                        raise _Failed(f"no whole answer within {self.total_timeout_s:g} s "
                                      f"({ip})") from None  # fmt: skip
                    raise _Failed(f"{type(exc).__name__}: {exc} ({ip})"[:300]) from None
            if response is None:
                raise _Failed(error)
            try:
                excerpt = self._bounded_body(response)
            finally:
                response.close()
        status = response.status_code
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            where = response.headers.get("location", "")[:200]
            raise _Failed(f"HTTP {status}: redirect to {where!r} not followed")
        text = excerpt[:ERROR_EXCERPT].decode(errors="replace").strip()
        raise _Failed(f"HTTP {status}" + (f": {text}" if text else ""))

    def _bounded_body(self, response: httpx.Response) -> bytes:
        """At most ``max_response_bytes`` of the body, read for at most the read timeout."""
        kept = bytearray()
        deadline = time.monotonic() + self.read_timeout_s
        try:
            for chunk in response.iter_raw(chunk_size=8_192):
                kept += chunk[: self.max_response_bytes - len(kept)]
                if len(kept) >= self.max_response_bytes or time.monotonic() > deadline:
                    break
        except httpx.HTTPError:
            pass  # the status is what counts; the body is informative only
        return bytes(kept)

    # ------------------------------------------------------------ outcomes

    def _due(self, tracked: Tracked) -> bool:
        """Not paused, and not backing off. A resume or a new URL (the operator's answer to
        the failures, as a rule) is tried at once, not after the backoff the failures set."""
        health = self._health_of(tracked)
        if health.retry_from != tracked.retry_from:
            health.retry_from, health.next_at = tracked.retry_from, 0.0
        return not tracked.subscription.paused and time.monotonic() >= health.next_at

    def _health_of(self, tracked: Tracked) -> _Health:
        """This worker's record of the subscription, loaded from the read store the first
        time (a restarted worker keeps backing off and counting, unless the subscription was
        resumed or given a new URL after its failures began)."""
        webhook_id = tracked.subscription.webhook_id
        with self._lock:
            health = self._health.get(webhook_id)
        if health is not None:
            return health
        health = _Health(retry_from=tracked.retry_from)
        stored = next((f for f in self.reads.failures(tracked.failure_name)
                       if f.aggregate_id == tracked.subscription.stream), None)  # fmt: skip
        if stored is not None:
            since = datetime.fromisoformat(stored.first_failed_at)
            moved = bool(tracked.retry_from) and datetime.fromisoformat(tracked.retry_from) > since
            wait_s = 0.0 if moved else (datetime.fromisoformat(stored.next_attempt_at)
                                        - self.service.clock()).total_seconds()  # fmt: skip
            health = _Health(
                attempts=stored.attempts,
                next_at=time.monotonic() + max(0.0, wait_s),
                first_failed_at=stored.first_failed_at,
                last_error=stored.error,
                retry_from=tracked.retry_from,
            )
        with self._lock:
            return self._health.setdefault(webhook_id, health)

    def _failed(self, tracked: Tracked, error: str) -> None:
        s = tracked.subscription
        health = self._health_of(tracked)
        now = self.service.clock()
        health.attempts += 1
        health.last_error = error
        health.first_failed_at = health.first_failed_at or now.isoformat()
        delay_s = self._back_off(health)
        log.warning("webhook %s: delivery failed (attempt %s): %s", s.webhook_id,
                    health.attempts, error)  # fmt: skip
        self.reads.save_failure(Failure(
            projection=tracked.failure_name, aggregate_id=s.stream, version=0,
            error=error[:500], attempts=health.attempts, first_failed_at=health.first_failed_at,
            next_attempt_at=(now + timedelta(seconds=delay_s)).isoformat(),
        ))  # fmt: skip
        if health.attempts >= self.failing_after:
            self.failing.labels(s.webhook_id).set(1)
            if not s.failing:
                self.service.record_failing(s.webhook_id, error, health.attempts)

    def _back_off(self, health: _Health) -> float:
        """The wait before the next attempt after ``health.attempts`` failures in a row:
        exponential, capped, full jitter; set as ``health.next_at`` and returned."""
        delay_s = full_jitter(health.attempts - 1, self.backoff_base_s, self.backoff_cap_s)
        health.next_at = time.monotonic() + delay_s
        return delay_s

    def _held_up(self, webhook_id: str, exc: Exception) -> None:
        """A pass that failed on this side (the store unreachable, the key wrong): backed off
        and counted as the receiver's failures are, so the log is not flooded and the failing
        gauge (and its alert) tells; kept in memory only, as the store may be what failed."""
        with self._lock:
            health = self._health.setdefault(webhook_id, _Health())
        health.attempts += 1
        health.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self._back_off(health)
        log.error("webhook %s: delivery pass failed (attempt %s): %s", webhook_id,
                  health.attempts, health.last_error)  # fmt: skip
        if health.attempts >= self.failing_after:
            self.failing.labels(webhook_id).set(1)

    def _succeeded(self, tracked: Tracked) -> None:
        s = tracked.subscription
        health = self._health_of(tracked)
        delivered_at_ms = int(self.service.clock().timestamp() * 1000)
        self.reads.apply(tracked.delivered_name, [], delivered_at_ms)
        if health.attempts:
            self.reads.clear_failure(tracked.failure_name, s.stream)
            health.attempts, health.next_at, health.first_failed_at = 0, 0.0, ""
            health.last_error = None
        self.failing.labels(s.webhook_id).set(0)
        if s.failing:
            self.service.record_recovered(s.webhook_id)
