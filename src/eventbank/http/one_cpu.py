"""Keeping a server process's threads on one CPU.

Why: a Python process runs one thread at a time (the interpreter lock), and ``eventbank serve``
hands the lock many times per request between its event loop, the thread deciding commands and
the threads writing them. When the next holder sleeps on another CPU, every hand-off waits for
a cross-CPU wake-up, and the process pays for it in CPU and in transfers/s; on one CPU it is a
switch between threads of one core. Measured with ``eventbank serve`` on the 2-CPU benchmark
machine (docs/performance.md, "One CPU per server process"): on PostgreSQL 20-38 % more
transfers/s at 15-30 % less CPU per transfer; on SQLite from no change to 15 % more.

What it costs: the kernel no longer moves the process to an idle CPU when another program
keeps its CPU busy. ``eventbank serve --any-cpu`` leaves the threads free.
"""

from __future__ import annotations

import os
from pathlib import Path


def stay_on_one_cpu() -> int | None:
    """Restrict every thread of this process, and the threads started after, to the CPU the
    process runs on now (so that several servers on one machine spread as the kernel placed
    them). Returns that CPU; None where the process may use only one anyway, or where the
    system has no CPU affinity to set (not Linux)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    if len(allowed) < 2:
        return None
    cpu = _current_cpu()
    if cpu not in allowed:
        cpu = max(allowed)
    threads = Path("/proc/self/task")
    for tid in [int(task.name) for task in threads.iterdir()] if threads.is_dir() else [0]:
        try:
            os.sched_setaffinity(tid, {cpu})  # a thread id: that thread only
        except ProcessLookupError:  # it ended meanwhile
            continue
    return cpu


def _current_cpu() -> int | None:
    """The CPU this process last ran on (field 39 of /proc/self/stat), None if unknown."""
    try:
        stat = Path("/proc/self/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[36])
    except (OSError, IndexError, ValueError):
        return None
