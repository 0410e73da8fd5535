"""The text a deadline and a read model's time are written in (domain/deadlines.py): fixed
width, ordering as the instants do, and read back to the same instant, whatever the offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from eventbank.domain.deadlines import utc_text

offsets = st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=offsets
)


@given(instants, instants)
def test_utc_text_is_fixed_width_orders_as_time_and_reads_back(a: datetime, b: datetime) -> None:
    ta, tb = utc_text(a), utc_text(b)
    assert len(ta) == len(tb) == len("2026-12-05T09:30:00.000000Z")
    assert ta.endswith("Z") and (ta < tb) == (a < b) and (ta == tb) == (a == b)
    assert datetime.fromisoformat(ta.replace("Z", "+00:00")) == a.astimezone(UTC)
