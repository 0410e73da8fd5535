"""Pending transfers on every engine: a hold reserves money on the debit account and announces
it on the credit account; a post moves all or part of it, a void or an expiry releases it; each
closes it exactly once, and the read models, snapshots and the audit agree."""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest
from rich.console import Console

from eventbank.application.auditor import Auditor
from eventbank.application.batch import BatchItem
from eventbank.application.holds import ExpirySweeper, open_holds
from eventbank.application.ids import new_id
from eventbank.application.queries import transfer_accounts
from eventbank.application.service import LedgerService
from eventbank.cli.demo import run_demo
from eventbank.domain.account import describe_account
from eventbank.domain.errors import (
    AccountIsFrozen,
    BalanceNotZero,
    EventbankError,
    InsufficientFunds,
    InvalidAmount,
    InvalidInput,
    TransferExpired,
    TransferNotFound,
    TransferNotPending,
)
from eventbank.domain.events import ACCOUNT, HoldReleased
from eventbank.engines.dynamodb import read_store as dynamo_reads
from eventbank.engines.postgres import read_store as postgres_reads
from eventbank.engines.sqlite import read_store as sqlite_reads
from eventbank.engines.urls import open_read_store, sqlite_path
from eventbank.ports.event_store import NewEvent, chained
from eventbank.ports.read_store import BalanceRow
from eventbank.wiring import Ledger, open_ledger
from tests.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(store_url: str, clock: Clock) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    ledger.service.clock = clock
    yield ledger
    ledger.close()


def shown(service: LedgerService, account_id: str) -> tuple[str, str, str, str]:
    """(balance, pending debits, pending credits, available) as the account shows them."""
    a = service.get_account(account_id).describe()
    return a["balance"], a["pending_debits"], a["pending_credits"], a["available"]


def open_pair(service: LedgerService, deposit: str = "100.00") -> None:
    service.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit=deposit)
    service.open_account("bob", owner="Bob", account_type="CHECKING")


def event_types(ledger: Ledger, account_id: str) -> list[str]:
    return [e.event_type for e in ledger.events.read_stream(account_id)]


def test_a_hold_reserves_and_a_partial_post_moves_part_and_releases_the_rest(ledger):
    service = ledger.service
    open_pair(service)
    held = service.transfer("ann", "bob", "60.00", pending=True, timeout_s=3600).outcome
    assert (held["status"], held["amount"]) == ("pending", "60.00")
    assert held["expires_at"] == "2026-12-05T10:00:00.000000Z"
    assert shown(service, "ann") == ("100.00", "60.00", "0.00", "40.00")
    assert shown(service, "bob") == ("0.00", "0.00", "60.00", "0.00")
    with pytest.raises(InsufficientFunds, match=r"available 40.00 USD \(balance 100.00 USD, "
                       r"held by pending transfers 60.00 USD\), requested 40.01 USD"):  # fmt: skip
        service.withdraw("ann", "40.01")
    tid = held["transfer_id"]
    assert ledger.queries.transfer(tid)["status"] == "pending"

    posted = service.post_transfer(tid, "45.00").outcome
    assert (posted["status"], posted["amount"], posted["pending_amount"]) == (
        "posted", "45.00", "60.00")  # fmt: skip
    assert shown(service, "ann") == ("55.00", "0.00", "0.00", "55.00")
    assert shown(service, "bob") == ("45.00", "0.00", "0.00", "45.00")
    assert event_types(ledger, "ann")[-3:] == ["HoldPlaced", "HoldReleased", "TransferredOut"]
    assert event_types(ledger, "bob")[-3:] == ["HoldPlaced", "HoldReleased", "TransferredIn"]
    view = ledger.queries.transfer(tid)
    assert (view["status"], view["amount"], view["pending_amount"]) == ("posted", "45.00", "60.00")
    assert (view["from_account_id"], view["to_account_id"]) == ("ann", "bob")
    row = ledger.queries.balance("ann", 0)
    assert (row["balance"], row["pending_debits"], row["available"]) == ("55.00", "0.00", "55.00")

    with pytest.raises(TransferNotPending):
        service.post_transfer(tid)
    with pytest.raises(TransferNotPending):
        service.void_transfer(tid)


