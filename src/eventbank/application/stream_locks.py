"""Per-stream turn-taking inside one process, so that its own commands never race each other.

Why: two commands of this process on one account would both decide on the same version, and
the store would refuse the second (``ConcurrencyConflict``), which then backs off, re-reads and
decides again. On a hot account most attempts were wasted that way. Holding a lock per stream
from deciding until the append has answered (or, with a group-committing engine, until it is
queued: write_path.py) makes the second command wait for the first and decide on its result
instead: no conflict, no backoff, no re-read.

Correctness never rests on these locks: another process may still append to the stream, and
the store's expected-version check still refuses a stale append. Locks are taken in sorted
order (no deadlock between multi-stream commands) and exist only while someone holds or waits
for them (memory bounded by the commands in flight).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0  # holders and waiters


class StreamLocks:
    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    @contextmanager
    def hold(self, stream_ids: Iterable[str]) -> Iterator[None]:
        """Exclusive use of every stream in ``stream_ids`` (in this process) while inside."""
        streams = sorted(set(stream_ids))
        with self._mutex:
            entries = [self._entries.setdefault(stream, _Entry()) for stream in streams]
            for entry in entries:
                entry.users += 1
        taken: list[_Entry] = []
        try:
            for entry in entries:
                entry.lock.acquire()
                taken.append(entry)
            yield
        finally:
            for entry in reversed(taken):
                entry.lock.release()
            with self._mutex:
                for stream, entry in zip(streams, entries, strict=True):
                    entry.users -= 1
                    if not entry.users:
                        del self._entries[stream]

    def __len__(self) -> int:
        """Streams held or waited for right now."""
        with self._mutex:
            return len(self._entries)
