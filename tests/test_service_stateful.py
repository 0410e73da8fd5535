"""A hypothesis state machine drives the service with random commands and bursts of concurrent
transfers; after every step the books must balance: the sum of all balances equals external
deposits minus external withdrawals, and no balance is negative."""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventbank.application.service import LedgerService
from eventbank.domain.errors import InsufficientFunds
from eventbank.domain.money import format_minor
from eventbank.engines.sqlite.event_store import SqliteEventStore

amounts = st.integers(min_value=1, max_value=20_000)


class Ledger(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="eventbank-stateful-"))
        self.store = SqliteEventStore(self.folder / "events.db")
        self.service = LedgerService(self.store, backoff_base_s=0.0005)
        self.accounts: list[str] = []
        self.external_minor = 0  # deposits minus withdrawals that left or entered the bank

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @rule(initial=st.integers(min_value=0, max_value=50_000))
    def open_account(self, initial: int) -> None:
        account = f"acc-{len(self.accounts)}"
        deposit = format_minor(initial, "USD") if initial else None
        self.service.open_account(account, owner="Owner", account_type="CHECKING",
                                  initial_deposit=deposit)  # fmt: skip
        self.accounts.append(account)
        self.external_minor += initial

    @precondition(lambda self: self.accounts)
    @rule(data=st.data(), minor=amounts)
    def deposit(self, data, minor: int) -> None:
        self.service.deposit(data.draw(st.sampled_from(self.accounts)), format_minor(minor, "USD"))
        self.external_minor += minor

    @precondition(lambda self: self.accounts)
    @rule(data=st.data(), minor=amounts)
    def withdraw(self, data, minor: int) -> None:
        try:
            self.service.withdraw(data.draw(st.sampled_from(self.accounts)),
                                  format_minor(minor, "USD"))  # fmt: skip
            self.external_minor -= minor
        except InsufficientFunds:
            pass

    @precondition(lambda self: len(self.accounts) >= 2)
    @rule(data=st.data())
    def concurrent_transfers(self, data) -> None:
        pairs = st.lists(st.sampled_from(self.accounts), min_size=2, max_size=2, unique=True)
        burst = data.draw(st.lists(st.tuples(pairs, amounts), min_size=2, max_size=6))

        unexpected: list[Exception] = []

        def send(source: str, target: str, minor: int) -> None:
            try:
                self.service.transfer(source, target, format_minor(minor, "USD"))
            except InsufficientFunds:
                pass
            except Exception as exc:  # noqa: BLE001 - surfaced by the assert below
                unexpected.append(exc)

        threads = [threading.Thread(target=send, args=(a, b, m)) for (a, b), m in burst]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not unexpected, unexpected

    @invariant()
    def books_balance(self) -> None:
        balances = [self.service.get_account(a).balance_minor for a in self.accounts]
        assert all(b >= 0 for b in balances)
        assert sum(balances) == self.external_minor


Ledger.TestCase.settings = settings(max_examples=20, stateful_step_count=12, deadline=None)
TestLedgerStateMachine = Ledger.TestCase