def test_a_pending_transfer_not_yet_projected_is_found_in_the_feed(store_url):
    """A hold whose answer was lost in a crash is replayed from its command record, and its
    read-model rows may come later: posting it must not wait for them."""
    ledger = open_ledger(store_url, inline=False)  # nothing projected until the runner runs
    try:
        open_pair(ledger.service)
        tid = ledger.service.transfer("ann", "bob", "10.00", pending=True).outcome["transfer_id"]
        assert ledger.reads.transfer(tid) == []
        assert ledger.service.post_transfer(tid).outcome["status"] == "posted"
        with pytest.raises(TransferNotFound):
            ledger.service.void_transfer("0000-no-such-transfer")
    finally:
        ledger.close()


class _ProjectedRightAfterItsRowsAreRead:
    """The ledger's read store, but the projection catches up just after a look-up has read a
    transfer's rows and before it reads the checkpoint: what a runner (or another process's
    inline projection) committing in between does."""

    def __init__(self, ledger: Ledger):
        self._ledger = ledger

    def transfer(self, transfer_id: str):
        rows = self._ledger.reads.transfer(transfer_id)
        self._ledger.runner.catch_up()
        return rows

    def __getattr__(self, name: str):
        return getattr(self._ledger.reads, name)


def test_a_transfer_projected_during_its_look_up_is_still_found(store_url):
    """A look-up reads the read model, then the feed past the projection's checkpoint; the
    projection committing between the two must not hide the transfer (it was answered 404 to
    a void once, with two servers on one PostgreSQL database)."""
    ledger = open_ledger(store_url, inline=False)
    try:
        open_pair(ledger.service)
        tid = ledger.service.transfer("ann", "bob", "10.00", pending=True).outcome["transfer_id"]
        racing = _ProjectedRightAfterItsRowsAreRead(ledger)
        assert transfer_accounts(racing, ledger.events, tid) == ("ann", "bob")
        assert ledger.reads.transfer(tid) != []  # it was projected during the look-up
    finally:
        ledger.close()


def test_a_void_releases_and_moves_nothing(ledger):
    service = ledger.service
    open_pair(service)
    tid = service.transfer("ann", "bob", "30.00", pending=True).outcome["transfer_id"]
    assert service.transfer("ann", "bob", "1.00", pending=True).outcome["expires_at"] is None
    voided = service.void_transfer(tid, command_id="void-1")
    assert (voided.outcome["status"], voided.outcome["amount"]) == ("voided", "30.00")
    assert shown(service, "ann") == ("100.00", "1.00", "0.00", "99.00")
    assert shown(service, "bob") == ("0.00", "0.00", "1.00", "0.00")
    again = service.void_transfer(tid, command_id="void-1")
    assert again.replayed and again.outcome == voided.outcome
    assert ledger.queries.transfer(tid)["status"] == "voided"
    with pytest.raises(TransferNotPending):
        service.post_transfer(tid)


def test_past_its_timeout_a_hold_cannot_be_posted_and_its_money_is_free(ledger, clock):
    service = ledger.service
    open_pair(service)
    tid = service.transfer("ann", "bob", "70.00", pending=True, timeout_s=60).outcome["transfer_id"]
    clock.advance(59)
    assert shown(service, "ann")[3] == "30.00"
    clock.advance(1)
    before = event_types(ledger, "ann")
    with pytest.raises(TransferExpired):
        service.post_transfer(tid)
    assert event_types(ledger, "ann") == before  # refused, nothing written
    # The next command on the account records the expiry first, then uses the money.
    service.withdraw("ann", "100.00")
    assert event_types(ledger, "ann")[-2:] == ["HoldReleased", "FundsWithdrawn"]
    assert event_types(ledger, "bob")[-1] == "HoldReleased"
    assert shown(service, "ann") == ("0.00", "0.00", "0.00", "0.00")
    assert shown(service, "bob") == ("0.00", "0.00", "0.00", "0.00")
    assert ledger.queries.transfer(tid)["status"] == "expired"
    with pytest.raises(TransferExpired):
        service.post_transfer(tid)  # after the expiry was written, still said as expired
    replayed = service.expire_transfer(tid)
    assert replayed.replayed and replayed.outcome["status"] == "expired"


