"""Transfer search on every engine: the transfers read model, its indexes (by account, by
metadata pair, by time), bounded pages with cursors, rebuilds, reversal links, and bad input."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient

from eventbank.application import transfer_search
from eventbank.application.observability import Metrics
from eventbank.application.transfer_search import find_transfers
from eventbank.engines.dynamodb import read_store as dynamo_reads
from eventbank.engines.postgres import read_store as postgres_reads
from eventbank.engines.sqlite import read_store as sqlite_reads
from eventbank.engines.urls import open_read_store, sqlite_path
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.ports.read_store import END_OF_TIME, TransactionRow, TransferIndex
from eventbank.wiring import Ledger, open_ledger
from tests.clock import Clock
from tests.test_cli import cli_against
from tests.test_http import problem

START = datetime(2026, 12, 5, 23, 59, 57, tzinfo=UTC)  # the movements straddle a UTC day


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    ledger.service.clock = Clock(START)
    yield ledger
    ledger.close()


def search(ledger: Ledger, **filters) -> list[str]:
    """Every match's id, following the cursors to the end."""
    ids, after = [], None
    while True:
        items, after = find_transfers(ledger.reads, after=after, **filters)
        ids += [item["transfer_id"] for item in items]
        if after is None:
            return ids


@pytest.fixture
def book(ledger: Ledger) -> dict[str, str]:
    """A transfer, a pending transfer posted in part, a voided one, a transaction and reversals
    of the first and of the transaction; their ids by name."""
    s, clock = ledger.service, ledger.service.clock
    assert isinstance(clock, Clock)
    tick = clock.tick
    for name in ("ann", "bob", "fee"):
        s.open_account(name, owner=name.title(), account_type="CHECKING",
                       initial_deposit="100.00" if name == "ann" else None)  # fmt: skip
    tick()
    ids = {"plain": s.transfer("ann", "bob", "10.00", metadata={"order": "o-1", "shop": "x"})}
    tick()
    ids["held"] = s.transfer("ann", "bob", "20.00", pending=True, metadata={"order": "o-2"})
    tick()
    s.post_transfer(ids["held"].outcome["transfer_id"], "15.00")
    tick()
    ids["void"] = s.transfer("ann", "fee", "1.00", pending=True, metadata={"shop": "x"})
    tick()
    s.void_transfer(ids["void"].outcome["transfer_id"])
    tick()
    ids["split"] = s.post_transaction(
        [("ann", "debit", "9.00"), ("bob", "credit", "8.00"), ("fee", "credit", "1.00")],
        currency="USD", description="order 3", metadata={"order": "o-3", "shop": "x"},
    )  # fmt: skip
    tick()
    ids["back"] = s.reverse(ids["plain"].outcome["transfer_id"], "4.00")
    tick()
    ids["unsplit"] = s.reverse(ids["split"].outcome["transaction_id"], "4.50")
    return {name: r.outcome.get("transfer_id") or r.outcome["transaction_id"]
            for name, r in ids.items()}  # fmt: skip


ORDER = ["plain", "held", "void", "split", "back", "unsplit"]


def test_each_index_finds_its_transfers_in_time_order(ledger, book):
    named = {v: k for k, v in book.items()}
    assert [named[i] for i in search(ledger)] == ORDER
    assert [named[i] for i in search(ledger, account_id="fee")] == ["void", "split", "unsplit"]
    assert [named[i] for i in search(ledger, metadata={"shop": "x"})] == ["plain", "void", "split"]
    both = search(ledger, metadata={"shop": "x", "order": "o-3"})
    assert [named[i] for i in both] == ["split"]
    assert [named[i] for i in search(ledger, account_id="fee", metadata={"shop": "x"})] == [
        "void", "split"]  # fmt: skip
    assert search(ledger, account_id="nobody") == []


def test_status_and_time_range_filter(ledger, book):
    named = {v: k for k, v in book.items()}
    assert [named[i] for i in search(ledger, status="voided")] == ["void"]
    assert [named[i] for i in search(ledger, status="pending")] == []
    items, _ = find_transfers(ledger.reads, status="posted", account_id="bob")
    assert [named[i["transfer_id"]] for i in items] == ["plain", "held", "split", "back", "unsplit"]
    every = find_transfers(ledger.reads)[0]
    times = [item["created_at"] for item in every]
    assert times == sorted(times) and times[0][:10] != times[-1][:10]  # over two UTC days
    middle = search(ledger, from_=times[1], to=times[3])  # from inclusive, to exclusive
    assert [named[i] for i in middle] == ["held", "void"]
    assert [named[i] for i in search(ledger, from_=times[4].replace("Z", "+00:00"))] == ORDER[4:]


