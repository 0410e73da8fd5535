"""``eventbank.webhooks``: the receivers' helper signs and verifies as Stripe's scheme does:
``t=<unix>,v1=<hex HMAC-SHA256 of "<t>." + body>``, one ``v1`` per secret during a rotation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbank.webhooks import (
    SIGNATURE_HEADER,
    SignatureError,
    parse,
    sign,
    sign_all,
    verify,
)

SECRET = "whsec_" + "k" * 43
OLD = "whsec_" + "o" * 43
BODY = b'{"events":[{"event_id":"e1"}],"webhook_id":"w"}'
NOW = 1_790_000_000


def test_the_header_is_t_and_the_hex_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"
    assert SIGNATURE_HEADER == "Eventbank-Signature"
    verify(BODY, sign(SECRET, NOW, BODY), SECRET, now=NOW)
    verify(bytearray(BODY), sign(SECRET, NOW, BODY), SECRET, now=NOW + 299)


def test_a_tampered_body_is_refused() -> None:
    header = sign(SECRET, NOW, BODY)
    for tampered in (BODY + b" ", BODY.replace(b"e1", b"e2"), b"", BODY[:-1]):
        with pytest.raises(SignatureError, match="no signature matches"):
            verify(tampered, header, SECRET, now=NOW)


def test_a_wrong_secret_is_refused() -> None:
    header = sign(SECRET, NOW, BODY)
    for wrong in (OLD, SECRET[:-1], SECRET + "x", SECRET.upper()):
        with pytest.raises(SignatureError):
            verify(BODY, header, wrong, now=NOW)


def test_a_timestamp_outside_the_tolerance_is_refused_either_way() -> None:
    header = sign(SECRET, NOW, BODY)
    verify(BODY, header, SECRET, now=NOW + 300)
    verify(BODY, header, SECRET, now=NOW - 300)
    for now in (NOW + 301, NOW - 301, NOW + 86_400):
        with pytest.raises(SignatureError, match="timestamp"):
            verify(BODY, header, SECRET, now=now)
    verify(BODY, header, SECRET, tolerance_s=86_400, now=NOW + 86_400)
    with pytest.raises(SignatureError, match="timestamp"):
        verify(BODY, header, SECRET, tolerance_s=10, now=NOW + 11)
    # The timestamp is signed: moving it breaks the signature.
    moved = header.replace(f"t={NOW}", f"t={NOW + 1}")
    with pytest.raises(SignatureError, match="no signature matches"):
        verify(BODY, moved, SECRET, now=NOW)


def test_during_a_rotation_any_v1_may_match() -> None:
    header = sign_all([SECRET, OLD], NOW, BODY)
    timestamp, signatures = parse(header)
    assert timestamp == NOW and len(signatures) == 2
    verify(BODY, header, SECRET, now=NOW)
    verify(BODY, header, OLD, now=NOW)
    with pytest.raises(SignatureError):
        verify(BODY, header, "whsec_" + "n" * 43, now=NOW)
    # Unknown schemes are ignored, an unknown v1 beside a good one does no harm.
    verify(BODY, f"{header},v0=abc,v1=00", SECRET, now=NOW)
    verify(BODY, f"t={NOW},v1=deadbeef,{header.split(',')[1]}", SECRET, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "", "garbage", f"t={NOW}", f"v1={'0' * 64}", f"t=,v1={'0' * 64}",
        f"t=abc,v1={'0' * 64}", f"t={NOW},t={NOW},v1={'0' * 64}", f"t=-5,v1={'0' * 64}",
        f"t={NOW},v1", f"t={NOW},v0={'0' * 64}", f"t=\u0661\u0662,v1={'0' * 64}",
        f"t={NOW}," + ",".join([f"v1={'0' * 64}"] * 100),
    ],
)  # fmt: skip
def test_a_malformed_header_is_refused(header: str) -> None:
    with pytest.raises(SignatureError):
        verify(BODY, header, SECRET, now=NOW)


def test_wrong_argument_types_are_errors_not_silent_passes() -> None:
    header = sign(SECRET, NOW, BODY)
    with pytest.raises(TypeError):
        verify(BODY.decode(), header, SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verify(BODY, header, "", now=NOW)
    with pytest.raises(SignatureError):
        verify(BODY, None, SECRET, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign(SECRET, 1.5, BODY)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sign_all(SECRET, NOW, BODY)  # a string is not a list of secrets
    with pytest.raises(TypeError):
        sign_all([], NOW, BODY)


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64),
       flip=st.integers(min_value=0))  # fmt: skip
def test_any_body_round_trips_and_any_flipped_byte_is_caught(
    body: bytes, secret: str, flip: int
) -> None:
    header = sign(secret, NOW, body)
    verify(body, header, secret, now=NOW)
    if body:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
        with pytest.raises(SignatureError):
            verify(changed, header, secret, now=NOW)
