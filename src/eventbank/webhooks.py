"""Webhook signatures, for receivers: check that a delivery came from eventbank, unaltered.

Every delivery carries the header ``Eventbank-Signature: t=<unix seconds>,v1=<hex>``, where the
hex is the HMAC-SHA256, keyed with the subscription's secret (the whole ``whsec_…`` text, UTF-8),
of the timestamp, a full stop and the raw request body: ``f"{t}.".encode() + body``. It is
Stripe's scheme. While a secret is being rotated the header carries one ``v1=`` per secret
(the new one and the old one), and a receiver accepts the delivery if any of them matches.

A receiver, with the body exactly as received (before any JSON parsing)::

    from eventbank.webhooks import SIGNATURE_HEADER, SignatureError, verify

    try:
        verify(body, request.headers[SIGNATURE_HEADER], secret)
    except (KeyError, SignatureError):
        return 400
    for event in json.loads(body)["events"]:
        ...  # de-duplicate by event["event_id"]: delivery is at least once

``verify`` refuses a timestamp more than ``tolerance_s`` away from now, so a captured delivery
cannot be replayed later. This module needs only the standard library: a receiver may copy it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

SIGNATURE_HEADER = "Eventbank-Signature"
WEBHOOK_ID_HEADER = "Eventbank-Webhook-Id"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
MAX_HEADER_CHARS = 4_096  # a longer header is refused before any HMAC is computed


class SignatureError(ValueError):
    """The signature header is missing a part, stale, or matches no secret."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _check(timestamp: int, body: bytes) -> None:
    if type(timestamp) is not int or timestamp < 0:
        raise TypeError("timestamp must be whole seconds since the epoch (an int >= 0)")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be the raw bytes of the request")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>." + body>``."""
    return sign_all([secret], timestamp, body)


def sign_all(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """The header value with one ``v1=`` per secret, in the order given (a rotation's overlap:
    the new secret first, then the old)."""
    _check(timestamp, body)
    if isinstance(secrets, str) or not secrets:
        raise TypeError("secrets must be a non-empty sequence of strings")
    body = bytes(body)
    signatures = (f"{SCHEME}={_digest(secret, timestamp, body)}" for secret in secrets)
    return ",".join([f"t={timestamp}", *signatures])


def parse(header: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures of a header value; other schemes are ignored."""
    if not isinstance(header, str) or len(header) > MAX_HEADER_CHARS:
        raise SignatureError("the signature header is missing or too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed signature header part {part.strip()[:40]!r}")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                raise SignatureError("the signature header needs exactly one t=<unix seconds>")
            timestamp = int(value)
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureError("the signature header has no timestamp (t=)")
    if not signatures:
        raise SignatureError(f"the signature header has no {SCHEME}= signature")
    return timestamp, signatures


def verify(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Return if ``header`` signs ``body`` with ``secret`` at a time within ``tolerance_s`` of
    ``now`` (default: the clock); raise ``SignatureError`` otherwise. Every ``v1`` is compared
    in constant time; one match is enough (rotation overlap)."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be the raw bytes of the request, as received")
    if not isinstance(secret, str) or not secret:
        raise TypeError("secret must be the subscription's secret (a non-empty string)")
    timestamp, signatures = parse(header)
    moment = time.time() if now is None else now
    if abs(moment - timestamp) > tolerance_s:
        raise SignatureError(
            f"the signature's timestamp is {round(moment - timestamp)} s from now; "
            f"at most {tolerance_s} s is accepted"
        )
    expected = _digest(secret, timestamp, bytes(body))
    matched = False
    for candidate in signatures:  # compare every one: no early exit tells which matched
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    if not matched:
        raise SignatureError("no signature matches the body and the secret")
