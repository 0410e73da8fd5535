"""The garbage collector's settings for a server process, once it has started.

Why: with CPython's defaults a collection of the youngest objects runs every 700 container
objects allocated and not yet freed, and every tenth of those collects the next generation,
so a busy server collects about a hundred times a second; every so often the oldest
generation is collected too, which walks every object the process holds: its modules, the
app, the ledger's caches. Served at 16 connections on SQLite, that was 0.9-1.1 s of
collection in a run of about 10 s (a tenth of the server's CPU) and pauses of up to 63 ms,
which every request in flight waited out: they were the p99. So a server process, once
started:

- freezes what it holds then (``gc.freeze``): objects that live as long as the process are
  never walked again;
- collects the youngest objects every ``YOUNG_THRESHOLD`` container objects instead of 700.
  Garbage without reference cycles is freed at once by reference counting, whatever this is;
  only cycles wait for a collection, and they still count toward the threshold, so at most
  about that many wait at a time.

Measured with ``eventbank serve`` (docs/performance.md, "The garbage collector"): p99 65-70
down to 23 ms, 5-10 % more transfers/s, the same resident memory after the run.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default: 700


def tune_gc_for_serving() -> None:
    """Freeze what the process holds now and collect young objects less often; call once
    the server's app and ledger are built."""
    gc.collect()  # what startup left as cyclic garbage is freed, not frozen with the rest
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
