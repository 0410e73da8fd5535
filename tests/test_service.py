"""The application service on every engine: the specification's scenarios and idempotency."""

from __future__ import annotations

import threading

import pytest

from eventbank.application.service import LedgerService
from eventbank.application.write_path import IdempotencyKeyReused, RetriesExhausted
from eventbank.domain import account as domain
from eventbank.domain.errors import (
    AccountIsClosed,
    AccountNotFound,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    SelfTransfer,
)
from eventbank.ports.event_store import ConcurrencyConflict


def open_pair(service: LedgerService, balance: str = "100.00") -> None:
    service.open_account("acc-1", owner="Ann", account_type="CHECKING", initial_deposit=balance)
    service.open_account("acc-2", owner="Bob", account_type="SAVINGS")


def balances(service: LedgerService, *ids: str) -> list[str]:
    return [service.get_account(i).describe()["balance"] for i in ids]


def test_a_transfer_writes_both_events_with_one_transfer_id(service, store):
    open_pair(service)
    receipt = service.transfer("acc-1", "acc-2", "30.00")
    out, into = store.read_stream("acc-1")[-1], store.read_stream("acc-2")[-1]
    assert (out.event_type, into.event_type) == ("TransferredOut", "TransferredIn")
    transfer_id = receipt.outcome["transfer_id"]
    assert out.data["transfer_id"] == into.data["transfer_id"] == transfer_id
    assert out.metadata["transfer_id"] == into.metadata["transfer_id"] == transfer_id
    assert balances(service, "acc-1", "acc-2") == ["70.00", "30.00"]


class InjectedFailure(Exception):
    pass


class FailingAppends:
    """Wraps a real store; its next ``fail`` appends raise after the domain has decided."""

    def __init__(self, store, fail: int = 1):
        self._store, self.fail = store, fail

    def __getattr__(self, name):
        return getattr(self._store, name)

    def append(self, events, expected_versions, command=None):
        if self.fail:
            self.fail -= 1
            raise InjectedFailure("power cut between decide and append")
        return self._store.append(events, expected_versions, command)


def test_a_failure_between_decide_and_append_moves_nothing_and_a_retry_moves_once(store):
    open_pair(LedgerService(store))
    flaky = LedgerService(FailingAppends(store))
    with pytest.raises(InjectedFailure):
        flaky.transfer("acc-1", "acc-2", "40.00", command_id="t-1")
    assert balances(flaky, "acc-1", "acc-2") == ["100.00", "0.00"]
    assert [len(store.read_stream(a)) for a in ("acc-1", "acc-2")] == [2, 1]
    flaky.transfer("acc-1", "acc-2", "40.00", command_id="t-1")
    flaky.transfer("acc-1", "acc-2", "40.00", command_id="t-1")
    assert balances(flaky, "acc-1", "acc-2") == ["60.00", "40.00"]


def test_a_failure_inside_the_append_writes_neither_half(store):
    """The second event cannot be encoded, so the engine fails part-way through the write."""
    from tests.factories import new_event

    open_pair(LedgerService(store))
    good = new_event("acc-1", 3, amount_minor=100)
    bad = new_event("acc-2", 2, amount_minor=object())
    with pytest.raises(Exception):  # noqa: B017 - any failure will do; what matters is below
        store.append([good, bad], {"acc-1": 2, "acc-2": 1})
    assert [len(store.read_stream(a)) for a in ("acc-1", "acc-2")] == [2, 1]


