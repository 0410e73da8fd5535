"""Webhooks: deliver the event feed to other systems, signed, in order, at least once.

- ``service``: ``WebhookService`` keeps the subscriptions as events (every process sees the
  same ones), their secrets encrypted (``keys``), and answers how each one's delivery goes.
- ``subscriptions``: a subscription as its stream tells it; ``errors``: what is refused.
- ``targets``: which URLs and addresses a delivery may go to (no SSRF).
- ``delivery``: ``DeliveryWorker`` follows the feed from each subscription's checkpoint and
  POSTs ordered, signed batches until a 2xx.

Receivers check signatures with ``eventbank.webhooks.verify``.
"""

from eventbank.application.webhooks.delivery import DeliveryWorker, event_json
from eventbank.application.webhooks.errors import (
    InvalidWebhook,
    InvalidWebhookKey,
    InvalidWebhookUrl,
    UnknownEventType,
    WeakWebhookSecret,
    WebhookAddressRefused,
    WebhookConflict,
    WebhookKeyMismatch,
    WebhookLimitReached,
    WebhookNotFound,
)
from eventbank.application.webhooks.keys import load_or_create_key
from eventbank.application.webhooks.service import (
    MAX_DESCRIPTION_CHARS,
    MAX_EVENT_TYPES,
    MAX_SUBSCRIPTIONS,
    MIN_SECRET_BYTES,
    WebhookService,
)
from eventbank.application.webhooks.subscriptions import EVENT_TYPE_NAMES, Subscription
from eventbank.application.webhooks.targets import MAX_URL_CHARS

__all__ = [
    "EVENT_TYPE_NAMES",
    "MAX_DESCRIPTION_CHARS",
    "MAX_EVENT_TYPES",
    "MAX_SUBSCRIPTIONS",
    "MAX_URL_CHARS",
    "MIN_SECRET_BYTES",
    "DeliveryWorker",
    "InvalidWebhook",
    "InvalidWebhookKey",
    "InvalidWebhookUrl",
    "Subscription",
    "UnknownEventType",
    "WeakWebhookSecret",
    "WebhookAddressRefused",
    "WebhookConflict",
    "WebhookKeyMismatch",
    "WebhookLimitReached",
    "WebhookNotFound",
    "WebhookService",
    "event_json",
    "load_or_create_key",
]
