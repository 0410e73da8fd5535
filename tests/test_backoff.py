"""The retry wait every loop shares (``eventbank.backoff``): capped exponential, full jitter."""

from __future__ import annotations

import pytest

from eventbank.backoff import full_jitter


@pytest.mark.parametrize("tries", [0, 1, 3, 7, 12, 60, 10_000])
def test_a_wait_is_drawn_from_zero_to_the_capped_exponential(tries):
    base_s, cap_s = 0.01, 2.0
    bound = min(cap_s, base_s * 2 ** min(tries, 60))
    waits = [full_jitter(tries, base_s, cap_s) for _ in range(400)]
    assert all(0 <= w <= bound for w in waits)
    # spread over the whole range, not a fixed wait: both halves are drawn
    assert min(waits) < bound / 2 < max(waits)


def test_the_wait_grows_with_the_tries_until_the_cap():
    top = [max(full_jitter(tries, 0.001, 0.1) for _ in range(400)) for tries in range(10)]
    assert top[0] <= 0.001 < top[3] <= 0.008 < top[6]
    assert all(t <= 0.1 for t in top) and top[9] > 0.05