def test_concurrent_withdrawals_of_80_from_100_never_overdraw(make_store):
    for round_ in range(10):
        account = f"race-{round_}"
        LedgerService(make_store()).open_account(
            account, owner="Ann", account_type="CHECKING", initial_deposit="100"
        )
        services = [LedgerService(make_store()) for _ in range(2)]
        start, outcomes = threading.Barrier(2), []

        def withdraw(service, start=start, outcomes=outcomes, account=account):
            start.wait()
            try:
                service.withdraw(account, "80")
                outcomes.append("ok")
            except (InsufficientFunds, RetriesExhausted) as exc:
                outcomes.append(type(exc).__name__)

        threads = [threading.Thread(target=withdraw, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("ok") == 1, outcomes
        assert balances(services[0], account) == ["20.00"]


def test_the_same_command_id_sequentially_moves_money_once(service, store):
    open_pair(service)
    first = service.withdraw("acc-1", "25.00", command_id="key-1")
    again = service.withdraw("acc-1", "25.00", command_id="key-1")
    assert not first.replayed and again.replayed
    assert again.outcome == first.outcome
    assert balances(service, "acc-1") == ["75.00"]
    assert len(store.read_stream("acc-1")) == 3


def test_the_same_command_id_concurrently_moves_money_once(make_store):
    open_pair(LedgerService(make_store()))
    services = [LedgerService(make_store()) for _ in range(6)]
    start, receipts = threading.Barrier(len(services)), []

    def send(service):
        start.wait()
        receipts.append(service.transfer("acc-1", "acc-2", "10.00", command_id="pay-7"))

    threads = [threading.Thread(target=send, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(receipts) == len(services)
    assert sum(not r.replayed for r in receipts) == 1
    assert len({r.outcome["transfer_id"] for r in receipts}) == 1
    assert balances(services[0], "acc-1", "acc-2") == ["90.00", "10.00"]


def test_a_reused_key_with_other_parameters_is_refused(service):
    open_pair(service)
    service.deposit("acc-1", "5.00", command_id="key-2")
    with pytest.raises(IdempotencyKeyReused):
        service.deposit("acc-1", "6.00", command_id="key-2")
    with pytest.raises(IdempotencyKeyReused):
        service.withdraw("acc-1", "5.00", command_id="key-2")
    assert balances(service, "acc-1") == ["105.00"]


def test_retries_are_bounded_and_fail_clearly(store):
    class AlwaysStale(FailingAppends):
        def append(self, events, expected_versions, command=None):
            raise ConcurrencyConflict(list(expected_versions))

    open_pair(LedgerService(store))
    stubborn = LedgerService(AlwaysStale(store), max_attempts=3, backoff_base_s=0)
    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts"):
        stubborn.withdraw("acc-1", "1.00")
    assert balances(stubborn, "acc-1") == ["100.00"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s: s.withdraw("acc-1", "100.01"), InsufficientFunds),
        (lambda s: s.withdraw("acc-1", "1.001"), InvalidAmount),
        (lambda s: s.withdraw("acc-1", 1.0), InvalidAmount),
        (lambda s: s.deposit("ghost", "1"), AccountNotFound),
        (lambda s: s.transfer("acc-1", "acc-1", "1"), SelfTransfer),
        (lambda s: s.transfer("acc-1", "eur-1", "1"), CurrencyMismatch),
        (lambda s: s.transfer("acc-1", "gone", "1"), AccountIsClosed),
        (lambda s: s.open_account("acc-2", owner="X", account_type="LOAN"), InvalidInput),
        (lambda s: s.deposit("acc-1", "1", command_id="has space"), InvalidInput),
    ],
)
def test_refusals_change_nothing(service, store, call, error):
    open_pair(service)
    service.open_account("eur-1", owner="Eve", account_type="CHECKING", currency="EUR")
    service.open_account("gone", owner="Gus", account_type="CHECKING")
    service.close_account("gone")
    before = [e.event_id for e in store.read_all(limit=1000)]
    with pytest.raises(error):
        call(service)
    assert [e.event_id for e in store.read_all(limit=1000)] == before


def test_closing_needs_a_zero_balance_and_a_closed_account_stays_closed(service):
    open_pair(service)
    service.transfer("acc-1", "acc-2", "100")
    service.close_account("acc-1")
    assert service.get_account("acc-1").describe()["status"] == "CLOSED"
    with pytest.raises(AccountIsClosed):
        service.close_account("acc-1")


def test_old_events_are_upcast_on_read_and_never_rewritten(service, store):
    from eventbank.ports.event_store import NewEvent

    service.open_account("old", owner="Ann", account_type="CHECKING")
    v1 = {"account_id": "old", "amount_minor": 700, "currency": "USD"}  # before `channel` existed
    store.append([NewEvent("evt-v1", "old", "Account", 2, "FundsDeposited", 1, v1)], {"old": 1})
    assert service.get_account("old").balance_minor == 700
    service.deposit("old", "1.00")
    stored = store.read_stream("old")
    assert (stored[1].schema_version, dict(stored[1].data)) == (1, v1)
    assert (stored[2].schema_version, stored[2].data["channel"]) == (3, "unknown")
    assert stored[2].data["metadata"] == {}


class CountingReads:
    """Wraps a real store and records which version each stream read started after."""

    def __init__(self, store):
        self._store, self.reads_after = store, []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_stream(self, aggregate_id, after_version=0):
        self.reads_after.append(after_version)
        return self._store.read_stream(aggregate_id, after_version)

    def read_streams(self, after_versions):
        self.reads_after.extend(after_versions.values())
        return self._store.read_streams(after_versions)


def test_snapshots_are_taken_every_n_events_and_loading_starts_from_them(store):
    writer = LedgerService(store, snapshot_every=5)
    writer.open_account("snap", owner="Ann", account_type="CHECKING", initial_deposit="1")
    for _ in range(10):
        writer.deposit("snap", "1")  # versions 3..12: crosses 5 and 10
    assert store.load_snapshot("snap").version == 10
    counting = CountingReads(store)
    account = LedgerService(counting).get_account("snap")
    assert (account.balance_minor, account.version) == (1100, 12)
    assert counting.reads_after == [10]  # only the two events after the snapshot were read


def test_a_snapshot_of_another_state_schema_is_ignored_not_misread(store):
    from eventbank.ports.event_store import Snapshot

    service = LedgerService(store)
    service.open_account("snap", owner="Ann", account_type="CHECKING", initial_deposit="5")
    current = domain.STATE_SCHEMA_VERSION
    for schema in (current - 1, current + 1):  # older, and newer than this code
        bogus = {"balance_minor": 999_999, "version": 2}
        store.save_snapshot(Snapshot("snap", "Account", 2 + schema, schema, bogus))
        counting = CountingReads(store)
        assert LedgerService(counting).get_account("snap").balance_minor == 500
        assert counting.reads_after == [0]
