"""Finding transfers and transactions: by account, by metadata, by time, by status.

Bounded on every engine, whatever the store's size. A search reads one index of the transfers
read model (``ReadStore.transfers_page``) in ``(created_at, transfer_id)`` order: the account's
when ``account_id`` is given, else the first metadata pair's (by key) when one is, else the time
index. ``from``/``to`` bound that range read itself; the other filters (``status``, further
metadata pairs) are applied to the rows it returns, and at most ``SEARCH_SCAN`` rows are
examined per call. A page may therefore hold fewer than ``limit`` items, even none, and still
have a ``next`` cursor: the position of the last row examined, from which the search goes on.
Followed to the end, the cursors return every match exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import InvalidInput
from eventbank.domain.metadata import check_metadata
from eventbank.domain.money import format_minor
from eventbank.ports.read_store import END_OF_TIME, ReadStore, TransferIndex, TransferRow

MAX_LIMIT = 200
SEARCH_SCAN = 1_000  # rows one search examines at most
SEARCH_CHUNK = 250  # rows per further read while searching: a page filled early stops reading
STATUSES = ("pending", "posted", "voided", "expired")
_POSITION = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


class InvalidTime(InvalidInput):
    code = "invalid_time"


class InvalidTimeRange(InvalidInput):
    code = "invalid_time_range"


class InvalidLimit(InvalidInput):
    code = "invalid_limit"


class InvalidStatus(InvalidInput):
    code = "invalid_status"


class InvalidMetadataFilter(InvalidInput):
    code = "invalid_metadata_filter"


class InvalidCursor(InvalidInput):
    code = "invalid_cursor"


def find_transfers(
    reads: ReadStore,
    *,
    account_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    from_: str | None = None,
    to: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int | str = 50,
) -> tuple[list[dict[str, Any]], str | None]:
    """Transfers and transactions matching every filter given, oldest first, at most
    ``limit``, and the cursor of the next page (None: nothing is left). ``from`` is inclusive,
    ``to`` exclusive (RFC 3339 times); ``after`` is a cursor a previous page returned."""
    pairs = _metadata_filter(metadata)
    size, wanted = page_limit(limit), _status(status)
    low, before = _time(from_, "from"), _time(to, "to") or END_OF_TIME
    if low and before != END_OF_TIME and low > before:
        raise InvalidTimeRange(f"from ({from_}) is after to ({to})")
    position = max(decode_cursor(after) if after else ("", ""), (low, ""))
    index = TransferIndex(account_id=account_id or None)
    if index.account_id is None and pairs:
        index = TransferIndex(meta=pairs[0])
    budget, step = max(size + 1, SEARCH_SCAN), size + 1
    found: list[TransferRow] = []
    while budget > 0:
        asked = min(budget, step)
        step = SEARCH_CHUNK
        rows = reads.transfers_page(index, position, before, asked)
        budget -= len(rows)
        for row in rows:
            if _matches(row, pairs, wanted):
                if len(found) == size:  # one more than asked for: there is a next page
                    return [describe(f) for f in found], encode_cursor(found[-1].position)
                found.append(row)
            position = row.position
        if len(rows) < asked:  # the end of the index range
            return [describe(f) for f in found], None
    return [describe(f) for f in found], encode_cursor(position)  # examined all it may


def describe(row: TransferRow) -> dict[str, Any]:
    """A transfers row as the API shows it (amounts as decimal strings)."""
    return {
        "transfer_id": row.transfer_id,
        "kind": row.kind,
        "status": row.status,
        "amount": format_minor(row.moved_minor, row.currency),
        "pending_amount": format_minor(row.held_minor, row.currency) if row.held_minor else None,
        "currency": row.currency,
        "from_account_id": row.from_account,
        "to_account_id": row.to_account,
        "accounts": list(row.accounts),
        "created_at": row.created_at,
        "metadata": dict(row.metadata),
        "description": row.description,
        "reverses": row.reverses,
        "reversed_by": list(row.reversed_by),
        "reversed_amount": format_minor(row.reversed_minor, row.currency),
    }


def encode_cursor(position: tuple[str, str]) -> str:
    """An opaque cursor: the (created_at, transfer_id) of the last row examined."""
    text = json.dumps(list(position), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The position a cursor holds, or ``invalid_cursor``."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, transfer_id = json.loads(text)
    except (ValueError, TypeError, binascii.Error):
        raise InvalidCursor("after is not a cursor a previous page returned") from None
    if not (isinstance(created_at, str) and _POSITION.fullmatch(created_at)
            and isinstance(transfer_id, str) and transfer_id):  # fmt: skip
        raise InvalidCursor("after is not a cursor a previous page returned")
    return created_at, transfer_id


def _matches(row: TransferRow, pairs: list[tuple[str, str]], status: str | None) -> bool:
    if status is not None and row.status != status:
        return False
    return all(row.metadata.get(key) == value for key, value in pairs)


def _metadata_filter(metadata: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """The metadata pairs to match, sorted by key, within the limits metadata itself keeps."""
    try:
        checked = check_metadata(metadata)
    except InvalidInput as exc:
        raise InvalidMetadataFilter(f"metadata filter: {exc}") from None
    return sorted(checked.items())


def page_limit(limit: int | str) -> int:
    """An integer from 1 to ``MAX_LIMIT`` (decimal text, as a query string has it, too): the
    page size of a search and of the recent-activity feed."""
    if isinstance(limit, str) and re.fullmatch(r"\d{1,4}", limit):
        limit = int(limit)
    if type(limit) is not int or not 1 <= limit <= MAX_LIMIT:
        raise InvalidLimit(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit


def _status(status: str | None) -> str | None:
    if status is None or status == "":
        return None
    if status not in STATUSES:
        raise InvalidStatus(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    return status


def _time(text: str | None, name: str) -> str:
    """An RFC 3339 time with an offset, as fixed-width UTC text ("" when not given)."""
    if text is None or text == "":
        return ""
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,6})?([Zz]|[+-]\d\d:\d\d)",
                        text):  # fmt: skip
        raise InvalidTime(
            f"{name} must be an RFC 3339 time with an offset, like 2026-12-05T09:00:00Z, "
            f"not {text!r}"
        )
    try:
        return utc_text(datetime.fromisoformat(text.upper().replace("Z", "+00:00")))
    except ValueError:
        raise InvalidTime(f"{name} is not a valid time: {text!r}") from None