@pytest.mark.parametrize("atomic", [False, True])
def test_a_batch_records_an_overdue_expiry_on_its_accounts_before_its_transfers(
    ledger, clock, atomic
):
    service = ledger.service
    open_pair(service)
    tid = service.transfer("ann", "bob", "70.00", pending=True, timeout_s=60).outcome["transfer_id"]
    clock.advance(60)
    items = [BatchItem("ann", "bob", "100.00", "all-of-it"), BatchItem("bob", "ann", "1.00", "b")]
    assert [r.status for r in service.transfer_batch(items, atomic=atomic)] == ["ok", "ok"]
    assert event_types(ledger, "ann")[-3:] == ["HoldReleased", "TransferredOut", "TransferredIn"]
    assert event_types(ledger, "bob")[-3:] == ["HoldReleased", "TransferredIn", "TransferredOut"]
    assert shown(service, "ann") == ("1.00", "0.00", "0.00", "1.00")
    assert ledger.queries.transfer(tid)["status"] == "expired"


def test_an_expiry_is_written_once_however_many_expire_it(store_url, clock):
    first, second = open_ledger(store_url), open_ledger(store_url)
    try:
        for ledger in (first, second):
            ledger.service.clock = clock
        open_pair(first.service)
        tid = first.service.transfer("ann", "bob", "10.00", pending=True, timeout_s=5).outcome[
            "transfer_id"
        ]
        clock.advance(5)
        outcomes = race([lambda: first.service.expire_transfer(tid),
                         lambda: second.service.expire_transfer(tid)])  # fmt: skip
        assert all(not isinstance(o, Exception) for o in outcomes), outcomes
        assert event_types(first, "ann").count("HoldReleased") == 1
        assert event_types(first, "bob").count("HoldReleased") == 1
    finally:
        first.close()
        second.close()


def test_a_post_and_a_void_racing_have_exactly_one_winner(store_url):
    first, second = open_ledger(store_url), open_ledger(store_url)
    try:
        open_pair(first.service)
        for round_ in range(4):
            tid = first.service.transfer("ann", "bob", "5.00", pending=True).outcome["transfer_id"]
            outcomes = race([functools.partial(first.service.post_transfer, tid),
                             functools.partial(second.service.void_transfer, tid)])  # fmt: skip
            won = [o for o in outcomes if not isinstance(o, Exception)]
            lost = [o for o in outcomes if isinstance(o, Exception)]
            assert len(won) == 1 and len(lost) == 1, (round_, outcomes)
            assert isinstance(lost[0], TransferNotPending), lost
        released = [e for e in first.events.read_stream("ann") if e.event_type == "HoldReleased"]
        assert len(released) == 4  # each hold closed once
        posted = sum(e.data["outcome"] == "posted" for e in released)
        assert shown(first.service, "bob")[0] == f"{5 * posted}.00"
        assert shown(first.service, "ann")[1:3] == ("0.00", "0.00")
    finally:
        first.close()
        second.close()


def test_two_holds_that_together_exceed_what_is_available_one_is_refused(store_url):
    first, second = open_ledger(store_url), open_ledger(store_url)
    try:
        open_pair(first.service, deposit="100.00")
        outcomes = race([
            lambda: first.service.transfer("ann", "bob", "60.00", pending=True),
            lambda: second.service.transfer("ann", "bob", "60.00", pending=True),
        ])  # fmt: skip
        assert sorted(type(o).__name__ for o in outcomes) == ["InsufficientFunds", "Receipt"]
        assert shown(first.service, "ann") == ("100.00", "60.00", "0.00", "40.00")
    finally:
        first.close()
        second.close()


