"""Listing payrolls (``GET /payrolls``, ``eventbank payroll list``) on every engine: newest
first, every payroll once whatever the page size, each with the progress ``GET /payrolls/{id}``
shows, a bounded read of the payroll registry per page, and bad input refused with nothing
written."""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventbank.application import payroll_service
from eventbank.application.ids import new_id
from eventbank.application.observability import Metrics
from eventbank.application.payroll_service import Listed, PayrollService
from eventbank.application.transfer_search import InvalidCursor, InvalidLimit
from eventbank.application.write_path import current_actor
from eventbank.domain import payroll as saga
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.ports.event_store import MAX_READ_LIMIT, NewEvent, chained
from eventbank.wiring import Ledger, open_ledger
from tests.clock import START, Clock
from tests.paging import every_item
from tests.test_cli import cli_against
from tests.test_http import problem


@pytest.fixture
def ledger(store_url: str, tmp_path) -> Iterator[Ledger]:
    ledger = open_ledger(store_url, f"sqlite:///{tmp_path / 'list.read.db'}")
    ledger.service.clock = Clock()
    s = ledger.service
    s.open_account("employer", owner="Co", account_type="CHECKING", initial_deposit="1000.00")
    for name in ("ann", "bob"):
        s.open_account(name, owner=name.title(), account_type="CHECKING")
    yield ledger
    ledger.close()


def start(ledger: Ledger, payrolls: PayrollService, n: int, **options: Any) -> str:
    """Payroll ``n``, started by "clerk-n" one second after the one before: ann and bob paid
    n.01 and n.02."""
    clock = ledger.service.clock
    assert isinstance(clock, Clock)
    clock.tick()
    token = current_actor.set(f"clerk-{n}")
    try:
        text = f"ann,{n}.01,p{n}\nbob,{n}.02,p{n}\n"
        return payrolls.start("employer", text, idempotency_key=f"p{n}", **options).saga_id
    finally:
        current_actor.reset(token)


