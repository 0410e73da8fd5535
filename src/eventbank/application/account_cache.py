"""A bounded in-process cache of account states, so a command need not re-read what it knows.

An entry is an account's state at a committed version (read from the store, or appended by this
process) or at the version an append this process queued will give it (write_path.py drops the
entry if that append fails), with the hash at the head of its chain. Another process may have
appended since, so an entry may be stale, and that is safe: a command decided on it names the
cached version and hash as expected and the store refuses the append (``ConcurrencyConflict``)
if the stream has moved on; the service then forgets the entry and reads the stream again. A
refusal decided on a cached state is likewise re-checked against the store before it is
reported (write_path.py).

Where another process writes the same accounts (``serve --workers 2`` on PostgreSQL) nearly
every entry goes stale, and a command decided on one is refused and decided again. So once an
entry proved stale (``found_stale``), for ``OTHER_WRITERS_WINDOW_S`` entries are checked before
use: ``catch_up`` reads, in one read of the store for all the streams asked, each one's events
from the cached version on, and folds on what others appended. Within one command, or one
batch of transfers (``checking_once``), a stream is caught up once, not at each step that looks
at it. A process that writes alone never sees an entry go stale and never pays that read.

Entries only move forward (a racing thread's older read never replaces a newer state) and the
least recently used are dropped beyond ``capacity``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from eventbank.domain import account as domain
from eventbank.domain.account import Account
from eventbank.domain.errors import InvalidInput
from eventbank.domain.events import AccountEvent, event_from_data
from eventbank.ports.event_store import EventStore, RecordedEvent

# How long after an entry proved stale entries are checked against the store before use.
OTHER_WRITERS_WINDOW_S = 10.0
# The streams caught up so far in the current ``checking_once`` block, and whose cache it is.
_CHECKED: ContextVar[tuple[object, set[str]]] = ContextVar("checked", default=(None, set()))


class AccountCache:
    def __init__(self, capacity: int = 10_000):
        if type(capacity) is not int or capacity < 0:
            raise InvalidInput("the account cache capacity must be an integer >= 0 (0: no cache)")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[Account, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._stale_at = -OTHER_WRITERS_WINDOW_S  # monotonic time an entry last proved stale

    def get(self, account_id: str) -> tuple[Account, str] | None:
        """The cached (state, head hash), possibly stale; None if not cached."""
        with self._lock:
            entry = self._entries.get(account_id)
            if entry is not None:
                self._entries.move_to_end(account_id)
            return entry

    def put(self, state: Account, head_hash: str) -> None:
        """Remember ``state`` (with its chain head) unless a newer one is known."""
        if not self.capacity:
            return
        with self._lock:
            known = self._entries.get(state.account_id)
            if known is None or known[0].version < state.version:
                self._entries[state.account_id] = (state, head_hash)
            self._entries.move_to_end(state.account_id)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def forget(self, account_ids: Iterable[str]) -> None:
        with self._lock:
            for account_id in account_ids:
                self._entries.pop(account_id, None)

    def found_stale(self, account_ids: Iterable[str]) -> None:
        """Forget entries another writer moved past (the store refused an append decided on
        them), and check entries before use for a while (``catch_up``)."""
        self._stale_at = time.monotonic()
        self.forget(account_ids)

    def others_write(self) -> bool:
        """Whether an entry proved stale lately, so entries are worth checking before use."""
        return time.monotonic() - self._stale_at < OTHER_WRITERS_WINDOW_S

    @contextmanager
    def checking_once(self) -> Iterator[None]:
        """Within this block (one command, one batch: this thread and the threads it hands
        the context to), ``catch_up`` reads each stream at most once."""
        token = _CHECKED.set((self, set()))
        try:
            yield
        finally:
            _CHECKED.reset(token)

    def catch_up(self, store: EventStore, stream_ids: Iterable[str]) -> None:
        """While other writers are about, bring the entries of ``stream_ids`` to the store's
        heads in one read (``read_streams``, from each entry's own version on): an entry whose
        last event is the store's gets the events after it folded on; one at a version not in
        the store yet (this process's append, still queued) stays as it is; one whose version
        holds another event is forgotten, for the caller to load."""
        if not self.others_write():
            return
        scope, checked = _CHECKED.get()
        if scope is not self:
            checked = set()
        entries = {sid: entry for sid in stream_ids
                   if sid not in checked and (entry := self.get(sid))}  # fmt: skip
        if not entries:
            return
        found = store.read_streams({sid: state.version - 1 for sid, (state, _) in entries.items()})
        checked.update(entries)
        for sid, (state, head) in entries.items():
            events = found.get(sid)
            if not events:
                continue
            if events[0].version != state.version or events[0].hash != head:
                self.forget([sid])
                continue
            for event in events[1:]:
                state = domain.apply(state, decoded(event))
            self.put(state, events[-1].hash)


def decoded(event: RecordedEvent) -> AccountEvent:
    """The domain's event for a stored one of an account stream."""
    return event_from_data(event.event_type, dict(event.data), event.schema_version)
