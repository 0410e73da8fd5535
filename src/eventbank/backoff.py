"""The one backoff rule every retry loop uses: capped exponential with full jitter.

Retrying clients that met the same failure at the same moment would retry together if each
waited the same time; a wait drawn at random from zero to the capped exponential spreads them
out ("full jitter"). Standard library only, so any layer may use it: the service's command
retries, DynamoDB's transient failures and webhook deliveries all wait by it.
"""

from __future__ import annotations

import random

_JITTER = random.Random()  # its own state: the global generator stays untouched


def full_jitter(tries: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after ``tries`` failures (0 for the first retry): drawn uniformly from
    0 to ``min(cap_s, base_s * 2**tries)``."""
    return _JITTER.uniform(0, min(cap_s, base_s * 2 ** min(max(tries, 0), 60)))