def test_bad_input_is_refused_and_writes_nothing(ledger):
    service = ledger.service
    open_pair(service)
    before = event_types(ledger, "ann")
    bad: list[tuple[Callable[[], object], type[EventbankError]]] = [
        (lambda: service.transfer("ann", "bob", "0", pending=True), InvalidAmount),
        (lambda: service.transfer("ann", "bob", "-1", pending=True), InvalidAmount),
        (lambda: service.transfer("ann", "bob", "1.001", pending=True), InvalidAmount),
        (lambda: service.transfer("ann", "bob", "1", pending=True, timeout_s=0), InvalidInput),
        (lambda: service.transfer("ann", "bob", "1", pending=True, timeout_s=2_592_001),
         InvalidInput),
        (lambda: service.transfer("ann", "bob", "1", pending=True, timeout_s=1.5),  # type: ignore[arg-type]
         InvalidInput),
        (lambda: service.transfer("ann", "bob", "1", timeout_s=60), InvalidInput),
        (lambda: service.transfer("ann", "bob", "100.01", pending=True), InsufficientFunds),
        (lambda: service.transfer("ann", "ann", "1", pending=True), EventbankError),
        (lambda: service.post_transfer("no-such-transfer"), TransferNotFound),
        (lambda: service.void_transfer("no such"), InvalidInput),
    ]  # fmt: skip
    for call, error in bad:
        with pytest.raises(error):
            call()
    tid = service.transfer("ann", "bob", "10.00", pending=True).outcome["transfer_id"]
    held = event_types(ledger, "ann")
    for amount in ("10.01", "0", "abc"):
        with pytest.raises(InvalidAmount):
            service.post_transfer(tid, amount)
    final = service.transfer("ann", "bob", "1.00").outcome["transfer_id"]
    with pytest.raises(TransferNotPending):
        service.post_transfer(final)
    assert event_types(ledger, "ann") == [*held, "TransferredOut"]
    assert held == [*before, "HoldPlaced"]


def test_a_frozen_account_can_have_holds_voided_but_not_posted_or_made(ledger):
    service = ledger.service
    open_pair(service)
    kept = service.transfer("ann", "bob", "10.00", pending=True).outcome["transfer_id"]
    other = service.transfer("ann", "bob", "20.00", pending=True).outcome["transfer_id"]
    service.freeze_account("ann", "fraud check")
    with pytest.raises(AccountIsFrozen):
        service.transfer("ann", "bob", "1.00", pending=True)
    with pytest.raises(AccountIsFrozen):
        service.post_transfer(kept)
    service.void_transfer(other)
    service.unfreeze_account("ann", "cleared")
    with pytest.raises(BalanceNotZero, match="pending transfers"):
        service.close_account("bob")  # it has a pending credit
    service.post_transfer(kept)
    assert shown(service, "bob") == ("10.00", "0.00", "0.00", "10.00")


def test_holds_survive_snapshots_and_read_model_rebuilds_and_the_audit_is_clean(store_url, clock):
    ledger = open_ledger(store_url)
    try:
        ledger.service.clock = clock
        ledger.service.snapshot_every = 3
        open_pair(ledger.service)
        ids = [ledger.service.transfer("ann", "bob", f"{n}.00", pending=True,
                                       timeout_s=100 * n).outcome["transfer_id"]
               for n in range(1, 6)]  # fmt: skip
        ledger.service.post_transfer(ids[0])
        ledger.service.void_transfer(ids[1])
        clock.advance(350)  # ids[2] (300 s) is overdue: the withdrawal below expires it first
        ledger.service.withdraw("ann", "10.00")
        fresh = open_ledger(store_url)  # no cache: loads from the newest snapshot
        try:
            state = fresh.service.get_account("ann")
            assert state == ledger.service.get_account("ann")
            assert sorted(state.holds) == sorted(ids[3:])
            assert state.pending_debits_minor == 900
        finally:
            fresh.close()
        assert shown(ledger.service, "ann") == ("89.00", "9.00", "0.00", "80.00")
        ledger.runner.catch_up()
        before = ledger.queries.balance("ann", 0)
        ledger.runner.rebuild()
        assert ledger.queries.balance("ann", 0) == before
        assert before["pending_debits"] == "9.00"
        report = Auditor(ledger.events, ledger.reads).run()
        assert report.clean, report.findings
    finally:
        ledger.close()


