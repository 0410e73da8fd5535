"""Canonical JSON: one byte-for-byte encoding per value, for storage, fingerprints and hashes.

The bytes are the standard library's ``json`` with sorted keys, no whitespace and UTF-8 text,
and must stay so (stored hashes and fingerprints are over them). The command path encodes a
dozen values per transfer, so the standard library's C encoder is built once and called
directly: ``JSONEncoder.encode`` builds a new one on every call, for the circular-reference
check, which these values (trees of dicts, lists and scalars) never need; a cycle still raises
(``RecursionError``). tests/test_canonical.py holds it to ``JSONEncoder``'s bytes.
"""

from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; NaN, infinities and unknown types are refused.
    A string is quoted directly, as ``JSONEncoder.encode`` itself does (the chain hash encodes
    four per event)."""
    if type(value) is str:
        return encode_basestring(value)
    if _C_ENCODER is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODER(value, 0))


def fingerprint(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``, as hex."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable here")


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
)
# What _ENCODER.encode builds per call (no markers: no circular-reference check), built once;
# None where Python has no C accelerator, and then _ENCODER does it all.
_make = getattr(json.encoder, "c_make_encoder", None)  # not in the type stubs
_C_ENCODER = (
    _make(None, _refuse, encode_basestring, None, ":", ",", True, False, False) if _make else None
)