def started_at(n: int) -> str:
    return (START + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def every_page(payrolls: PayrollService, limit: int) -> list[Listed]:
    """Every payroll, following the cursors from the newest page to the end."""
    seen: list[Listed] = []
    page, cursor = payrolls.page(limit=limit)
    while True:
        assert len(page) <= limit
        seen += page
        if cursor is None:
            return seen
        page, cursor = payrolls.page(cursor, limit)


def test_payrolls_are_listed_newest_first_once_each_whatever_the_page_size(ledger):
    payrolls = PayrollService(ledger.service)
    assert payrolls.page() == ([], None)
    ids = [start(ledger, payrolls, n) for n in range(1, 6)]
    payrolls.run(ids[1])  # closings now sit between registrations in the registry
    payrolls.run(ids[3])
    ids.append(start(ledger, payrolls, 6, policy="best-effort"))
    for limit in (1, 2, 4, 6, 100):
        listed = every_page(payrolls, limit)
        assert [i.payroll.saga_id for i in listed] == ids[::-1], limit
    listed = every_page(payrolls, 3)
    assert [(i.started_at, i.started_by) for i in listed] == [
        (started_at(n), f"clerk-{n}") for n in range(6, 0, -1)
    ]
    statuses = [(i.payroll.status, len(i.payroll.paid)) for i in listed]
    assert statuses == [("running", 0), ("running", 0), ("completed", 2), ("running", 0),
                        ("completed", 2), ("running", 0)]  # fmt: skip
    assert [i.summary() for i in listed] == [
        payrolls.status(i.payroll.saga_id).summary()
        | {"started_at": i.started_at, "started_by": i.started_by}
        for i in listed
    ]


class CountingReads:
    """The real store, counting the payroll registry's events each read returns."""

    def __init__(self, store: Any) -> None:
        self._store, self.registry_events = store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_stream(self, aggregate_id: str, *args: Any, **kwargs: Any) -> Any:
        events = self._store.read_stream(aggregate_id, *args, **kwargs)
        if aggregate_id == saga.REGISTRY:
            self.registry_events += len(events)
        return events


def test_a_page_reads_a_bounded_window_of_the_registry_and_may_be_short(ledger, monkeypatch):
    payrolls = PayrollService(ledger.service)
    ids = [start(ledger, payrolls, n) for n in range(1, 5)]
    for saga_id in ids:  # registry: 4 registrations, then 4 closings
        payrolls.run(saga_id)
    payrolls.events = counting = CountingReads(payrolls.events)
    monkeypatch.setattr(payroll_service, "LIST_SCAN", 3)
    pages: list[list[str]] = []
    cursor = None
    while True:
        counting.registry_events = 0
        page, cursor = payrolls.page(cursor, 2)
        assert counting.registry_events <= 1 + 3
        pages.append([i.payroll.saga_id for i in page])
        if cursor is None:
            break
    assert pages == [[], ids[:1:-1], ids[1::-1]]  # the closings alone fill the first window


def test_a_payroll_recorded_before_payroll_events_had_a_time_is_dated_by_its_event_id(ledger):
    """UUIDv7 event ids carry their millisecond; an id of another kind leaves the time unknown."""
    payrolls = PayrollService(ledger.service)
    before = datetime.now(UTC)
    for n, event_id in enumerate((new_id(), str(uuid.uuid4())), start=1):
        saga_id = f"payroll#old{n}"
        state = saga.Payroll(saga_id, "employer", "USD", "best-effort", "0" * 64, 0, 0)
        head = payrolls.events.read_stream(saga.REGISTRY, limit=1, backwards=True)
        version = head[0].version if head else 0
        meta = {"actor": "old-clerk", "saga_id": saga_id}  # no recorded_at
        event_type, data = saga.started(state)
        events = [
            NewEvent(new_id(), saga_id, saga.PAYROLL, 1, event_type, 1, data, meta),
            NewEvent(event_id, saga.REGISTRY, "PayrollRegistry", version + 1,
                     "PayrollRegistered", 1, {"saga_id": saga_id}, meta),
        ]  # fmt: skip
        heads = {saga.REGISTRY: head[0].hash} if head else {}
        payrolls.events.append(chained(events, heads), {saga_id: 0, saga.REGISTRY: version})
    (unknown, dated), cursor = payrolls.page()
    assert cursor is None
    assert (unknown.started_at, unknown.started_by) == (None, "old-clerk")
    assert dated.started_at is not None and dated.started_by == "old-clerk"
    moment = datetime.fromisoformat(dated.started_at.replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_LIMITS = [0, 101, -1, "0", "101", "ten", "", "1.5", " 5", True, 2.0]
BAD_CURSORS = ["!!", "abc", "a" * 100, cursor_of([0]), cursor_of(["5"]), cursor_of([True]),
               cursor_of([5.0]), cursor_of([5, 5]), cursor_of({"v": 5}), cursor_of([2**62 + 1]),
               "e30"]  # fmt: skip


@pytest.fixture
def sqlite_ledger(sqlite_store_url: str) -> Iterator[Ledger]:
    """Input is checked before the store is read, so one engine shows it (the HTTP test below
    refuses bad input on every engine)."""
    ledger = open_ledger(sqlite_store_url)
    yield ledger
    ledger.close()


@pytest.mark.parametrize("limit", BAD_LIMITS)
def test_a_bad_limit_is_refused(sqlite_ledger, limit):
    with pytest.raises(InvalidLimit):
        PayrollService(sqlite_ledger.service).page(limit=limit)


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_is_refused(sqlite_ledger, cursor):
    with pytest.raises(InvalidCursor):
        PayrollService(sqlite_ledger.service).page(cursor)


@contextmanager
def clients(ledger: Ledger, tmp_path) -> Iterator[tuple[TestClient, TestClient]]:
    """The app in process over the ledger: a teller's client and an auditor's."""
    tokens_file = tmp_path / "tokens.json"
    teller = add_token(tokens_file, "till-7", "teller")
    auditor = add_token(tokens_file, "books", "auditor")
    app = create_app(ledger, TokenStore.load(tokens_file), Metrics(), payroll_resume_every_s=None)
    with TestClient(app, headers={"Authorization": f"Bearer {teller}"}) as one, \
         TestClient(app, headers={"Authorization": f"Bearer {auditor}"}) as other:  # fmt: skip
        yield one, other


def test_http_lists_what_each_payroll_shows_and_refuses_bad_input(ledger, tmp_path):
    payrolls = PayrollService(ledger.service)
    ids = [start(ledger, payrolls, n) for n in range(1, 4)]
    for saga_id in ids:
        payrolls.run(saga_id)
    ids.append(start(ledger, payrolls, 4, policy="best-effort"))
    ledger.service.withdraw("employer", "982.91")  # 5.00 left: ann's 4.01 is paid, bob's not
    payrolls.run(ids[-1])
    with clients(ledger, tmp_path) as (teller, auditor):
        for client in (teller, auditor):
            body = client.get("/payrolls").json()
            assert set(body) == {"items", "next"} and body["next"] is None
            assert [i["saga_id"] for i in body["items"]] == ids[::-1]
        first = body["items"][0]
        assert (first["status"], first["paid"], first["failed"]) == ("completed_with_failures",
                                                                     1, 1)  # fmt: skip
        assert (first["total"], first["moved"], first["started_by"]) == ("8.03", "4.01", "clerk-4")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["started_at"])
        for item in body["items"]:
            shown = auditor.get(f"/payrolls/{item['saga_id'].removeprefix('payroll#')}")
            assert {k: v for k, v in item.items() if not k.startswith("started_")} == shown.json()
        assert every_item(auditor, "/payrolls", "after", limit="1") == body["items"]
        everything = ledger.events.read_all(0, MAX_READ_LIMIT)
        for params, code in [
            ({"limit": "0"}, "invalid_limit"),
            ({"limit": "101"}, "invalid_limit"),
            ({"limit": "ten"}, "invalid_limit"),
            ({"after": "!!"}, "invalid_cursor"),
            ({"after": cursor_of([0])}, "invalid_cursor"),
            ({"after": "x" * 5_000}, "invalid_cursor"),
        ]:
            problem(teller.get("/payrolls", params=params), 422, code)
        assert ledger.events.read_all(0, MAX_READ_LIMIT) == everything  # nothing was written
        problem(teller.get("/payrolls", headers={"Authorization": ""}), 401, "unauthorized")
        past_the_head = teller.get("/payrolls", params={"after": cursor_of([10**6])}).json()
        assert past_the_head == body
        assert teller.get("/payrolls", params={"after": cursor_of([1])}).json() == {
            "items": [], "next": None}  # fmt: skip
        assert "/payrolls" in teller.get("/openapi.json").json()["paths"]


def test_the_cli_lists_payrolls_as_a_table_and_as_json(
    sqlite_store_url, tmp_path, monkeypatch, capsys
):
    ledger = open_ledger(sqlite_store_url, f"sqlite:///{tmp_path / 'cli.read.db'}")
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="100.00")  # fmt: skip
    ledger.service.open_account("ann", owner="Ann", account_type="CHECKING")
    payrolls = PayrollService(ledger.service)
    ids = [payrolls.start("employer", f"ann,{n}.00,p{n}\n", idempotency_key=f"k{n}").saga_id
           for n in (1, 2)]  # fmt: skip
    payrolls.run(ids[0])
    ledger.close()
    cli = cli_against(sqlite_store_url, f"sqlite:///{tmp_path / 'cli.read.db'}", monkeypatch,
                      capsys)  # fmt: skip
    code, out, _ = cli("payroll", "list", "--json", "--limit", "1")
    page = json.loads(out)
    assert code == 0 and [i["saga_id"] for i in page["items"]] == ids[1:]
    assert page["items"][0]["status"] == "running" and page["next"]
    code, out, _ = cli("payroll", "list", "--json", "--after", page["next"])
    rest = json.loads(out)
    assert [(i["saga_id"], i["status"], i["moved_minor"]) for i in rest["items"]] == [
        (ids[0], "completed", 100)] and rest["next"] is None  # fmt: skip
    code, out, _ = cli("payroll", "list")
    assert code == 0 and out.index(ids[1]) < out.index(ids[0])  # ids whole, newest first
    code, _, err = cli("payroll", "list", "--limit", "0")
    assert code == 2 and "limit must be an integer from 1 to 100" in err
