"""The webhook service: subscriptions kept in the event store, so every process sees the same ones.

Each subscription is a stream ``webhook#<id>`` (aggregate type ``Webhook``): ``WebhookAdded``,
then ``WebhookChanged`` (url, event types, description), ``WebhookPaused``/``WebhookResumed``,
``WebhookSecretRotated``, ``WebhookReplayRequested``, ``WebhookFailing``/``WebhookRecovered``
(the delivery worker's verdict, with the last error) and ``WebhookRemoved``. The registry
stream ``webhook#registry`` (aggregate type ``WebhookRegistry``) lists them
(``WebhookRegistered``/``WebhookDeregistered``), written in the same atomic append as a
subscription's first and last event, so the limit of ``MAX_SUBSCRIPTIONS`` holds under
concurrent adds. These streams' events are never delivered to anyone.

Signing secrets are stored only encrypted (Fernet, under the key of ``load_or_create_key``):
the event store never holds one in clear text. ``add`` and ``rotate_secret`` return a secret
once; nothing can show it again.

Delivery progress lives in the read store, not in the events (it changes with every delivery):

- the checkpoint, the feed position up to which every event was acknowledged with a 2xx, as the
  checkpoint of projection ``webhook:<id>`` (after a replay, ``webhook:<id>:replay-<n>``: a
  checkpoint only moves forward on every engine, so a replay starts a new one, from the position
  asked; ``start_after`` in the subscription's events is where each one starts);
- the time of the last 2xx, in milliseconds since the epoch, as the checkpoint of
  ``webhook:<id>:delivered``;
- consecutive failures (attempts, last error, next attempt) as a projection failure of
  ``webhook:<id>``, cleared by the next 2xx.

``eventbank projections rebuild`` resets only the ``accounts`` projection's checkpoint and
failures, so it never moves a webhook's checkpoint: no event is delivered again, none skipped.
"""

from __future__ import annotations

import builtins
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from eventbank.application.ids import new_id
from eventbank.application.webhooks.errors import (
    InvalidWebhook,
    UnknownEventType,
    WeakWebhookSecret,
    WebhookConflict,
    WebhookLimitReached,
    WebhookNotFound,
)
from eventbank.application.webhooks.keys import Vault, new_secret
from eventbank.application.webhooks.subscriptions import (
    EVENT_TYPE_NAMES,
    REGISTRY,
    STREAM_PREFIX,
    WEBHOOK,
    WEBHOOK_REGISTRY,
    Subscription,
    Tracked,
    fold,
)
from eventbank.application.webhooks.targets import Target, check_url, resolve
from eventbank.application.write_path import current_actor
from eventbank.ports.event_store import (
    GENESIS_HASH,
    MAX_READ_LIMIT,
    ConcurrencyConflict,
    EventStore,
    NewEvent,
    RecordedEvent,
    chained,
)
from eventbank.ports.read_store import ReadStore

MAX_SUBSCRIPTIONS = 100
MAX_DESCRIPTION_CHARS = 500
MAX_EVENT_TYPES = 50
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 256
MAX_OVERLAP_S = 7 * 86_400
WRITE_ATTEMPTS = 20
STATUS_WINDOW = 250  # feed events status() reads at most to count the lag