def test_the_sweeper_expires_what_nobody_touches_a_page_at_a_time(ledger, clock):
    service = ledger.service
    for name in ("a1", "a2", "a3"):
        service.open_account(name, owner="A", account_type="CHECKING", initial_deposit="10.00")
    service.open_account("z", owner="Z", account_type="CHECKING")
    due = [service.transfer(name, "z", "4.00", pending=True, timeout_s=30).outcome["transfer_id"]
           for name in ("a1", "a3")]  # fmt: skip
    later = service.transfer("a2", "z", "4.00", pending=True, timeout_s=90).outcome["transfer_id"]
    sweeper = ExpirySweeper(service, ledger.reads, page=2)
    assert sweeper.sweep_page() == 0  # a1 a2: nothing is due yet
    clock.advance(30)
    assert [sweeper.sweep_page() for _ in range(3)] == [1, 1, 0]  # a3 z | a1 a2 | a3 z
    assert [ledger.queries.transfer(tid)["status"] for tid in due] == ["expired", "expired"]
    assert ledger.queries.transfer(later)["status"] == "pending"
    assert shown(service, "z")[2] == "4.00"
    clock.advance(60)
    assert sweeper.sweep_page() == 1  # a1 a2
    assert shown(service, "a2") == ("10.00", "0.00", "0.00", "10.00")
    assert shown(service, "z") == ("0.00", "0.00", "0.00", "0.00")


def test_open_pending_transfers_are_listed_per_account_and_for_the_ledger(ledger, clock):
    service = ledger.service
    open_pair(service)
    service.open_account("cy", owner="Cy", account_type="CHECKING", initial_deposit="5.00")
    one = service.transfer("ann", "bob", "1.00", pending=True, timeout_s=10).outcome
    two = service.transfer("cy", "ann", "2.00", pending=True).outcome
    three = service.transfer("ann", "cy", "3.00", pending=True).outcome
    service.void_transfer(three["transfer_id"])
    clock.advance(10)
    mine = open_holds(service, ledger.reads, "ann")
    assert [(h["transfer_id"], h["from_account_id"], h["to_account_id"], h["amount"],
             h["overdue"]) for h in mine] == [
        (one["transfer_id"], "ann", "bob", "1.00", True),
        (two["transfer_id"], "cy", "ann", "2.00", False)]  # fmt: skip
    assert mine[0]["expires_at"] == one["expires_at"] and mine[1]["expires_at"] is None
    everyone = open_holds(service, ledger.reads)
    assert sorted(h["transfer_id"] for h in everyone) == sorted(
        [one["transfer_id"], two["transfer_id"]])  # fmt: skip
    assert len(open_holds(service, ledger.reads, limit=1)) == 1
    with pytest.raises(ValueError):
        open_holds(service, ledger.reads, limit=0)


def test_the_audit_catches_a_hold_closed_twice_or_on_one_side(ledger):
    service = ledger.service
    open_pair(service)
    tid = service.transfer("ann", "bob", "10.00", pending=True).outcome["transfer_id"]
    service.void_transfer(tid)
    assert Auditor(ledger.events).run().clean
    # A writer behind the service's back closes it again, on the debit side only.
    head = ledger.events.read_stream("ann")[-1]
    again = HoldReleased("ann", tid, "debit", 1000, "USD", "voided")
    forged = NewEvent(new_id(), "ann", ACCOUNT, head.version + 1, "HoldReleased", 1,
                      again.to_data(), {})  # fmt: skip
    ledger.events.append(chained([forged], {"ann": head.hash}), {"ann": head.version})
    findings = Auditor(ledger.events).run().findings
    assert {f.kind for f in findings} == {"hold_closed_twice", "holds_unbalanced"}, findings
    assert any("pending debits -10.00" in f.detail for f in findings)