def test_views_show_links_amounts_and_status(ledger, book):
    items = {i["transfer_id"]: i for i in find_transfers(ledger.reads)[0]}
    plain, held, void = items[book["plain"]], items[book["held"]], items[book["void"]]
    assert (plain["status"], plain["amount"], plain["from_account_id"], plain["to_account_id"]
            ) == ("posted", "10.00", "ann", "bob")  # fmt: skip
    assert plain["metadata"] == {"order": "o-1", "shop": "x"}
    assert (plain["reversed_by"], plain["reversed_amount"]) == ([book["back"]], "4.00")
    back = items[book["back"]]
    assert (back["reverses"], back["from_account_id"], back["amount"]) == (
        book["plain"], "bob", "4.00")  # fmt: skip
    assert (held["status"], held["amount"], held["pending_amount"]) == ("posted", "15.00", "20.00")
    assert (void["status"], void["amount"], void["pending_amount"]) == ("voided", "0.00", "1.00")
    split = items[book["split"]]
    assert (split["kind"], split["amount"], split["accounts"], split["description"]) == (
        "transaction", "9.00", ["ann", "bob", "fee"], "order 3")  # fmt: skip
    assert (split["reversed_by"], split["reversed_amount"]) == ([book["unsplit"]], "4.50")
    assert items[book["unsplit"]]["reverses"] == book["split"]

    view = ledger.queries.transfer(book["split"])
    assert (view["kind"], view["reversed_by"], view["metadata"]) == (
        "transaction", [book["unsplit"]], {"order": "o-3", "shop": "x"})  # fmt: skip
    assert {(leg["account_id"], leg["direction"], leg["amount"]) for leg in view["legs"]} == {
        ("ann", "debit", "9.00"), ("bob", "credit", "8.00"), ("fee", "credit", "1.00")}  # fmt: skip
    assert ledger.queries.transfer(book["back"])["reverses"] == book["plain"]


def test_pages_are_bounded_and_cursors_cover_every_match_once(ledger, book, monkeypatch):
    every = search(ledger)
    for limit in (1, 2, 5):
        assert search(ledger, limit=limit) == every
    items, after = find_transfers(ledger.reads, limit=2)
    assert len(items) == 2 and after is not None
    # a rare match with a small scan budget: short (even empty) pages, each with a cursor
    monkeypatch.setattr(transfer_search, "SEARCH_SCAN", 2)
    monkeypatch.setattr(transfer_search, "SEARCH_CHUNK", 1)
    first, after = find_transfers(ledger.reads, status="voided", limit=1)
    assert first == [] and after is not None
    assert search(ledger, status="voided", limit=1) == [book["void"]]
    assert search(ledger, limit=1) == every


def test_a_rebuild_gives_the_same_results(ledger, book):
    before = find_transfers(ledger.reads, limit=50)[0]
    ledger.runner.rebuild()
    assert find_transfers(ledger.reads, limit=50)[0] == before
    assert search(ledger, metadata={"order": "o-2"}) == [book["held"]]


@pytest.mark.parametrize(("filters", "code"), [
    ({"from_": "2026-12-06T00:00:00Z", "to": "2026-12-05T00:00:00Z"}, "invalid_time_range"),
    ({"from_": "2026-12-05"}, "invalid_time"),
    ({"to": "2026-13-05T00:00:00Z"}, "invalid_time"),
    ({"to": "2026-12-05T00:00:00"}, "invalid_time"),  # no offset
    ({"limit": 0}, "invalid_limit"),
    ({"limit": "201"}, "invalid_limit"),
    ({"limit": "ten"}, "invalid_limit"),
    ({"metadata": {"bad key": "v"}}, "invalid_metadata_filter"),
    ({"status": "done"}, "invalid_status"),
    ({"after": "not-a-cursor"}, "invalid_cursor"),
    ({"after": transfer_search.encode_cursor(("yesterday", "x"))}, "invalid_cursor"),
])  # fmt: skip
def test_bad_input_is_refused_with_its_code(ledger, filters, code):
    with pytest.raises(transfer_search.InvalidInput) as refused:
        find_transfers(ledger.reads, **filters)
    assert refused.value.code == code


@pytest.mark.parametrize("engine", ["sqlite", "postgres", "dynamodb"])
def test_movements_written_before_metadata_existed_read_as_having_none(
    engine, request, monkeypatch
):
    """A read store made by the release before (no metadata columns or attributes) is migrated
    when opened; its movements read with empty metadata, and it has a transfers model."""
    url = request.getfixturevalue(f"{engine}_read_store_url")
    old = TransactionRow("old", 2, "transfer_out", 500, "USD", "bob", "t-1", 100,
                         "2026-01-01T00:00:00+00:00")  # fmt: skip
    if engine == "dynamodb":  # no schema: an item without the attributes, as written before
        store = open_read_store(url)
        store._ddb.put_item(TableName=store.table, Item=dynamo_reads._move_item(old))
        store.close()
    else:
        module = {"sqlite": sqlite_reads, "postgres": postgres_reads}[engine]
        with monkeypatch.context() as before:
            before.setattr(module, "_MIGRATIONS", module._MIGRATIONS[:-1])
            open_read_store(url).close()  # the schema of the release before
        insert = ("INSERT INTO account_transactions (account_id, version, kind, amount_minor,"
                  " currency, counterparty, transfer_id, balance_after_minor, recorded_at)"
                  " VALUES ('old', 2, 'transfer_out', 500, 'USD', 'bob', 't-1', 100,"
                  " '2026-01-01T00:00:00+00:00')")  # fmt: skip
        if engine == "sqlite":
            with sqlite3.connect(sqlite_path(url)) as conn:
                conn.execute(insert)
        else:
            with psycopg.connect(url) as conn:
                conn.execute(insert)
    store = open_read_store(url)
    try:
        (row,) = store.transactions("old")
        assert row == old and (row.metadata, row.description, row.reverses) == ({}, "", None)
        assert store.transfers_page(TransferIndex(), ("", ""), END_OF_TIME, 10) == []
    finally:
        store.close()