_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class WebhookService:
    """Add, change, list and remove subscriptions; rotate their secrets; ask for a replay; and
    the delivery status of each. ``allow_http``: http URLs to loopback hosts (development);
    ``allow_private``: targets on private addresses. Loopback targets need either."""

    def __init__(
        self,
        events: EventStore,
        reads: ReadStore,
        *,
        key: bytes | Callable[[], bytes],
        allow_http: bool = False,
        allow_private: bool = False,
        clock: Callable[[], datetime] | None = None,
    ):
        self.events, self.reads = events, reads
        self._vault = Vault(key)
        self.allow_http, self.allow_private = allow_http, allow_private
        self.clock = clock or _utcnow
        self._lock = threading.Lock()
        self._registry: tuple[int, str, dict[str, None]] = (0, GENESIS_HASH, {})
        self._tracked: dict[str, Tracked] = {}

    # ------------------------------------------------------------ checks

    def target(self, url: object) -> Target:
        """``url`` checked, its host resolved and every address checked, as at delivery."""
        target = check_url(url, allow_http=self.allow_http)
        resolve(target, allow_loopback=self.allow_http or self.allow_private,
                allow_private=self.allow_private)  # fmt: skip
        return target

    @staticmethod
    def _event_types(event_types: object) -> tuple[str, ...]:
        if isinstance(event_types, str | bytes) or not isinstance(event_types, Iterable):
            raise InvalidWebhook("event_types must be a list of event type names")
        names = list(event_types)
        if not all(isinstance(name, str) for name in names):
            raise InvalidWebhook("event_types must be a list of event type names")
        if len(names) > MAX_EVENT_TYPES:
            raise InvalidWebhook(f"at most {MAX_EVENT_TYPES} event types, not {len(names)}")
        if unknown := [name for name in names if name not in EVENT_TYPE_NAMES]:
            raise UnknownEventType(
                f"unknown event type(s) {', '.join(repr(n[:100]) for n in unknown[:5])}; "
                f"known: {', '.join(sorted(EVENT_TYPE_NAMES))}"
            )
        return tuple(dict.fromkeys(names))

    @staticmethod
    def _description(description: object) -> str:
        if not isinstance(description, str):
            raise InvalidWebhook("description must be a string")
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidWebhook(f"description has at most {MAX_DESCRIPTION_CHARS} characters")
        return description

    # ------------------------------------------------------------ commands

    def add(
        self, url: str, event_types: Sequence[str] = (), description: str = ""
    ) -> tuple[Subscription, str]:
        """A new subscription, delivered every event appended from now on (``replay`` delivers
        earlier ones), and its signing secret, shown this once."""
        target = self.target(url)
        types, text = self._event_types(event_types), self._description(description)
        self.check_key()
        secret = new_secret()
        webhook_id = new_id()
        stream = STREAM_PREFIX + webhook_id
        start_after = self._feed_end()
        data = {"webhook_id": webhook_id, "url": target.url, "event_types": list(types),
                "description": text, "secret": self._encrypt(secret),
                "start_after": start_after}  # fmt: skip
        for _ in range(WRITE_ATTEMPTS):
            version, head, active = self._read_registry()
            if len(active) >= MAX_SUBSCRIPTIONS:
                raise WebhookLimitReached(f"at most {MAX_SUBSCRIPTIONS} webhooks; remove one first")
            try:
                recorded = self._append(
                    [(stream, WEBHOOK, "WebhookAdded", data),
                     (REGISTRY, WEBHOOK_REGISTRY, "WebhookRegistered", {"webhook_id": webhook_id})],
                    {stream: 0, REGISTRY: version}, {stream: GENESIS_HASH, REGISTRY: head},
                )  # fmt: skip
            except ConcurrencyConflict:
                continue
            tracked = self._remember(None, recorded)
            self._read_registry()
            assert tracked is not None
            return tracked.subscription, secret
        raise WebhookConflict("the webhook registry kept changing concurrently; retry")

    def check_key(self) -> None:
        """``WebhookKeyMismatch`` unless this key decrypts the subscriptions' secrets (one is
        tried): a process given another key (a key file made afresh in another directory) would
        otherwise add secrets no other process can read, and fail every delivery."""
        for tracked in self.tracked():
            self._decrypt(tracked.secret)
            return

    def list(self) -> builtins.list[Subscription]:
        """Every subscription, oldest first."""
        return [t.subscription for t in self.tracked()]

    def tracked(self) -> builtins.list[Tracked]:
        """Every subscription with its delivery state (for the worker), oldest first."""
        _, _, active = self._read_registry()
        found = (self._refresh(STREAM_PREFIX + webhook_id) for webhook_id in active)
        return [t for t in found if t is not None and not t.removed]

    def get(self, webhook_id: str) -> Subscription:
        return self._current(webhook_id).subscription

    def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
        paused: bool | None = None,
    ) -> Subscription:
        """Change what is given (None: unchanged); nothing is written if nothing changes.
        Resuming goes on from where delivery stopped: nothing is skipped."""
        self._current(webhook_id)
        change: dict[str, Any] = {}
        if url is not None:
            change["url"] = self.target(url).url
        if event_types is not None:
            change["event_types"] = list(self._event_types(event_types))
        if description is not None:
            change["description"] = self._description(description)
        if paused is not None and type(paused) is not bool:
            raise InvalidWebhook("paused must be true or false")

        def events(t: Tracked) -> builtins.list[tuple[str, dict[str, Any]]]:
            s = t.subscription
            now = {"url": s.url, "event_types": list(s.event_types), "description": s.description}
            differs = {k: v for k, v in change.items() if now[k] != v}
            out: builtins.list[tuple[str, dict[str, Any]]] = []
            if differs:
                out.append(("WebhookChanged", differs))
            if paused is not None and paused != s.paused:
                out.append(("WebhookPaused" if paused else "WebhookResumed", {}))
            return out

        return self._write(webhook_id, events).subscription

    def remove(self, webhook_id: str) -> None:
        """Stop delivering to it, for good; its checkpoint is left in the read store."""
        for _ in range(WRITE_ATTEMPTS):
            t = self._current(webhook_id)
            stream = t.subscription.stream
            version, head, _ = self._read_registry()
            try:
                recorded = self._append(
                    [(stream, WEBHOOK, "WebhookRemoved", {}),
                     (REGISTRY, WEBHOOK_REGISTRY, "WebhookDeregistered",
                      {"webhook_id": t.subscription.webhook_id})],
                    {stream: t.subscription.version, REGISTRY: version},
                    {stream: t.head, REGISTRY: head},
                )  # fmt: skip
            except ConcurrencyConflict:
                self._refresh(stream)
                continue
            self._remember(t, recorded)
            self._read_registry()
            return
        raise WebhookConflict(f"webhook {webhook_id} kept changing concurrently; retry")

    def rotate_secret(
        self, webhook_id: str, secret: str | None = None, overlap_s: int = 86_400
    ) -> str:
        """A new signing secret (``secret``, at least 32 bytes, or a new random one), returned
        once. For ``overlap_s`` seconds the old secret signs every delivery beside it (two
        ``v1=`` in the header), so receivers can switch over without refusing one."""
        self._current(webhook_id)
        if secret is None:
            secret = new_secret()
        elif not isinstance(secret, str):
            raise WeakWebhookSecret("secret must be a string")
        size = len(secret.encode())
        if size < MIN_SECRET_BYTES:
            raise WeakWebhookSecret(
                f"a webhook secret needs at least {MIN_SECRET_BYTES} bytes, not {size}"
            )
        if size > MAX_SECRET_BYTES or not secret.isprintable():
            raise InvalidWebhook(
                f"a webhook secret has at most {MAX_SECRET_BYTES} bytes, all printable"
            )
        if type(overlap_s) is not int or not 0 <= overlap_s <= MAX_OVERLAP_S:
            raise InvalidWebhook(f"overlap_s must be whole seconds from 0 to {MAX_OVERLAP_S}")
        token = self._encrypt(secret)
        until = (self.clock() + timedelta(seconds=overlap_s)).isoformat()

        def events(t: Tracked) -> builtins.list[tuple[str, dict[str, Any]]]:
            data: dict[str, Any] = {"secret": token}
            if overlap_s:
                data |= {"previous_secret": t.secret, "previous_until": until}
            return [("WebhookSecretRotated", data)]

        self._write(webhook_id, events)
        return secret

    def replay(self, webhook_id: str, from_position: int) -> Subscription:
        """Deliver again every event from feed position ``from_position`` on (receivers
        de-duplicate by event id). A position past the current checkpoint skips nothing:
        delivery then goes on from the checkpoint."""
        self._current(webhook_id)
        if type(from_position) is not int or from_position < 0:
            raise InvalidWebhook("from_position must be a feed position (an integer >= 0)")

        def events(t: Tracked) -> builtins.list[tuple[str, dict[str, Any]]]:
            start = min(max(from_position - 1, 0), self.checkpoint(t))
            return [("WebhookReplayRequested", {"from_position": from_position,
                     "generation": t.generation + 1, "start_after": start})]  # fmt: skip

        return self._write(webhook_id, events).subscription

    def record_failing(self, webhook_id: str, error: str, attempts: int) -> None:
        """The worker's verdict after ``attempts`` consecutive failures (once, until a 2xx)."""
        text = error[:500]

        def events(t: Tracked) -> builtins.list[tuple[str, dict[str, Any]]]:
            if t.subscription.failing:
                return []
            return [("WebhookFailing", {"error": text, "attempts": attempts})]

        self._write(webhook_id, events)

    def record_recovered(self, webhook_id: str) -> None:
        def events(t: Tracked) -> builtins.list[tuple[str, dict[str, Any]]]:
            return [("WebhookRecovered", {})] if t.subscription.failing else []

        self._write(webhook_id, events)

    # ------------------------------------------------------------ delivery state

    def checkpoint(self, tracked: Tracked) -> int:
        """The feed position every event up to which was delivered (or is not wanted)."""
        return max(self.reads.checkpoint(tracked.checkpoint_name), tracked.start_after)

    def signing_secrets(self, tracked: Tracked) -> builtins.list[str]:
        """The secrets that sign a delivery now: the current one, and the previous one during
        a rotation's overlap."""
        secrets_ = [self._decrypt(tracked.secret)]
        previous, until = tracked.previous_secret, tracked.previous_until
        if previous and until and self.clock() < datetime.fromisoformat(until):
            secrets_.append(self._decrypt(previous))
        return secrets_

    def status(self, webhook_id: str) -> dict[str, Any]:
        """How delivery goes: ``checkpoint`` (feed position delivered up to), ``lag_events``
        (wanted events after it, among the next ``STATUS_WINDOW``; ``lag_capped``: at least
        that many), ``lag_seconds`` (age of the oldest undelivered one), ``last_success_at``,
        ``last_error``, ``attempts`` (consecutive failures), ``next_attempt_at``, ``failing``
        and ``paused``. A bounded number of reads whatever the store's size."""
        t = self._current(webhook_id)
        s = t.subscription
        checkpoint = self.checkpoint(t)
        window = self.events.read_all(checkpoint, STATUS_WINDOW)
        pending = [e for e in window if s.wants(e)]
        lag_seconds = 0.0
        if pending and (recorded_at := pending[0].metadata.get("recorded_at")):
            moment = datetime.fromisoformat(str(recorded_at).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            lag_seconds = max(0.0, (self.clock() - moment).total_seconds())
        failure = next((f for f in self.reads.failures(t.failure_name)
                        if f.aggregate_id == s.stream), None)  # fmt: skip
        delivered_ms = self.reads.checkpoint(t.delivered_name)
        last_success = (datetime.fromtimestamp(delivered_ms / 1000, UTC).isoformat()
                        if delivered_ms else None)  # fmt: skip
        return {
            "webhook_id": s.webhook_id,
            "checkpoint": checkpoint,
            "lag_events": len(pending),
            "lag_capped": len(window) == STATUS_WINDOW,
            "lag_seconds": round(lag_seconds, 3),
            "last_success_at": last_success,
            "last_error": failure.error if failure else s.last_error,
            "attempts": failure.attempts if failure else 0,
            "next_attempt_at": failure.next_attempt_at if failure else None,
            "failing": s.failing,
            "paused": s.paused,
        }

    # ------------------------------------------------------------ storage

    def _encrypt(self, secret: str) -> str:
        return self._vault.encrypt(secret)

    def _decrypt(self, token: str) -> str:
        return self._vault.decrypt(token)

    def _feed_end(self) -> int:
        """The feed's newest position: new subscriptions start after it. Where the engine
        cannot tell it in one read (DynamoDB), the feed is read to its end."""
        last = self.events.last_position()
        if last is not None:
            return last
        position = 0
        while batch := self.events.read_all(position, MAX_READ_LIMIT):
            position = batch[-1].position or position
            if len(batch) < MAX_READ_LIMIT:
                break
        return position

    def _stream_of(self, webhook_id: object) -> str:
        if not isinstance(webhook_id, str):
            raise WebhookNotFound("a webhook id is a string")
        bare = webhook_id.removeprefix(STREAM_PREFIX)
        if not _ID.fullmatch(bare):
            raise WebhookNotFound(f"webhook {webhook_id[:100]!r} does not exist")
        return STREAM_PREFIX + bare

    def _current(self, webhook_id: str) -> Tracked:
        stream = self._stream_of(webhook_id)
        tracked = self._refresh(stream)
        if tracked is None or tracked.removed:
            raise WebhookNotFound(f"webhook {webhook_id!r} does not exist")
        return tracked

    def cached(self, webhook_id: str) -> Tracked | None:
        """The subscription as this service last read it (no store read)."""
        with self._lock:
            return self._tracked.get(STREAM_PREFIX + webhook_id)

    def _refresh(self, stream: str) -> Tracked | None:
        """The subscription folded from its stream; only events past the known ones are read."""
        with self._lock:
            known = self._tracked.get(stream)
        fresh = self.events.read_stream(stream, known.subscription.version if known else 0)
        return self._remember(known, fresh)

    def _remember(self, known: Tracked | None, recorded: Sequence[RecordedEvent]) -> Tracked | None:
        tracked = known
        for event in recorded:
            if event.aggregate_type == WEBHOOK and (
                tracked is None or event.version > tracked.subscription.version
            ):
                tracked = fold(tracked, event)
        if tracked is None:
            return None
        with self._lock:
            cached = self._tracked.get(tracked.subscription.stream)
            if cached is None or cached.subscription.version < tracked.subscription.version:
                self._tracked[tracked.subscription.stream] = tracked
            return self._tracked[tracked.subscription.stream]

    def _read_registry(self) -> tuple[int, str, dict[str, None]]:
        """The registry's version, head hash and active ids (oldest first), reading only what
        is new since this service last read it."""
        with self._lock:
            version, head, active = self._registry
        fresh = self.events.read_stream(REGISTRY, version)
        if fresh:
            active = dict(active)
            for event in fresh:
                if event.event_type == "WebhookRegistered":
                    active[event.data["webhook_id"]] = None
                else:
                    active.pop(event.data["webhook_id"], None)
            with self._lock:
                if self._registry[0] < fresh[-1].version:
                    self._registry = (fresh[-1].version, fresh[-1].hash, active)
                version, head, active = self._registry
        return version, head, dict(active)

    def _write(
        self, webhook_id: str, build: Callable[[Tracked], builtins.list[tuple[str, dict[str, Any]]]]
    ) -> Tracked:
        """Append what ``build`` decides on the subscription's current state, retrying on a
        concurrent write; nothing when it decides nothing."""
        for _ in range(WRITE_ATTEMPTS):
            t = self._current(webhook_id)
            items = build(t)
            if not items:
                return t
            stream = t.subscription.stream
            try:
                recorded = self._append(
                    [(stream, WEBHOOK, kind, data) for kind, data in items],
                    {stream: t.subscription.version},
                    {stream: t.head},
                )
            except ConcurrencyConflict:
                continue
            result = self._remember(t, recorded)
            assert result is not None
            return result
        raise WebhookConflict(f"webhook {webhook_id} kept changing concurrently; retry")

    def _append(
        self,
        items: Sequence[tuple[str, str, str, Mapping[str, Any]]],
        expected: dict[str, int],
        heads: dict[str, str],
    ) -> builtins.list[RecordedEvent]:
        metadata = {"actor": current_actor.get(), "recorded_at": self.clock().isoformat()}
        versions = dict(expected)
        new = []
        for stream, aggregate_type, kind, data in items:
            versions[stream] += 1
            new.append(NewEvent(new_id(), stream, aggregate_type, versions[stream], kind, 1,
                                dict(data), metadata))  # fmt: skip
        return self.events.append(chained(new, heads), expected)
