"""Pending transfers over HTTP, on every engine: ``POST /transfers`` with ``pending`` reserves,
``POST /transfers/{id}/post`` moves all or part, ``/void`` releases, past the timeout both are
refused as expired; accounts and transfers show it, and the usual guards, codes and
idempotency hold."""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from eventbank.application.observability import Metrics
from eventbank.http import app as http_app
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.wiring import Ledger, open_ledger
from tests.clock import Clock
from tests.test_http import problem


@dataclass
class Api:
    ledger: Ledger
    clock: Clock
    teller: TestClient
    auditor_token: str

    def account(self, account_id: str) -> dict:
        response = self.teller.get(f"/accounts/{account_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def transfer(self, transfer_id: str) -> dict:
        response = self.teller.get(f"/transfers/{transfer_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def open(self, account_id: str, deposit: str | None) -> None:
        body = {"account_id": account_id, "owner": "Ada", "type": "CHECKING"}
        if deposit:
            body["initial_deposit"] = deposit
        response = self.teller.post("/accounts", json=body)
        assert response.status_code == 201, response.text

    def hold(self, amount: str, **fields: object) -> dict:
        """A pending transfer of ``amount`` from ann to bob, as answered."""
        body = {"from_account_id": "ann", "to_account_id": "bob", "amount": amount,
                "pending": True, **fields}  # fmt: skip
        response = self.teller.post("/transfers", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def written(self, account_id: str) -> int:
        """How many events the account's stream holds."""
        return len(self.ledger.events.read_stream(account_id))


@pytest.fixture
def sweep_every_s() -> float | None:
    """How often the app's expiry worker runs; None: as served (a test parametrizes it)."""
    return None


@pytest.fixture
def api(
    store_url: str, tmp_path: Path, sweep_every_s: float | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Api]:
    """The app in process on each engine, its service on a clock the test moves, with a teller
    client (ann: 100.00, bob: 0) and an auditor's token (may read, may not write)."""
    if sweep_every_s is not None:
        slowed = functools.partial(http_app.ExpirySweeper, every_s=sweep_every_s)
        monkeypatch.setattr(http_app, "ExpirySweeper", slowed)
    ledger = open_ledger(store_url)
    clock = Clock()
    ledger.service.clock = clock
    tokens_file = tmp_path / "tokens.json"
    teller = add_token(tokens_file, "pending-teller", "teller")
    auditor = add_token(tokens_file, "pending-auditor", "auditor")
    assert teller and auditor
    app = create_app(ledger, TokenStore.load(tokens_file), Metrics())
    try:
        with TestClient(app, headers={"Authorization": f"Bearer {teller}"}) as client:
            opened = Api(ledger, clock, client, auditor)
            opened.open("ann", "100.00")
            opened.open("bob", None)
            yield opened
    finally:
        ledger.close()


def money(view: dict) -> tuple[str, str, str, str]:
    return (view["balance"], view["pending_debits"], view["pending_credits"], view["available"])


def test_a_pending_transfer_reserves_and_a_partial_post_moves_part_and_releases_the_rest(api):
    held = api.hold("30.00", timeout_s=3600)
    assert (held["kind"], held["status"], held["amount"], held["currency"]) == (
        "transfer", "pending", "30.00", "USD")  # fmt: skip
    assert held["expires_at"] == "2026-12-05T10:00:00.000000Z"
    assert money(held["from"]) == ("100.00", "30.00", "0.00", "70.00")
    assert money(held["to"]) == ("0.00", "0.00", "30.00", "0.00")
    tid = held["transfer_id"]

    assert money(api.account("ann")) == ("100.00", "30.00", "0.00", "70.00")
    assert money(api.account("bob")) == ("0.00", "0.00", "30.00", "0.00")
    shown = api.transfer(tid)
    assert shown.pop("recorded_at")
    wanted = {"transfer_id": tid, "status": "pending", "amount": "0.00",
              "pending_amount": "30.00", "currency": "USD", "from_account_id": "ann",
              "to_account_id": "bob"}  # fmt: skip
    assert {name: shown[name] for name in wanted} == wanted
    detail = problem(api.teller.post("/accounts/ann/withdrawals", json={"amount": "70.01"}),
                     409, "insufficient_funds")["detail"]  # fmt: skip
    assert "available 70.00 USD" in detail

    posted = api.teller.post(f"/transfers/{tid}/post", json={"amount": "12.50"})
    assert posted.status_code == 200, posted.text
    body = posted.json()
    assert (body["kind"], body["transfer_id"], body["status"]) == ("post", tid, "posted")
    assert (body["amount"], body["pending_amount"], body["currency"]) == ("12.50", "30.00", "USD")
    assert money(body["from"]) == ("87.50", "0.00", "0.00", "87.50")
    assert money(body["to"]) == ("12.50", "0.00", "0.00", "12.50")
    assert money(api.account("ann")) == ("87.50", "0.00", "0.00", "87.50")
    assert money(api.account("bob")) == ("12.50", "0.00", "0.00", "12.50")
    shown = api.transfer(tid)
    assert (shown["status"], shown["amount"], shown["pending_amount"]) == (
        "posted", "12.50", "30.00")  # fmt: skip

    before = api.written("ann")
    problem(api.teller.post(f"/transfers/{tid}/post"), 409, "transfer_not_pending")
    problem(api.teller.post(f"/transfers/{tid}/void"), 409, "transfer_not_pending")
    assert api.written("ann") == before


def test_a_post_without_an_amount_moves_all_of_it_and_a_void_releases(api):
    whole = api.hold("20.00")
    assert "expires_at" not in whole  # no timeout: pending until posted or voided
    posted = api.teller.post(f"/transfers/{whole['transfer_id']}/post", json={})
    assert posted.status_code == 200, posted.text
    assert (posted.json()["amount"], posted.json()["pending_amount"]) == ("20.00", "20.00")

    for body in (None, {}):  # no body at all, or an empty object
        voided_id = api.hold("40.00")["transfer_id"]
        assert api.account("ann")["available"] == "40.00"
        voided = api.teller.post(f"/transfers/{voided_id}/void", json=body)
        assert voided.status_code == 200, voided.text
        answer = voided.json()
        assert (answer["kind"], answer["status"], answer["amount"], answer["pending_amount"]) == (
            "void", "voided", "40.00", "40.00")  # fmt: skip
        assert money(answer["from"]) == ("80.00", "0.00", "0.00", "80.00")
        assert money(api.account("bob")) == ("20.00", "0.00", "0.00", "20.00")
        shown = api.transfer(voided_id)
        assert (shown["status"], shown["amount"], shown["pending_amount"]) == (
            "voided", "0.00", "40.00")  # fmt: skip

    once = {"from_account_id": "ann", "to_account_id": "bob", "amount": "1.00"}
    final = api.teller.post("/transfers", json=once)
    assert final.status_code == 201, final.text
    assert "status" not in final.json() and "expires_at" not in final.json()
    shown = api.transfer(final.json()["transfer_id"])
    assert (shown["status"], shown["amount"]) == ("posted", "1.00")
    assert "pending_amount" not in shown
    problem(api.teller.post(f"/transfers/{final.json()['transfer_id']}/post"),
            409, "transfer_not_pending")  # fmt: skip


def test_refused_posts_voids_and_pending_transfers_write_nothing(api):
    tid = api.hold("30.00")["transfer_id"]
    ann, bob = api.written("ann"), api.written("bob")

    problem(api.teller.post("/transfers/no-such-transfer/post"), 404, "transfer_not_found")
    problem(api.teller.post("/transfers/no-such-transfer/void"), 404, "transfer_not_found")
    detail = problem(api.teller.post(f"/transfers/{tid}/post", json={"amount": "30.01"}),
                     422, "invalid_amount")["detail"]  # fmt: skip
    assert "30.00 USD pending" in detail
    for bad in ({"amount": 5}, {"amount": "-1"}, {"amount": "1", "extra": 1}):
        problem(api.teller.post(f"/transfers/{tid}/post", json=bad), 422, "validation_error")
    problem(api.teller.post(f"/transfers/{tid}/void", json={"amount": "1.00"}),
            422, "validation_error")  # fmt: skip

    transfer = {"from_account_id": "ann", "to_account_id": "bob", "amount": "5.00"}
    for fields in ({"pending": True, "timeout_s": 0}, {"pending": True, "timeout_s": 2_592_001},
                   {"pending": True, "timeout_s": -1}, {"pending": True, "timeout_s": "60"},
                   {"pending": True, "timeout_s": 1.5}, {"pending": True, "timeout_s": True},
                   {"pending": "yes"}, {"pending": 1}, {"timeout_s": 60},
                   {"pending": False, "timeout_s": 60}):  # fmt: skip
        problem(api.teller.post("/transfers", json={**transfer, **fields}),
                422, "validation_error")  # fmt: skip
    assert (api.written("ann"), api.written("bob")) == (ann, bob)
    assert money(api.account("ann")) == ("100.00", "30.00", "0.00", "70.00")

    longest = api.hold("1.00", timeout_s=2_592_000)
    assert longest["expires_at"] == "2027-01-04T09:00:00.000000Z"


def test_a_batch_item_cannot_be_pending(api):
    items = [
        {"from_account_id": "ann", "to_account_id": "bob", "amount": "1.00",
         "idempotency_key": "b-pending", "pending": True},
        {"from_account_id": "ann", "to_account_id": "bob", "amount": "1.00",
         "idempotency_key": "b-timeout", "timeout_s": 60},
        {"from_account_id": "ann", "to_account_id": "bob", "amount": "2.00",
         "idempotency_key": "b-final"},
    ]  # fmt: skip
    response = api.teller.post("/transfers/batch", json={"items": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["refused", "refused", "ok"]
    assert results[0]["error"]["code"] == results[1]["error"]["code"] == "validation_error"
    assert "pending" in results[0]["error"]["detail"]
    assert "timeout_s" in results[1]["error"]["detail"]
    assert "status" not in results[2]["transfer"]
    assert money(api.account("ann")) == ("98.00", "0.00", "0.00", "98.00")


def test_a_post_or_void_replays_by_its_idempotency_key(api):
    tid = api.hold("30.00")["transfer_id"]
    key = {"Idempotency-Key": f"post-{tid}"}
    first = api.teller.post(f"/transfers/{tid}/post", json={"amount": "10.00"}, headers=key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = api.teller.post(f"/transfers/{tid}/post", json={"amount": "10.00"}, headers=key)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again.json()["command_id"] == f"post-{tid}"
    assert api.account("ann")["balance"] == "90.00"  # moved once
    problem(api.teller.post(f"/transfers/{tid}/post", json={"amount": "11.00"}, headers=key),
            422, "idempotency_key_reused")  # fmt: skip

    other = api.hold("5.00")["transfer_id"]
    key = {"Idempotency-Key": f"void-{other}"}
    first = api.teller.post(f"/transfers/{other}/void", headers=key)
    again = api.teller.post(f"/transfers/{other}/void", headers=key)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"

    held = {"from_account_id": "ann", "to_account_id": "bob", "amount": "5.00", "pending": True}
    key = {"Idempotency-Key": "hold-once"}
    first = api.teller.post("/transfers", json=held, headers=key)
    again = api.teller.post("/transfers", json=held, headers=key)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert api.account("ann")["pending_debits"] == "5.00"  # reserved once
    problem(api.teller.post("/transfers", json={**held, "pending": False}, headers=key),
            422, "idempotency_key_reused")  # fmt: skip


def test_a_reader_may_look_but_not_post_void_or_hold(api):
    tid = api.hold("30.00")["transfer_id"]
    reader = httpx.Headers({"Authorization": f"Bearer {api.auditor_token}"})
    held = {"from_account_id": "ann", "to_account_id": "bob", "amount": "1.00", "pending": True}
    problem(api.teller.post(f"/transfers/{tid}/post", headers=reader), 403, "forbidden")
    problem(api.teller.post(f"/transfers/{tid}/void", headers=reader), 403, "forbidden")
    problem(api.teller.post("/transfers", json=held, headers=reader), 403, "forbidden")
    problem(api.teller.post(f"/transfers/{tid}/post", headers={"Authorization": "Bearer no"}),
            401, "unauthorized")  # fmt: skip
    looked = api.teller.get(f"/transfers/{tid}", headers=reader)
    assert looked.status_code == 200 and looked.json()["status"] == "pending"
    listed = api.teller.get("/pending-transfers?account_id=bob", headers=reader)
    assert listed.status_code == 200
    assert [(h["transfer_id"], h["from_account_id"], h["amount"], h["expires_at"], h["overdue"])
            for h in listed.json()["items"]] == [(tid, "ann", "30.00", None, False)]  # fmt: skip
    assert api.teller.get("/pending-transfers?limit=1").json()["items"][0]["transfer_id"] == tid
    problem(api.teller.get("/pending-transfers?limit=0"), 422, "validation_error")
    problem(api.teller.get("/pending-transfers?account_id=nobody"), 404, "account_not_found")
    assert money(api.account("ann")) == ("100.00", "30.00", "0.00", "70.00")


@pytest.mark.parametrize("sweep_every_s", [3600.0])  # no expiry recorded in the background
def test_past_its_timeout_a_pending_transfer_is_refused_as_expired_and_released(api):
    tid = api.hold("30.00", timeout_s=60)["transfer_id"]
    api.clock.advance(59)
    assert api.transfer(tid)["status"] == "pending"
    api.clock.advance(2)  # past the deadline

    before = api.written("ann")
    problem(api.teller.post(f"/transfers/{tid}/post"), 409, "transfer_expired")
    problem(api.teller.post(f"/transfers/{tid}/void"), 409, "transfer_expired")
    assert api.written("ann") == before
    # the next command on the account records the expiry first
    deposit = api.teller.post("/accounts/ann/deposits", json={"amount": "1.00"})
    assert deposit.status_code == 201, deposit.text
    assert money(deposit.json()["account"]) == ("101.00", "0.00", "0.00", "101.00")
    shown = api.transfer(tid)
    assert (shown["status"], shown["amount"], shown["pending_amount"]) == (
        "expired", "0.00", "30.00")  # fmt: skip
    assert money(api.account("bob")) == ("0.00", "0.00", "0.00", "0.00")
    problem(api.teller.post(f"/transfers/{tid}/post"), 409, "transfer_expired")


def test_the_served_worker_records_an_expiry_nobody_touches(api):
    tid = api.hold("30.00", timeout_s=60)["transfer_id"]
    api.clock.advance(61)
    deadline = time.monotonic() + 30
    while api.transfer(tid)["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.transfer(tid)["status"] == "expired"
    assert money(api.account("ann")) == ("100.00", "0.00", "0.00", "100.00")
    assert money(api.account("bob")) == ("0.00", "0.00", "0.00", "0.00")
    problem(api.teller.post(f"/transfers/{tid}/post"), 409, "transfer_expired")
