"""Canonical JSON: one byte-for-byte encoding per value, for storage, fingerprints and hashes."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text; NaN, infinities and unknown types are refused."""
    return _ENCODER.encode(value)


def fingerprint(value: Any) -> str:
    """sha256 of the canonical JSON of ``value``, as hex."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable here")


# Built once: json.dumps with options builds a new encoder on every call (a hot-path cost).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse
)
