"""Deadlines of pending transfers as text that orders as time does.

A hold's ``expires_at`` and the ``now`` the rules are given are UTC instants written one way,
``2026-12-05T09:30:00.000000Z`` (fixed width), so comparing the texts compares the instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from eventbank.domain.errors import InvalidInput

MAX_TIMEOUT_S = 30 * 24 * 3600  # a pending transfer's timeout: at most 30 days


def utc_text(moment: datetime) -> str:
    """``moment`` (timezone-aware) as fixed-width RFC 3339 UTC text. (``isoformat``, not
    ``strftime``: it pads every year to four digits, and it does not import the ``time``
    module on each call, which every command pays several times over.)"""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def check_timeout(timeout_s: object) -> int:
    """A timeout in whole seconds, 1 to 30 days."""
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int):
        raise InvalidInput(f"timeout must be a whole number of seconds, not {timeout_s!r}")
    if not 1 <= timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(
            f"timeout must be from 1 to {MAX_TIMEOUT_S:,} seconds (30 days), not {timeout_s:,}"
        )
    return timeout_s


def deadline(now: datetime, timeout_s: int | None) -> str:
    """When a pending transfer made at ``now`` expires ("" without a timeout)."""
    return "" if timeout_s is None else utc_text(now + timedelta(seconds=timeout_s))
