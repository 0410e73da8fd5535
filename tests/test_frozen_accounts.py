"""Frozen accounts on every engine: no debit leaves a frozen account, credits still land, and
the freeze is an event with its reason, shown in the read models and kept by the audit."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eventbank.application.auditor import Auditor
from eventbank.application.payroll_service import PayrollService
from eventbank.application.service import LedgerService
from eventbank.application.write_path import IdempotencyKeyReused
from eventbank.domain.errors import (
    AccountIsClosed,
    AccountIsFrozen,
    AccountNotFound,
    AccountNotFrozen,
    InvalidInput,
    RuleViolation,
)
from eventbank.wiring import open_ledger
from tests.serving import TELLER, Server, serve
from tests.test_cli import cli_against
from tests.test_http import open_account, problem


def open_pair(service: LedgerService) -> None:
    service.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit="100.00")
    service.open_account("bob", owner="Bob", account_type="CHECKING", initial_deposit="50.00")


def balance(service: LedgerService, account_id: str) -> str:
    return str(service.get_account(account_id).describe()["balance"])


def test_a_frozen_account_refuses_every_debit_and_still_receives_credits(service, store):
    open_pair(service)
    receipt = service.freeze_account("ann", "card reported stolen")
    assert receipt.outcome["account"]["status"] == "FROZEN"
    frozen_at = store.read_stream("ann")[-1]
    assert frozen_at.metadata["actor"] == "local"
    assert (frozen_at.event_type, frozen_at.data["reason"]) == (
        "AccountFrozen",
        "card reported stolen",
    )

    for debit in (
        lambda: service.withdraw("ann", "1.00"),
        lambda: service.transfer("ann", "bob", "1.00"),
        lambda: service.close_account("ann"),
    ):
        with pytest.raises(AccountIsFrozen, match="frozen"):
            debit()
    assert store.read_stream("ann")[-1].version == frozen_at.version  # nothing written

    service.deposit("ann", "5.00")
    service.transfer("bob", "ann", "10.00")
    assert (balance(service, "ann"), balance(service, "bob")) == ("115.00", "40.00")

    service.unfreeze_account("ann", "card replaced")
    service.withdraw("ann", "15.00")
    assert balance(service, "ann") == "100.00"
    assert service.get_account("ann").describe()["status"] == "OPEN"


def test_freezing_twice_unfreezing_an_open_account_and_bad_targets_are_refused(service, store):
    open_pair(service)
    with pytest.raises(AccountNotFrozen):
        service.unfreeze_account("ann", "never frozen")
    service.freeze_account("ann", "review")
    with pytest.raises(AccountIsFrozen, match="already frozen"):
        service.freeze_account("ann", "again")
    with pytest.raises(AccountNotFound):
        service.freeze_account("nobody", "review")
    service.transfer("bob", "ann", "50.00")
    service.close_account("bob")
    with pytest.raises(AccountIsClosed):
        service.freeze_account("bob", "review")
    for reason in ("", "   ", "x" * 501, "line\nbreak"):
        with pytest.raises(InvalidInput, match="reason"):
            service.freeze_account("bob", reason)
    assert [e.event_type for e in store.read_stream("ann")][-2:] == [
        "AccountFrozen",
        "TransferredIn",
    ]


def test_a_payroll_cannot_start_from_a_frozen_employer(service):
    open_pair(service)
    service.freeze_account("ann", "review")
    with pytest.raises(RuleViolation, match="employer account 'ann' is frozen"):
        PayrollService(service).start("ann", "account_id,amount,reference\nbob,1.00,nov\n")


def test_a_freeze_is_idempotent_by_key(service, store):
    open_pair(service)
    first = service.freeze_account("ann", "review", command_id="freeze-ann-1")
    again = service.freeze_account("ann", "review", command_id="freeze-ann-1")
    assert (again.replayed, again.outcome) == (True, first.outcome)
    assert [e.event_type for e in store.read_stream("ann")].count("AccountFrozen") == 1
    with pytest.raises(IdempotencyKeyReused):
        service.freeze_account("ann", "another reason", command_id="freeze-ann-1")


def test_read_models_list_a_frozen_account_and_the_audit_stays_clean(store_url, read_store_url):
    ledger = open_ledger(store_url, read_store_url)
    try:
        open_pair(ledger.service)
        ledger.service.open_account("cid", owner="Cid", account_type="SAVINGS")
        ledger.service.freeze_account("bob", "review")
        assert ledger.queries.balance("bob", 0)["status"] == "FROZEN"
        page = ledger.reads.accounts_page("", 10)
        assert [(r.account_id, r.status) for r in page] == [
            ("ann", "OPEN"), ("bob", "FROZEN"), ("cid", "OPEN")]  # fmt: skip
        ledger.runner.catch_up()
        report = Auditor(ledger.events, ledger.reads).run()
        assert report.clean, report.findings
    finally:
        ledger.close()


def test_the_cli_freezes_and_unfreezes(sqlite_store_url, tmp_path, capsys, monkeypatch):
    cli = cli_against(sqlite_store_url, f"sqlite:///{tmp_path / 'r.db'}", monkeypatch, capsys)
    assert cli("init")[0] == 0
    assert (
        cli("open", "ann", "--owner", "Ann", "--type", "CHECKING", "--initial-deposit", "10")[0]
        == 0
    )
    code, out, _ = cli("freeze", "ann", "--reason", "court order 12")
    assert (code, out.strip()) == (0, "froze ann")
    code, _, err = cli("withdraw", "ann", "1")
    assert code == 3 and "frozen" in err and "Traceback" not in err
    code, _, err = cli("freeze", "ann")
    assert code == 2 and "--reason" in err
    assert cli("unfreeze", "ann", "--reason", "order lifted")[0] == 0
    assert cli("withdraw", "ann", "1")[0] == 0


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("frozen-http"))


def test_only_an_admin_freezes_and_a_frozen_account_refuses_debits_over_http(server):
    with server.client(TELLER) as teller, server.client(server.admin) as admin:
        ann, bob = (open_account(teller, "100.00") for _ in range(2))
        refused = teller.post(f"/accounts/{ann}/freeze", json={"reason": "fraud review"})
        problem(refused, 403, "forbidden")
        frozen = admin.post(f"/accounts/{ann}/freeze", json={"reason": "fraud review"})
        assert frozen.status_code == 200, frozen.text
        assert frozen.json()["account"]["status"] == "FROZEN"
        assert teller.get(f"/accounts/{ann}").json()["status"] == "FROZEN"

        body = {"from_account_id": ann, "to_account_id": bob, "amount": "1.00"}
        detail = problem(teller.post("/transfers", json=body), 409, "account_frozen")["detail"]
        assert ann in detail
        problem(teller.post(f"/accounts/{ann}/withdrawals", json={"amount": "1.00"}),
                409, "account_frozen")  # fmt: skip
        into = {"from_account_id": bob, "to_account_id": ann, "amount": "5.00"}
        assert teller.post("/transfers", json=into).status_code == 201
        assert teller.get(f"/accounts/{ann}").json()["balance"] == "105.00"

        problem(admin.post(f"/accounts/{ann}/freeze", json={"reason": "again"}),
                409, "account_frozen")  # fmt: skip
        for bad in ({}, {"reason": ""}, {"reason": "x" * 501}, {"reason": 7}):
            assert admin.post(f"/accounts/{bob}/unfreeze", json=bad).status_code == 422, bad
        problem(admin.post(f"/accounts/{bob}/unfreeze", json={"reason": "not frozen"}),
                409, "account_not_frozen")  # fmt: skip
        problem(admin.post("/accounts/nobody-here/freeze", json={"reason": "x"}),
                404, "account_not_found")  # fmt: skip
        assert (
            admin.post(f"/accounts/{ann}/unfreeze", json={"reason": "cleared"}).status_code == 200
        )
        assert teller.post("/transfers", json=body).status_code == 201
