"""JSON from outside (HTTP bodies, payroll lines), read so that every reader sees one meaning.

Python's ``json`` keeps the last of two values under one key, other parsers (a proxy, a WAF, a log
pipeline) may keep the first: ``{"amount": "1.00", "amount": "2.00"}`` would then be another
payment to them than to the ledger. So an object that names a key twice, at any depth, is
refused as malformed JSON.
"""

from __future__ import annotations

import json
from typing import Any

from eventbank.domain.errors import InvalidInput


class MalformedJson(InvalidInput):
    code = "malformed_json"


class DuplicateKey(MalformedJson):
    def __init__(self, key: str):
        self.key = key
        shown = key if len(key) <= 80 else key[:80] + "..."
        super().__init__(f"duplicate key {shown!r} in a JSON object: each key may appear once")


def loads_without_duplicates(text: str | bytes) -> Any:
    """``json.loads``, refusing an object with a duplicate key at any depth (``DuplicateKey``).
    Text that is not JSON raises what ``json.loads`` raises (a ``ValueError``, or a
    ``RecursionError`` when nested too deeply)."""
    return json.loads(text, object_pairs_hook=_object_without_duplicates)


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj
