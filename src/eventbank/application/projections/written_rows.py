"""The balance rows inline projection wrote last, so the next batch need not read them back.

Why: inline projection folds each group-commit batch on the rows of its accounts, and reading
them is a round trip of its own before the read store's transaction (on PostgreSQL about a
tenth of a projected batch's time). The rows this process wrote are the rows it would read,
unless something else wrote since.

Why that is safe: a remembered row is an exact fold of its stream up to its version, because
it was written under the read store's version guard, and it is used only for an event of the
very next version. If another writer (another process, the runner) moved the row on, the
remembered one is behind the event, and the row is read again. If the row went back (a reset
of the read model), the read store refuses the change as a gap, the batch is rolled back, and
everything remembered is forgotten. Only inline projection uses them: the runner re-delivers
old events, which a remembered row ahead of a reset read model would make it skip.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence

from eventbank.domain.errors import InvalidInput
from eventbank.ports.read_store import BalanceRow

DEFAULT_CAPACITY = 10_000


class WrittenRows:
    """Up to ``capacity`` rows by account id, the least recently written dropped first."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if type(capacity) is not int or capacity < 0:
            raise InvalidInput("the written-rows capacity must be an integer >= 0 (0: none)")
        self.capacity = capacity
        self._rows: OrderedDict[str, BalanceRow] = OrderedDict()
        self._lock = threading.Lock()

    def rows(
        self,
        next_versions: Mapping[str, int],
        read: Callable[[Sequence[str]], dict[str, BalanceRow]],
    ) -> dict[str, BalanceRow]:
        """The rows of the accounts in ``next_versions`` (each with the version of its first
        event to fold): those remembered just before that version, and the others from
        ``read``, together. A remembered row further behind is read again, not folded on: where
        another process writes the same accounts most rows are, and one read for all of them
        costs less than reading each one's missing events."""
        with self._lock:
            known = {aid: row for aid, version in next_versions.items()
                     if (row := self._rows.get(aid)) and row.version == version - 1}  # fmt: skip
        missing = [aid for aid in next_versions if aid not in known]
        return known | read(missing) if missing else known

    def remember(self, rows: Iterable[BalanceRow]) -> None:
        """Keep ``rows`` (just written); an older row never replaces a newer one."""
        with self._lock:
            for row in rows:
                kept = self._rows.get(row.account_id)
                if kept is None or kept.version < row.version:
                    self._rows[row.account_id] = row
                self._rows.move_to_end(row.account_id)
            while len(self._rows) > self.capacity:
                self._rows.popitem(last=False)

    def forget(self) -> None:
        with self._lock:
            self._rows.clear()
