"""The caller's metadata on a money command: how operators tie ledger records to their own
(an order id, an invoice, a payroll run). Stored in the event, part of the idempotency
fingerprint, searchable (the transfers read model) and returned on every read.

Limits, so a record stays small and every engine can index it: at most ``MAX_KEYS`` keys of
1-40 characters from ``[A-Za-z0-9_.-]``, each with a string value of at most 500 characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from eventbank.domain.errors import InvalidInput

MAX_KEYS = 20
MAX_VALUE_LENGTH = 500
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,40}")


class InvalidMetadata(InvalidInput):
    code = "invalid_metadata"


def check_metadata(metadata: object) -> dict[str, str]:
    """``metadata`` as a plain dict if it keeps the limits (None is none), else why not."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidMetadata("metadata must be an object of string keys and string values")
    if len(metadata) > MAX_KEYS:
        raise InvalidMetadata(f"metadata has {len(metadata)} keys; at most {MAX_KEYS} are allowed")
    for key, value in metadata.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise InvalidMetadata(
                f"metadata key {key!r} must be 1-40 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(value, str):
            raise InvalidMetadata(f"metadata value of {key!r} must be a string")
        if len(value) > MAX_VALUE_LENGTH or any(ord(c) < 32 for c in value):
            raise InvalidMetadata(
                f"metadata value of {key!r} must be at most {MAX_VALUE_LENGTH} printable characters"
            )
    return dict(metadata)
