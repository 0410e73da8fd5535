"""The recent-activity feed: the last money movements across all accounts, newest first, paged.

Every account event that moves money (``accounts.movement_of``: a deposit, a withdrawal, a
transfer's halves, a transaction's legs, a pending transfer's holds and their post, void or
expiry, reversals) is one item, described as an account's history describes it
(``queries.describe_movement``), with its feed position, account, version, time and actor.

Bounded on every engine, whatever the store's size: a request reads one window of the global
feed below its cursor, one ``read_all`` of at most ``WINDOW`` events, and nothing else but the
feed's head (one indexed read; on DynamoDB the projection checkpoint). The window is the
positions ``(start, before)``: all of its events are examined, the newest ``limit`` movements
are returned, and the next page's window lies below the last one returned, or below ``start``.
A page may therefore be short, even empty (a window of account openings, payroll bookkeeping or
audit records), and still have a ``next``. Followed to position 0 the cursors return every
movement exactly once, since the windows never overlap on a movement.

- SQLite and PostgreSQL number the feed densely (``last_position`` is its head): a window of
  ``WINDOW`` positions holds at most ``WINDOW`` events, so every window is read whole at once.
- DynamoDB's positions are stream sequence numbers, sparse and with no known head. The first
  page reads forward from just below the projection checkpoint to the feed's end, or to the
  ``WINDOW``-th event (newer ones show once the projections catch up). After that the cursor
  carries the window's width, adapted from the density each window showed. A window found
  to hold more than ``WINDOW`` events returns nothing, and its cursor asks for half the width.
  Across shards sequence numbers are no global order (docs/dynamodb.md), so there "newest
  first" is per shard, and an event a lagging shard publishes into a window already read is
  not listed.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from eventbank.application.projections import accounts
from eventbank.application.queries import describe_movement
from eventbank.application.transfer_search import InvalidCursor, page_limit
from eventbank.domain.events import event_from_data
from eventbank.ports.event_store import EventStore, RecordedEvent
from eventbank.ports.read_store import ReadStore

DEFAULT_LIMIT = 50
WINDOW = 1_000  # feed events one request examines at most
GROWTH = 16  # how much wider a sparse window may be than the one before it
MAX_POSITION = 10**40  # DynamoDB sequence numbers have up to 40 digits
_CURSOR_CHARS = 200


def recent_activity(
    events: EventStore,
    reads: ReadStore,
    *,
    before: str | None = None,
    limit: int | str = DEFAULT_LIMIT,
) -> tuple[list[dict[str, Any]], str | None]:
    """The newest money movements below the cursor ``before`` (None: the feed's head), newest
    first, at most ``limit`` (1 to ``MAX_LIMIT``), and the cursor of the next page (None: the
    feed's beginning was reached). Bad input is ``invalid_limit`` or ``invalid_cursor``."""
    size = page_limit(limit)
    cursor = decode_cursor(before) if before else None
    head = events.last_position()
    dense = head is not None
    if cursor is not None:  # past the head (a forged cursor) is the head
        top: int | None = cursor[0] if head is None else min(cursor[0], head + 1)
        span = WINDOW if dense else cursor[1]
    elif head is not None:
        top, span = head + 1, WINDOW
    else:  # no head (DynamoDB): from just below the projection checkpoint up
        top, span = None, WINDOW
    anchor = top if top is not None else reads.checkpoint(accounts.NAME) + 1
    start = max(0, anchor - 1 - span)
    feed = events.read_all(start, WINDOW)
    last = _position(feed[-1]) if feed else 0
    if top is None:  # the window ends at the feed's end, or at the last event read
        top = last + 1 if len(feed) == WINDOW else max(anchor, last + 1)
    if len(feed) == WINDOW and last < top - 1:
        # the window may hold more than WINDOW events (sparse positions only; a dense window
        # has at most WINDOW positions): they cannot be shown newest first, so nothing is
        # returned, and the next request reads a narrower window
        return [], encode_cursor(top, max(1, (last - start) // 2))
    window = [e for e in feed if e.position is not None and e.position < top]
    if not dense:
        span = _next_span(top - 1 - start, len(window))
    found: list[dict[str, Any]] = []
    for event in reversed(window):
        if (item := _item(event)) is None:
            continue
        if len(found) == size:  # one more than asked for: the next page goes on below
            return found, encode_cursor(found[-1]["position"], span)
        found.append(item)
    return found, encode_cursor(start + 1, span) if start > 0 else None


def _item(event: RecordedEvent) -> dict[str, Any] | None:
    """The feed item of ``event``, None if it moves no money."""
    if not accounts.handles(event):
        return None
    domain_event = event_from_data(event.event_type, dict(event.data), event.schema_version)
    moved = accounts.movement_of(domain_event)
    if moved is None:
        return None
    return {
        "position": event.position,
        "recorded_at": event.metadata.get("recorded_at"),
        "account_id": event.aggregate_id,
        "version": event.version,
        **describe_movement(moved),
        "actor": event.metadata.get("actor"),
    }


def _next_span(width: int, seen: int) -> int:
    """A sparse window's next width: one expected to hold about ``WINDOW / 2`` events at the
    density just seen, at most ``GROWTH`` times as wide."""
    if seen == 0:
        return min(MAX_POSITION, max(1, width) * GROWTH)
    return min(MAX_POSITION, max(1, width) * GROWTH, max(1, width * (WINDOW // 2) // seen))


def _position(event: RecordedEvent) -> int:
    return event.position or 0


def encode_cursor(before: int, span: int) -> str:
    """An opaque cursor: the position the next window ends below, and the window's width."""
    text = json.dumps([before, span], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """The (before, span) a cursor holds, or ``invalid_cursor``."""
    refused = InvalidCursor("before is not a cursor a previous page returned")
    if len(cursor) > _CURSOR_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise refused
    try:
        before, span = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    for value in (before, span):
        if type(value) is not int or not 1 <= value <= MAX_POSITION:
            raise refused
    return before, span
