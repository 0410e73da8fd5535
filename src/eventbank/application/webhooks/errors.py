"""What webhooks refuse, each with a stable code; the interfaces map them by family:
``InvalidInput`` (422, nothing stored), ``NotFound`` (404), ``RuleViolation`` and ``Conflict``
(409)."""

from __future__ import annotations

from eventbank.domain.errors import Conflict, EventbankError, InvalidInput, NotFound, RuleViolation


class InvalidWebhookUrl(InvalidInput):
    """Malformed, not http(s), no host, credentials or a fragment in it, or http to a host
    that is not loopback (or without http allowed)."""

    code = "invalid_webhook_url"


class WebhookAddressRefused(InvalidInput):
    """The host resolves to an address webhooks are not delivered to (targets.py)."""

    code = "webhook_address_refused"


class UnknownEventType(InvalidInput):
    code = "unknown_event_type"


class WeakWebhookSecret(InvalidInput):
    code = "weak_webhook_secret"


class InvalidWebhook(InvalidInput):
    """A description, event type list, overlap or position out of bounds or of the wrong type."""

    code = "invalid_webhook"


class InvalidWebhookKey(InvalidInput):
    code = "invalid_webhook_key"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class WebhookLimitReached(RuleViolation):
    code = "webhook_limit_reached"


class WebhookConflict(Conflict):
    code = "webhook_conflict"


class WebhookKeyMismatch(EventbankError):
    """The key given does not decrypt a subscription's secret: every process of one store needs
    the same key."""

    code = "webhook_key_mismatch"
