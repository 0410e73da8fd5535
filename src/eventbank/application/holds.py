"""Open pending transfers: listing them, and the background worker that records the expiry of
those past their timeout.

``open_holds`` lists an account's open pending transfers (both sides) from its state, or, for
the whole ledger, walks the accounts read model for accounts with pending debits and lists
theirs (each transfer once, from its debit side) up to a limit.

A hold past its timeout already reserves nothing (the rules are given the time), and the next
command on either account records its expiry first (``LedgerService``); this worker records the
expiries of accounts nobody touches. It walks the accounts read model in id order, one page of
at most ``page`` rows per ``every_s`` seconds, and for each account with pending debits loads
its state (the source of truth) and expires what is overdue. A full walk of N accounts takes
N / page ticks; at the end it starts over. Racing another worker or a command is safe: an
expiry's key is its transfer's, so it is written once.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventbank.application.service import LedgerService
from eventbank.domain.account import DEBIT, Account
from eventbank.domain.money import format_minor
from eventbank.ports.read_store import MAX_ACCOUNTS_PAGE, ReadStore

log = logging.getLogger(__name__)

EVERY_S = 1.0
PAGE = 500
MAX_LISTED = 1_000  # pending transfers one listing returns at most


def open_holds(
    service: LedgerService, reads: ReadStore, account_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Open pending transfers, oldest id first per account: ``account_id``'s (either side), or
    the ledger's, at most ``limit`` (1 to MAX_LISTED). ``overdue``: past its timeout, its
    expiry not recorded yet (it holds nothing more)."""
    if type(limit) is not int or not 1 <= limit <= MAX_LISTED:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LISTED:,}")
    if account_id is not None:
        return _listed(service.get_account(account_id), service.clock_text(), sides=None)[:limit]
    listed: list[dict[str, Any]] = []
    after = ""
    while len(listed) < limit and (rows := reads.accounts_page(after, MAX_ACCOUNTS_PAGE)):
        for row in rows:
            if row.pending_debits_minor:
                account = service.get_account(row.account_id)
                listed += _listed(account, service.clock_text(), sides=DEBIT)
        after = rows[-1].account_id
    return listed[:limit]


def _listed(account: Account, now: str, sides: str | None) -> list[dict[str, Any]]:
    out = []
    for transfer_id, hold in sorted(account.holds.items()):
        if sides is not None and hold.side != sides:
            continue
        mine, theirs = account.account_id, hold.counterparty_id
        debit, credit = (mine, theirs) if hold.side == DEBIT else (theirs, mine)
        out.append({"transfer_id": transfer_id, "from_account_id": debit,
                    "to_account_id": credit,
                    "amount": format_minor(hold.amount_minor, account.currency),
                    "currency": account.currency, "expires_at": hold.expires_at or None,
                    "overdue": hold.overdue(now)})  # fmt: skip
    return out


class ExpirySweeper:
    def __init__(
        self,
        service: LedgerService,
        reads: ReadStore,
        *,
        every_s: float = EVERY_S,
        page: int = PAGE,
    ):
        if not every_s > 0 or not 1 <= page <= MAX_ACCOUNTS_PAGE:
            raise ValueError(f"every_s > 0 and page from 1 to {MAX_ACCOUNTS_PAGE} are needed")
        self.service, self.reads, self.every_s, self.page = service, reads, every_s, page
        self._after = ""  # the cursor: the last account id of the page swept before
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_page(self) -> int:
        """Sweep the next page of accounts; the number of pending transfers expired."""
        rows = self.reads.accounts_page(self._after, self.page)
        if not rows and self._after:  # the last page was full and the walk is over: start over
            rows = self.reads.accounts_page("", self.page)
        self._after = rows[-1].account_id if len(rows) == self.page else ""
        held = [row.account_id for row in rows if row.pending_debits_minor]
        return self.service.expire_overdue(held) if held else 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="expiry", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                self.sweep_page()
            except Exception:
                log.exception("expiring pending transfers failed; trying again later")