def test_on_dynamodb_a_hold_a_post_and_a_void_are_each_one_transaction(dynamodb_store_url):
    ledger = open_ledger(dynamodb_store_url)
    try:
        open_pair(ledger.service)
        client = ledger.events._ddb  # the event store's own client: its writes are counted
        writes: list[list[str]] = []
        send = client.transact_write_items

        def counted(**request):
            writes.append([next(iter(item)) for item in request["TransactItems"]])
            return send(**request)

        client.transact_write_items = counted
        posted = ledger.service.transfer("ann", "bob", "10.00", pending=True).outcome
        voided = ledger.service.transfer("ann", "bob", "20.00", pending=True).outcome
        ledger.service.post_transfer(posted["transfer_id"], "4.00")
        ledger.service.void_transfer(voided["transfer_id"])
        assert len(writes) == 4  # one transaction per command, each both accounts' events
        puts = [sum(kind == "Put" for kind in write) for write in writes]
        # per event a Put of it and of its id's guard, and one of the command record: a post
        # writes two events more than a hold or a void (TransferredOut and TransferredIn)
        assert puts[0] == puts[1] == puts[3] == 2 * 2 + 1 and puts[2] == 4 * 2 + 1, writes
        assert all(write.count("ConditionCheck") == 2 for write in writes), writes
    finally:
        ledger.close()


def test_the_demo_shows_holds_a_fee_split_a_refund_and_a_statement(tmp_path):
    out = Console(record=True, width=200)
    run_demo(out, f"sqlite:///{tmp_path / 'demo.db'}")
    text = out.export_text()
    assert "hold of 10.00 from alice to bob: alice available 5.00 USD" in text
    assert "posted 6.00 of it: bob now 11.00 USD, the other 4.00 released: alice available " \
        "9.00 USD" in text  # fmt: skip
    assert "posting it 1.1 s later: refused (transfer_expired)" in text
    assert "its expiry recorded: alice available 9.00 USD again" in text
    assert "one entry, three legs, one atomic write: alice -4.00, bob +3.80, fees +0.20" in text
    assert "refunded 2.00 of it, leg by leg in proportion (alice 2.00, bob 1.90, fees 0.10)" in text
    assert "refunding 2.50 more: refused (reversal_exceeds_original)" in text
    assert "  order 1042: 0.20, balance 0.20\n" in text
    assert "  opening 0.00 + in 0.20 - out 0.10 = closing 0.10" in text
    assert "alice + bob + fees = 20.00 USD" in text


def race(calls: list[Callable[[], object]]) -> list[object]:
    """Run ``calls`` at once (from a barrier); each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = calls[index]()
        except Exception as exc:  # noqa: BLE001 - the race's loser is an answer too
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "dynamodb"])
def test_rows_written_before_pending_transfers_existed_show_none(engine, request, monkeypatch):
    """A read store made by the release before (no pending columns or attributes) is migrated
    when opened, and its rows read as holding nothing."""
    url = request.getfixturevalue(f"{engine}_read_store_url")
    old = BalanceRow("old", "Ann", "CHECKING", "USD", 1234, "OPEN", 2, "2026-01-01", 500)
    if engine == "dynamodb":  # no schema: an item without the attributes, as written before
        store = open_read_store(url)
        item = dynamo_reads._row_item(old)
        for name in ("pending_debits_minor", "pending_credits_minor"):
            del item[name]
        store._ddb.put_item(TableName=store.table, Item=item)
        store.close()
    else:
        module = {"sqlite": sqlite_reads, "postgres": postgres_reads}[engine]
        with monkeypatch.context() as before:
            before.setattr(module, "_MIGRATIONS", module._MIGRATIONS[:-1])
            open_read_store(url).close()  # the schema of the release before
        insert = ("INSERT INTO account_balances (account_id, owner, account_type, currency,"
                  " balance_minor, status, version, updated_at, overdraft_limit_minor)"
                  " VALUES ('old', 'Ann', 'CHECKING', 'USD', 1234, 'OPEN', 2, '2026-01-01',"
                  " 500)")  # fmt: skip
        if engine == "sqlite":
            with sqlite3.connect(sqlite_path(url)) as conn:
                conn.execute(insert)
        else:
            with psycopg.connect(url) as conn:
                conn.execute(insert)
    store = open_read_store(url)
    try:
        row = store.balance("old")
        assert row == old and (row.pending_debits_minor, row.pending_credits_minor) == (0, 0)
        shown = describe_account(row)
        assert (shown["pending_debits"], shown["available"]) == ("0.00", "17.34")
    finally:
        store.close()
