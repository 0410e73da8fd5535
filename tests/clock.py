"""A clock a test moves by hand, so that each command has the time the test gives it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def tick(self) -> None:
        """One second on: the next command has a time of its own."""
        self.advance(1)
