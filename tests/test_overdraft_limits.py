"""Overdraft limits on every engine: the balance goes down to -limit and no further, a lowered
limit blocks debits without changing the balance, and read models, audit and API show it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from eventbank.application.auditor import Auditor
from eventbank.application.payroll_service import PayrollRejected, PayrollService
from eventbank.application.service import LedgerService
from eventbank.domain.errors import (
    AccountNotFound,
    InsufficientFunds,
    InvalidAmount,
    UnknownCurrency,
)
from eventbank.wiring import open_ledger
from tests.serving import TELLER, Server, serve
from tests.test_cli import cli_against
from tests.test_http import open_account, problem


def account(service: LedgerService, account_id: str) -> dict:
    return service.get_account(account_id).describe()


def test_the_balance_goes_down_to_minus_the_limit_and_no_further(service, store):
    service.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit="10.00",
                         overdraft_limit="50.00")  # fmt: skip
    service.open_account("bob", owner="Bob", account_type="CHECKING")
    assert [e.event_type for e in store.read_stream("ann")] == [
        "AccountOpened", "OverdraftLimitSet", "FundsDeposited"]  # fmt: skip
    assert account(service, "ann")["available"] == "60.00"
    service.withdraw("ann", "40.00")
    service.transfer("ann", "bob", "20.00")
    shown = account(service, "ann")
    assert (shown["balance"], shown["overdraft_limit"], shown["available"]) == (
        "-50.00", "50.00", "0.00")  # fmt: skip
    version = store.read_stream("ann")[-1].version
    with pytest.raises(InsufficientFunds, match=r"available 0.00 USD \(balance -50.00 USD, "
                       r"overdraft limit 50.00 USD\), requested 0.01 USD"):  # fmt: skip
        service.withdraw("ann", "0.01")
    assert store.read_stream("ann")[-1].version == version


def test_a_lowered_limit_blocks_debits_and_credits_still_land(service):
    service.open_account("ann", owner="Ann", account_type="CHECKING", overdraft_limit="100")
    service.withdraw("ann", "80.00")
    service.set_overdraft_limit("ann", "30.00")  # below the current overdraft: allowed
    shown = account(service, "ann")
    assert (shown["balance"], shown["available"]) == ("-80.00", "-50.00")
    with pytest.raises(InsufficientFunds):
        service.withdraw("ann", "0.01")
    service.deposit("ann", "60.00")
    service.withdraw("ann", "10.00")  # available was 10.00
    service.set_overdraft_limit("ann", "0")
    assert account(service, "ann")["available"] == "-30.00"
    with pytest.raises(InsufficientFunds):
        service.withdraw("ann", "0.01")


def test_bad_limits_are_refused_and_write_nothing(service, store):
    service.open_account("yen", owner="Yu", account_type="CHECKING", currency="JPY")
    for bad, error in (("-5", InvalidAmount), ("1.5", InvalidAmount), ("ten", InvalidAmount),
                       ("10000000000000000", InvalidAmount), (7, InvalidAmount)):  # fmt: skip
        with pytest.raises(error):
            service.set_overdraft_limit("yen", bad)
    with pytest.raises(AccountNotFound):
        service.set_overdraft_limit("nobody", "5")
    with pytest.raises(InvalidAmount):
        service.open_account("y2", owner="Yu", account_type="CHECKING", currency="JPY",
                             overdraft_limit="0.5")  # fmt: skip
    with pytest.raises(UnknownCurrency):
        service.open_account("y3", owner="Yu", account_type="CHECKING", currency="XXX",
                             overdraft_limit="5")  # fmt: skip
    assert len(store.read_stream("yen")) == 1 and store.read_stream("y2") == []


def test_racing_withdrawals_never_pass_the_limit(service):
    service.open_account("ann", owner="Ann", account_type="CHECKING", overdraft_limit="100.00")
    outcomes: list[str] = []

    def withdraw() -> None:
        try:
            service.withdraw("ann", "30.00")
            outcomes.append("ok")
        except InsufficientFunds:
            outcomes.append("refused")

    threads = [threading.Thread(target=withdraw) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * 5
    assert account(service, "ann")["balance"] == "-90.00"


def test_a_payroll_may_draw_on_the_employers_overdraft_and_not_beyond(service):
    service.open_account("co", owner="Co", account_type="CHECKING", initial_deposit="10.00",
                         overdraft_limit="100.00")  # fmt: skip
    service.open_account("eve", owner="Eve", account_type="CHECKING")
    payrolls = PayrollService(service)
    with pytest.raises(PayrollRejected) as refused:
        payrolls.start("co", "account_id,amount,reference\neve,110.01,nov\n")
    assert "'co' has 110.00 USD available" in str(refused.value)
    payroll = payrolls.start("co", "account_id,amount,reference\neve,110.00,nov\n")
    assert payrolls.run(payroll.saga_id).status == "completed"
    assert account(service, "co")["balance"] == "-100.00"


def test_an_open_without_a_limit_keeps_its_old_fingerprint(service):
    """A retry of an open sent before limits existed, with its key, replays: the request's
    fingerprint has no limit field unless one is given."""
    first = service.open_account("ann", owner="Ann", account_type="CHECKING", command_id="k-1")
    again = service.open_account("ann", owner="Ann", account_type="CHECKING", command_id="k-1")
    assert again.replayed and again.outcome == first.outcome


def test_read_models_and_the_audit_know_the_limit(store_url, read_store_url):
    ledger = open_ledger(store_url, read_store_url)
    try:
        service = ledger.service
        service.open_account("ann", owner="Ann", account_type="CHECKING", overdraft_limit="25")
        service.withdraw("ann", "20.00")
        row = ledger.queries.balance("ann", 0)
        assert (row["balance"], row["overdraft_limit"], row["available"]) == (
            "-20.00", "25.00", "5.00")  # fmt: skip
        ledger.runner.catch_up()
        report = Auditor(ledger.events, ledger.reads).run()
        assert report.clean, report.findings
    finally:
        ledger.close()


def test_the_cli_opens_with_a_limit_and_changes_it(sqlite_store_url, tmp_path, capsys, monkeypatch):
    cli = cli_against(sqlite_store_url, f"sqlite:///{tmp_path / 'r.db'}", monkeypatch, capsys)
    assert cli("init")[0] == 0
    assert cli("open", "ann", "--owner", "Ann", "--type", "CHECKING",
               "--overdraft-limit", "20")[0] == 0  # fmt: skip
    assert cli("withdraw", "ann", "15")[0] == 0
    code, out, _ = cli("limit", "ann", "5")
    assert (code, out.strip()) == (0, "ann overdraft limit 5.00 USD; available -10.00")
    code, _, err = cli("withdraw", "ann", "1")
    assert code == 3 and "available -10.00 USD" in err
    code, _, err = cli("limit", "ann", "-5")
    assert code == 2 and "positive" in err


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("limits-http"))


def test_limits_over_http_are_for_admins_and_shown_on_the_account(server):
    with server.client(TELLER) as teller, server.client(server.admin) as admin:
        ann = open_account(teller, None, overdraft_limit="40.00")
        shown = teller.get(f"/accounts/{ann}").json()
        assert (shown["balance"], shown["overdraft_limit"], shown["available"]) == (
            "0.00", "40.00", "40.00")  # fmt: skip
        assert teller.post(f"/accounts/{ann}/withdrawals", json={"amount": "30"}).status_code == 201
        problem(teller.post(f"/accounts/{ann}/limits", json={"overdraft_limit": "1"}),
                403, "forbidden")  # fmt: skip
        lowered = admin.post(f"/accounts/{ann}/limits", json={"overdraft_limit": "10.00"})
        assert lowered.status_code == 200, lowered.text
        assert lowered.json()["account"]["available"] == "-20.00"
        detail = problem(teller.post(f"/accounts/{ann}/withdrawals", json={"amount": "1"}),
                         409, "insufficient_funds")["detail"]  # fmt: skip
        assert "available -20.00 USD" in detail
        for bad in ({}, {"overdraft_limit": -1}, {"overdraft_limit": "-1"}, {"overdraft_limit": 5}):
            assert admin.post(f"/accounts/{ann}/limits", json=bad).status_code == 422, bad
        problem(admin.post(f"/accounts/{ann}/limits", json={"overdraft_limit": "0.001"}),
                422, "invalid_amount")  # fmt: skip