@pytest.fixture
def reader(ledger: Ledger, tmp_path) -> Iterator[TestClient]:
    """The app in process over the ledger, with an auditor's token (a reader)."""
    tokens_file = tmp_path / "tokens.json"
    token = add_token(tokens_file, "search-auditor", "auditor")
    app = create_app(ledger, TokenStore.load(tokens_file), Metrics())
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


def test_http_finds_pages_and_refuses_bad_input(ledger, book, reader):
    named = {v: k for k, v in book.items()}
    page = reader.get("/transfers", params={"metadata.shop": "x", "account_id": "fee"})
    assert page.status_code == 200, page.text
    assert [named[i["transfer_id"]] for i in page.json()["items"]] == ["void", "split"]
    assert page.json()["next"] is None
    ids, after = [], None
    while True:
        body = reader.get(
            "/transfers", params={"limit": "2", **({"after": after} if after else {})}
        ).json()
        ids += [named[i["transfer_id"]] for i in body["items"]]
        if (after := body["next"]) is None:
            break
    assert ids == ORDER
    split = reader.get(f"/transfers/{book['split']}").json()
    assert (split["kind"], split["reversed_by"], len(split["legs"])) == (
        "transaction", [book["unsplit"]], 3)  # fmt: skip
    assert reader.get(f"/transactions/{book['split']}").json()["legs"] == split["legs"]
    problem(reader.get(f"/transactions/{book['plain']}"), 404, "transfer_not_found")
    plain = reader.get(f"/transfers/{book['plain']}").json()
    assert (plain["metadata"], plain["reversed_amount"]) == ({"order": "o-1", "shop": "x"}, "4.00")
    held = reader.get(f"/transfers/{book['held']}").json()  # every movement, on both accounts
    assert [(m["account_id"], m["kind"], m["amount"]) for m in held["movements"]] == [
        ("ann", "hold_out", "20.00"), ("bob", "hold_in", "20.00"),
        ("ann", "posted_out", "20.00"), ("ann", "transfer_out", "15.00"),
        ("bob", "posted_in", "20.00"), ("bob", "transfer_in", "15.00")]  # fmt: skip
    assert {m["actor"] for m in held["movements"]} == {"local"}  # the library's own actor
    assert page.json()["items"][0]["movements"] is None  # a search lists no movements
    for params, code in [
        ({"from": "2026-12-06T00:00:00Z", "to": "2026-12-05T00:00:00Z"}, "invalid_time_range"),
        ({"from": "yesterday"}, "invalid_time"),
        ({"limit": "0"}, "invalid_limit"),
        ({"metadata.bad key": "v"}, "invalid_metadata_filter"),
        ({"status": "done"}, "invalid_status"),
        ({"after": "!!"}, "invalid_cursor"),
    ]:
        problem(reader.get("/transfers", params=params), 422, code)
    assert "/transfers" in reader.get("/openapi.json").json()["paths"]


def test_cli_lists_and_refuses_bad_input(store_url, tmp_path, capsys, monkeypatch):
    run = cli_against(store_url, f"sqlite:///{tmp_path / 'r.db'}", monkeypatch, capsys)
    assert run("init")[0] == 0
    for name in ("ann", "bob"):
        assert run("open", name, "--owner", name, "--type", "CHECKING",
                   "--initial-deposit", "100")[0] == 0  # fmt: skip
    assert run("transfer", "ann", "bob", "5", "--meta", "order=o-9")[0] == 0
    assert run("transfer", "bob", "ann", "7")[0] == 0
    code, shown, _ = run("transfers", "--meta", "order=o-9", "--json")
    [found] = json.loads(shown)["items"]
    assert (found["amount"], found["metadata"]) == ("5.00", {"order": "o-9"})
    code, shown, _ = run("transfers", "--meta", "order=o-9")  # a table, folded to the width
    assert code == 0 and "5.00" in shown and "7.00" not in shown
    code, shown, _ = run("transfers", "--account", "ann", "--limit", "1", "--json")
    first = json.loads(shown)
    assert code == 0 and len(first["items"]) == 1 and first["next"]
    code, shown, _ = run("transfers", "--account", "ann", "--after", first["next"], "--json")
    assert [i["amount"] for i in json.loads(shown)["items"]] == ["7.00"]
    for args in (["--from", "2026-12-06T00:00:00Z", "--to", "2026-12-05T00:00:00Z"],
                 ["--limit", "x"], ["--meta", "novalue"], ["--status", "done"],
                 ["--after", "!!"], ["--to", "soon"]):  # fmt: skip
        code, _, err = run("transfers", *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (args, err)
