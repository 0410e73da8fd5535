"""A bounded in-process cache of account states, so a command need not re-read what it knows.

An entry is an account's state at a committed version (read from the store, or appended by this
process) or at the version an append this process queued will give it (service.py drops the
entry if that append fails), with the hash at the head of its chain. Another process may have
appended since, so an entry may be stale, and that is safe: a command decided on it names the
cached version and hash as expected and the store refuses the append (``ConcurrencyConflict``)
if the stream has moved on; the service then forgets the entry and reads the stream again. A
refusal decided on a cached state is likewise re-checked against the store before it is
reported (service.py).

Entries only move forward (a racing thread's older read never replaces a newer state) and the
least recently used are dropped beyond ``capacity``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from eventbank.domain.account import Account
from eventbank.domain.errors import InvalidInput


class AccountCache:
    def __init__(self, capacity: int = 10_000):
        if type(capacity) is not int or capacity < 0:
            raise InvalidInput("the account cache capacity must be an integer >= 0 (0: no cache)")
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[Account, str]] = OrderedDict()
        self._lock = threading.Lock()

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
