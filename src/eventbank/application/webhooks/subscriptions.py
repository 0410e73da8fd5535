"""A subscription as its stream tells it (``Subscription``, and ``Tracked`` with what only the
service and its worker see), and the names it is kept under."""

from __future__ import annotations

from dataclasses import dataclass, replace

from eventbank.domain.events import EVENT_TYPES
from eventbank.ports.event_store import RecordedEvent

WEBHOOK = "Webhook"  # aggregate type of a subscription's stream
WEBHOOK_REGISTRY = "WebhookRegistry"
REGISTRY = "webhook#registry"
STREAM_PREFIX = "webhook#"

# What ``event_types`` may name: the account events (domain/events.py), the payroll saga's and
# the audit's. Every other event of the feed (the payroll registry's, …) is delivered only to
# subscriptions of every type.
PAYROLL_EVENT_TYPES = ("PayrollStarted", "PayrollLinesRecorded", "PaymentsRecorded",
                       "CompensationsRecorded", "PayrollFinished")  # fmt: skip
EVENT_TYPE_NAMES = frozenset(EVENT_TYPES) | frozenset(PAYROLL_EVENT_TYPES) | {"AuditCompleted"}


@dataclass(frozen=True, slots=True)
class Subscription:
    webhook_id: str
    url: str
    event_types: tuple[str, ...]  # empty: every type
    description: str
    paused: bool
    created_at: str  # RFC 3339
    failing: bool  # the worker gave up for now: N consecutive failures, until the next 2xx
    last_error: str | None  # the error that made it failing
    updated_at: str = ""
    failing_since: str | None = None
    version: int = 0  # of its stream

    @property
    def stream(self) -> str:
        return STREAM_PREFIX + self.webhook_id

    def wants(self, event: RecordedEvent) -> bool:
        """Whether ``event`` is delivered to this subscription (never a webhook stream's)."""
        if event.aggregate_type in (WEBHOOK, WEBHOOK_REGISTRY):
            return False
        if event.aggregate_id.startswith(STREAM_PREFIX):
            return False
        return not self.event_types or event.event_type in self.event_types


@dataclass(frozen=True, slots=True)
class Tracked:
    """A subscription with what only the service and its worker see: the encrypted secrets,
    where its current checkpoint starts, and its stream's head."""

    subscription: Subscription
    secret: str  # Fernet token
    previous_secret: str | None  # Fernet token, signing beside the new one until previous_until
    previous_until: str | None
    generation: int  # replays so far: which checkpoint is current
    start_after: int  # the current checkpoint's start: deliver positions above it
    head: str
    removed: bool = False
    # when it was last resumed or given a new URL (RFC 3339, "" never): a delivery backing off
    # from failures before then is tried at once
    retry_from: str = ""

    @property
    def checkpoint_name(self) -> str:
        base = f"webhook:{self.subscription.webhook_id}"
        return base if self.generation == 0 else f"{base}:replay-{self.generation}"

    @property
    def failure_name(self) -> str:
        return f"webhook:{self.subscription.webhook_id}"

    @property
    def delivered_name(self) -> str:
        return f"webhook:{self.subscription.webhook_id}:delivered"


def fold(tracked: Tracked | None, event: RecordedEvent) -> Tracked:
    data, at = event.data, str(event.metadata.get("recorded_at", ""))
    if tracked is None:
        subscription = Subscription(
            webhook_id=data["webhook_id"], url=data["url"],
            event_types=tuple(data["event_types"]), description=data["description"],
            paused=False, created_at=at, failing=False, last_error=None, updated_at=at,
            version=event.version,
        )  # fmt: skip
        return Tracked(subscription, data["secret"], None, None, 0, int(data["start_after"]),
                       event.hash)  # fmt: skip
    s, kind = tracked.subscription, event.event_type
    t = replace(tracked, head=event.hash)
    if kind == "WebhookChanged":
        changed = {k: data[k] for k in ("url", "description") if k in data}
        if "event_types" in data:
            changed["event_types"] = tuple(data["event_types"])
        s = replace(s, **changed)
        if "url" in data:
            t = replace(t, retry_from=at)
    elif kind in ("WebhookPaused", "WebhookResumed"):
        s = replace(s, paused=kind == "WebhookPaused")
        if kind == "WebhookResumed":
            t = replace(t, retry_from=at)
    elif kind == "WebhookSecretRotated":
        t = replace(t, secret=data["secret"], previous_secret=data.get("previous_secret"),
                    previous_until=data.get("previous_until"))  # fmt: skip
    elif kind == "WebhookReplayRequested":
        t = replace(t, generation=int(data["generation"]), start_after=int(data["start_after"]))
    elif kind == "WebhookFailing":
        s = replace(s, failing=True, last_error=data["error"], failing_since=at)
    elif kind == "WebhookRecovered":
        s = replace(s, failing=False, last_error=None, failing_since=None)
    elif kind == "WebhookRemoved":
        t = replace(t, removed=True)
    return replace(t, subscription=replace(s, updated_at=at, version=event.version))
