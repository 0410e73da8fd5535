"""A bounded in-process cache of account states, so a command need not re-read what it knows.

An entry is an account's committed state (read from the store, or written by this process),
with the hash at the head of its chain, and, while an append this process queued is not yet
answered, the state that append will leave (``pending``), on which later commands decide
meanwhile. A failed append takes the pending state with it (``drop_pending``) and the committed
one stays; a written one's state becomes the committed one (``put``). So a failed group of
transfers costs no re-read of its accounts beyond what ``catch_up`` checks.

Another process may have appended since, so an entry may be stale, and that is safe: a command
decided on it names the cached version and hash as expected and the store refuses the append
(``ConcurrencyConflict``) if the stream has moved on; the service then catches the entry up
(``found_stale``), or reads the stream again. A refusal decided on a cached state is likewise
re-checked against the store before it is reported (write_path.py).

Where another process writes the same accounts (``serve --workers 2`` on PostgreSQL) nearly
every entry goes stale, and a command decided on one is refused and decided again. So once an
entry proved stale (``found_stale``), for ``OTHER_WRITERS_WINDOW_S`` entries are checked before
use: ``catch_up`` reads, in one read of the store for all the streams asked, each one's events
after its committed version, and folds on what others appended. Within one command, or one
batch of transfers (``checking_once``), a stream is caught up once, not at each step that looks
at it (one not cached is read whole by the caller right after, so it counts as checked too), and
once more after a refusal within it. A process that writes alone never sees an entry go stale
and never pays that read.

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


State = tuple[Account, str]  # an account's state and the hash at the head of its chain


class AccountCache:
    def __init__(self, capacity: int = 10_000):
        if type(capacity) is not int or capacity < 0:
            raise InvalidInput("the account cache capacity must be an integer >= 0 (0: no cache)")
        self.capacity = capacity
        # account id -> (committed state, pending state); at least one of the two is there
        self._entries: OrderedDict[str, tuple[State | None, State | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._stale_at = -OTHER_WRITERS_WINDOW_S  # monotonic time an entry last proved stale
        self._suspect: set[str] = set()  # proved stale, not caught up since (found_stale)

    def get(self, account_id: str) -> State | None:
        """The cached (state, head hash), pending if there is one, possibly stale; None if
        not cached."""
        with self._lock:
            entry = self._entries.get(account_id)
            if entry is None:
                return None
            self._entries.move_to_end(account_id)
            committed, pending = entry
            return pending or committed

    def put(self, state: Account, head_hash: str, *, pending: bool = False) -> None:
        """Remember ``state`` (with its chain head) unless a newer one is known: as committed
        (read from the store, or written), or as ``pending`` (an append queued, not yet
        answered). A committed state at or past the pending one replaces that too."""
        if not self.capacity:
            return
        with self._lock:
            committed, queued = self._entries.get(state.account_id, (None, None))
            if pending:
                newest = queued or committed
                if newest is None or newest[0].version < state.version:
                    queued = (state, head_hash)
            elif committed is None or committed[0].version < state.version:
                committed = (state, head_hash)
                if queued is not None and queued[0].version <= state.version:
                    queued = None
            self._entries[state.account_id] = (committed, queued)
            self._entries.move_to_end(state.account_id)
            if len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def drop_pending(self, account_ids: Iterable[str]) -> None:
        """An append queued on these accounts failed: forget the states it, and any append
        queued after it, would have left; keep the committed ones."""
        with self._lock:
            for account_id in account_ids:
                entry = self._entries.get(account_id)
                if entry is not None and entry[0] is None:
                    del self._entries[account_id]
                elif entry is not None:
                    self._entries[account_id] = (entry[0], None)

    def forget(self, account_ids: Iterable[str]) -> None:
        with self._lock:
            for account_id in account_ids:
                self._entries.pop(account_id, None)

    def found_stale(self, account_ids: Iterable[str]) -> None:
        """The store refused an append decided on these entries: check entries before use for
        a while (``catch_up``), those checked already in the current ``checking_once`` block
        again (where one proved stale, others may be). Each of these keeps its committed state
        for the next ``catch_up`` to bring forward, which forgets it if the store holds
        nothing after it (the refusal had another cause: the caller then reads it whole)."""
        stale = list(account_ids)
        self._stale_at = time.monotonic()
        self.drop_pending(stale)
        with self._lock:
            self._suspect.update(sid for sid in stale if sid in self._entries)
        scope, checked = _CHECKED.get()
        if scope is self:
            checked.clear()

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
        """While other writers are about, bring the committed states of ``stream_ids`` to the
        store's heads in one read (``read_streams``, of the events after each one's version)
        and fold those on. A committed state is one the store holds, and the store takes an
        append only on its head, so what follows it continues it. A pending state at or below
        the new committed one is dropped (its append cannot be written, or was); an entry with
        no committed state is left as it is; one ``found_stale`` that the store holds nothing
        newer for is forgotten."""
        if not self.others_write():
            return
        scope, checked = _CHECKED.get()
        if scope is not self:
            checked = set()
        asked = [sid for sid in stream_ids if sid not in checked]
        with self._lock:
            entries = {sid: committed for sid in asked
                       if (committed := self._entries.get(sid, (None, None))[0])}  # fmt: skip
        found = store.read_streams(
            {sid: state.version for sid, (state, _) in entries.items()}
        ) if entries else {}  # fmt: skip
        checked.update(asked)  # those not cached are read whole by the caller now
        with self._lock:
            unexplained = [sid for sid in entries if sid in self._suspect and not found.get(sid)]
            self._suspect.difference_update(entries)
        self.forget(unexplained)
        for sid, events in found.items():
            if events and (folded := domain.replay(map(decoded, events), entries[sid][0])):
                self.put(folded, events[-1].hash)


def decoded(event: RecordedEvent) -> AccountEvent:
    """The domain's event for a stored one of an account stream."""
    return event_from_data(event.event_type, dict(event.data), event.schema_version)
