"""The recent-activity feed (``GET /activity``) on every engine: every money movement once,
newest first, with its amount, kind and actor; the same list whatever the page size or the
feed window; one bounded feed read per request; and bad input refused with nothing written."""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventbank.application import recent_activity as activity
from eventbank.application.observability import Metrics
from eventbank.application.recent_activity import encode_cursor, recent_activity
from eventbank.application.transfer_search import InvalidCursor, InvalidLimit
from eventbank.application.write_path import current_actor
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.ports.event_store import MAX_READ_LIMIT, EventStore, RecordedEvent
from eventbank.wiring import Ledger, open_ledger
from tests.clock import Clock
from tests.conftest import ORDERED_ENGINES
from tests.paging import every_item
from tests.test_http import problem

ACTORS = ("till-1", "till-2", "ops")
# what an item says about its movement, the position, time and account version aside
Said = tuple[str, str, str, str, str | None, str | None, str | None, str, tuple]


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    ledger.service.clock = Clock()
    yield ledger
    ledger.close()


class Book:
    """Runs commands as a given actor, each at its own second, and writes down the movements
    each is expected to make (``groups``, oldest first), worked out here independently of the
    projection code the feed shares."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.groups: list[tuple[str, Counter[Said]]] = []  # (actor, movements) per command
        self.cents: dict[str, int] = {}  # what each account may still give

    @contextmanager
    def command(self, actor: str) -> Iterator[list[Said]]:
        said: list[Said] = []
        clock = self.ledger.service.clock
        assert isinstance(clock, Clock)
        clock.tick()
        token = current_actor.set(actor)
        try:
            yield said
        finally:
            current_actor.reset(token)
        self.groups.append((actor, Counter(said)))


def said(account: str, kind: str, amount: str, counterparty: str | None = None,
         ref: str | None = None, reverses: str | None = None, description: str = "",
         metadata: dict[str, str] | None = None) -> Said:  # fmt: skip
    return (account, kind, amount, "USD", counterparty, ref, reverses, description,
            tuple(sorted((metadata or {}).items())))  # fmt: skip


def said_by(item: dict[str, Any]) -> Said:
    return (item["account_id"], item["kind"], item["amount"], item["currency"],
            item["counterparty"], item["transfer_id"], item["reverses"], item["description"],
            tuple(sorted(item["metadata"].items())))  # fmt: skip


def money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def build(ledger: Ledger, rng: random.Random) -> Book:
    """Four accounts; a random mix of deposits, withdrawals and transfers, among which, at
    random places, a multi-leg transaction, a pending transfer later posted in part, one
    later voided, and a reversal of part of a transfer."""
    book, s = Book(ledger), ledger.service
    for name, opening in (("ann", 50_000), ("bob", 30_000), ("cat", 20_000), ("dan", 0)):
        with book.command(rng.choice(ACTORS)) as moves:
            s.open_account(name, owner=name.title(), account_type="CHECKING",
                           initial_deposit=money(opening) if opening else None)  # fmt: skip
            if opening:
                moves.append(said(name, "deposit", money(opening)))
        book.cents[name] = opening
    steps: list[str] = [rng.choice(["deposit", "withdraw", "transfer"]) for _ in range(14)]
    for special in ("transaction", "hold-posted", "hold-voided", "reversal"):
        steps.insert(rng.randrange(len(steps) + 1), special)
    for later in ("post", "void"):  # each after the hold it closes, some steps on
        held = steps.index(f"hold-{later}ed")
        steps.insert(rng.randrange(held + 1, len(steps) + 1), later)
    holds: dict[str, str] = {}
    plain: list[tuple[str, str, str, int]] = []  # transfers made: id, from, to, cents
    for step in steps:
        with book.command(rng.choice(ACTORS)) as moves:
            run(book, rng, step, moves, holds, plain)
    return book


def run(book: Book, rng: random.Random, step: str, moves: list[Said], holds: dict[str, str],
        plain: list[tuple[str, str, str, int]]) -> None:  # fmt: skip
    s, cents = book.ledger.service, book.cents
    rich = [name for name, c in cents.items() if c >= 1_000]
    payer = rng.choice(rich)
    payee = rng.choice([name for name in cents if name != payer])
    amount = rng.randrange(1, 1_000)
    meta = {"order": f"o-{rng.randrange(100)}"} if rng.random() < 0.5 else {}
    if step == "deposit":
        s.deposit(payee, money(amount), metadata=meta)
        moves.append(said(payee, "deposit", money(amount), metadata=meta))
        cents[payee] += amount
    elif step == "withdraw":
        s.withdraw(payer, money(amount), metadata=meta)
        moves.append(said(payer, "withdrawal", money(amount), metadata=meta))
        cents[payer] -= amount
    elif step == "transfer":
        tid = s.transfer(payer, payee, money(amount), metadata=meta).outcome["transfer_id"]
        moves += [
            said(payer, "transfer_out", money(amount), payee, tid, metadata=meta),
            said(payee, "transfer_in", money(amount), payer, tid, metadata=meta),
        ]
        cents[payer], cents[payee] = cents[payer] - amount, cents[payee] + amount
        plain.append((tid, payer, payee, amount))
    elif step == "transaction":
        payers = ["ann", "bob"]
        legs = [("ann", "debit", "9.00"), ("bob", "debit", "1.00"), ("cat", "credit", "8.00"),
                ("dan", "credit", "2.00")]  # fmt: skip
        txid = s.post_transaction(legs, currency="USD", description="order 3",
                                  metadata={"shop": "x"}).outcome["transaction_id"]  # fmt: skip
        moves += [said(a, f"transaction_{d}", m, None, txid, None, "order 3", {"shop": "x"})
                  for a, d, m in legs]  # fmt: skip
        for a, _, m in legs:
            cents[a] += (-1 if a in payers else 1) * int(m.replace(".", ""))
    elif step.startswith("hold-"):
        to = "dan" if step == "hold-posted" else "cat"
        tid = s.transfer("ann", to, "20.00", pending=True).outcome["transfer_id"]
        holds[step] = tid
        moves += [
            said("ann", "hold_out", "20.00", to, tid),
            said(to, "hold_in", "20.00", "ann", tid),
        ]
        cents["ann"] -= 2_000
    elif step == "post":
        tid = holds["hold-posted"]
        s.post_transfer(tid, "15.00")
        moves += [said("ann", "posted_out", "20.00", None, tid),
                  said("dan", "posted_in", "20.00", None, tid),
                  said("ann", "transfer_out", "15.00", "dan", tid),
                  said("dan", "transfer_in", "15.00", "ann", tid)]  # fmt: skip
        cents["ann"], cents["dan"] = cents["ann"] + 500, cents["dan"] + 1_500
    elif step == "void":
        tid = holds["hold-voided"]
        s.void_transfer(tid)
        moves += [said("ann", "voided_out", "20.00", None, tid),
                  said("cat", "voided_in", "20.00", None, tid)]  # fmt: skip
        cents["ann"] += 2_000
    elif step == "reversal":
        if not plain:  # nothing to reverse yet: make the transfer it reverses first
            run(book, rng, "transfer", moves, holds, plain)
        tid, frm, to, amount = plain[0]
        back = max(1, amount // 2)
        if cents[to] < back:
            s.deposit(to, money(back))
            moves.append(said(to, "deposit", money(back)))
            cents[to] += back
        rid = s.reverse(tid, money(back)).outcome["transfer_id"]
        moves += [
            said(to, "transfer_out", money(back), frm, rid, tid),
            said(frm, "transfer_in", money(back), to, rid, tid),
        ]
        cents[to], cents[frm] = cents[to] - back, cents[frm] + back


def follow(ledger: Ledger, limit: int | str, events: EventStore | None = None) -> list[dict]:
    """Every item of the feed, following ``next`` to its end."""
    items: list[dict] = []
    cursor = None
    for _ in range(10_000):
        page, cursor = recent_activity(events or ledger.events, ledger.reads, before=cursor,
                                       limit=limit)  # fmt: skip
        assert len(page) <= int(limit)
        items += page
        if cursor is None:
            return items
    raise AssertionError("the cursors never reached the feed's beginning")


def check(book: Book, items: list[dict[str, Any]], seed: int) -> None:
    """The items are every expected movement once, newest first, command by command."""
    positions = [item["position"] for item in items]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) == len(items)
    times = [item["recorded_at"] for item in items]
    assert times == sorted(times, reverse=True), seed
    oldest_first = items[::-1]
    assert len(oldest_first) == sum(sum(c.values()) for _, c in book.groups), seed
    at = 0
    for actor, expected in book.groups:
        size = sum(expected.values())
        made = oldest_first[at : at + size]
        at += size
        assert Counter(said_by(i) for i in made) == expected, (seed, actor, made)
        assert {i["actor"] for i in made} <= {actor}, seed
        assert len({i["recorded_at"] for i in made}) <= 1, seed  # one command, one time


def test_the_feed_lists_every_movement_once_newest_first(ledger):
    seed = random.randrange(2**32)
    book = build(ledger, random.Random(seed))
    items = follow(ledger, 200)
    check(book, items, seed)
    assert {i["kind"] for i in items} >= {
        "deposit", "withdrawal", "transfer_out", "transfer_in", "transaction_debit",
        "transaction_credit", "hold_out", "hold_in", "posted_out", "posted_in", "voided_out",
        "voided_in"}  # fmt: skip
    assert any(i["reverses"] for i in items)
    # each account's items are its history's movements, in order, saying what they say (all
    # but the balance after each, which the feed cannot know without folding the account)
    for account in book.cents:
        mine = [i for i in reversed(items) if i["account_id"] == account]
        history = ledger.queries.history(account, limit=MAX_READ_LIMIT)
        shared = set(history[0]) - {"balance_after"}
        assert shared >= {"version", "kind", "amount", "currency", "counterparty", "transfer_id",
                          "recorded_at", "metadata", "description", "reverses"}  # fmt: skip
        assert [{k: i[k] for k in shared} for i in mine] == [
            {k: m[k] for k in shared} for m in history
        ]


def test_small_pages_and_small_windows_list_what_one_big_page_does(ledger, monkeypatch):
    seed = random.randrange(2**32)
    book = build(ledger, random.Random(seed))
    ledger.runner.catch_up()  # as serve's runner keeps it: DynamoDB's feed starts there
    whole = follow(ledger, 200)
    check(book, whole, seed)
    for window in (activity.WINDOW, 7, 3):  # one workload for all three: 8 s on DynamoDB
        monkeypatch.setattr(activity, "WINDOW", window)
        for limit in (1, 2, 5, "200"):
            counting = CountingReads(ledger.events)
            assert follow(ledger, limit, counting) == whole, (seed, window, limit)
            # bounded: one feed read per request, of at most WINDOW events
            assert counting.reads and all(n <= window for n in counting.reads), seed
            assert counting.requests == len(counting.reads), seed
            if window == 1_000 and ledger.events.last_position() is not None:
                # dense positions: the whole feed is in the first window, so no page is short
                assert len(counting.reads) == -(-len(whole) // int(limit)), seed


class CountingReads:
    """The real store, with its feed reads counted (how many events each returned) and its
    ``last_position`` calls (one per request)."""

    def __init__(self, store: EventStore) -> None:
        self.store, self.requests = store, 0
        self.reads: list[int] = []

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        assert limit <= activity.WINDOW
        found = self.store.read_all(after_position, limit)
        self.reads.append(len(found))
        return found

    def last_position(self) -> int | None:
        self.requests += 1
        return self.store.last_position()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_cut_page_goes_on_below_its_last_item(ledger):
    s = ledger.service
    s.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit="10.00")
    for n in range(1, 4):
        s.deposit("ann", f"{n}.00")
    page, cursor = recent_activity(ledger.events, ledger.reads, limit=2)
    assert [i["amount"] for i in page] == ["3.00", "2.00"] and cursor is not None
    rest, end = recent_activity(ledger.events, ledger.reads, before=cursor, limit=2)
    assert [i["amount"] for i in rest] == ["1.00", "10.00"] and end is None
    assert recent_activity(ledger.events, ledger.reads, limit=2, before="") == (page, cursor)


@pytest.fixture(params=ORDERED_ENGINES)
def headed_ledger(request: pytest.FixtureRequest) -> Iterator[Ledger]:
    """A ledger whose feed has a head (SQLite, PostgreSQL): DynamoDB's has none, so a forged
    cursor past it is the engine's to refuse."""
    ledger = open_ledger(request.getfixturevalue(f"{request.param}_store_url"))
    ledger.service.clock = Clock()
    yield ledger
    ledger.close()


def test_a_cursor_past_the_head_reads_from_the_head(headed_ledger):
    ledger = headed_ledger
    assert ledger.events.last_position() is not None
    s = ledger.service
    s.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit="10.00")
    s.deposit("ann", "1.00")
    first = recent_activity(ledger.events, ledger.reads)
    for before in (10**6, 2**63, 10**40):  # past what SQLite and PostgreSQL integers hold
        assert (
            recent_activity(ledger.events, ledger.reads, before=encode_cursor(before, 1)) == first
        )


def test_an_empty_store_has_an_empty_feed(ledger):
    assert recent_activity(ledger.events, ledger.reads) == ([], None)


@pytest.fixture
def sqlite_ledger(sqlite_store_url: str) -> Iterator[Ledger]:
    """Input is checked before the store is read, so one engine shows it (the HTTP test below
    runs on every engine)."""
    ledger = open_ledger(sqlite_store_url)
    yield ledger
    ledger.close()


@pytest.mark.parametrize("limit", [0, 201, -1, "0", "201", "ten", "", "1.5", " 5", True, 2.0])
def test_a_bad_limit_is_refused(sqlite_ledger, limit):
    with pytest.raises(InvalidLimit):
        recent_activity(sqlite_ledger.events, sqlite_ledger.reads, limit=limit)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


BAD_CURSORS = ["!!", "abc", "a" * 300, cursor_of([0, 5]), cursor_of([5, 0]), cursor_of(["5", 5]),
               cursor_of([True, 5]), cursor_of([5]), cursor_of({"before": 5}), cursor_of([5, 5, 5]),
               cursor_of([10**40 + 1, 5]), cursor_of([5, 10**40 + 1]), cursor_of([5.0, 5]),
               "e30"]  # fmt: skip


@pytest.mark.parametrize("cursor", BAD_CURSORS)
def test_a_bad_cursor_is_refused(sqlite_ledger, cursor):
    with pytest.raises(InvalidCursor):
        recent_activity(sqlite_ledger.events, sqlite_ledger.reads, before=cursor)


@pytest.fixture
def clients(ledger: Ledger, tmp_path) -> Iterator[tuple[TestClient, TestClient]]:
    """The app in process over the ledger: a teller's client and an auditor's."""
    tokens_file = tmp_path / "tokens.json"
    teller = add_token(tokens_file, "till-7", "teller")
    auditor = add_token(tokens_file, "books", "auditor")
    app = create_app(ledger, TokenStore.load(tokens_file), Metrics())
    with TestClient(app, headers={"Authorization": f"Bearer {teller}"}) as one, \
         TestClient(app, headers={"Authorization": f"Bearer {auditor}"}) as other:  # fmt: skip
        yield one, other


def test_http_pages_the_feed_and_refuses_bad_input(ledger, clients):
    teller, auditor = clients
    for name, deposit in (("ann", "100.00"), ("bob", None)):
        body = {"account_id": name, "owner": name.title(), "type": "CHECKING",
                **({"initial_deposit": deposit} if deposit else {})}  # fmt: skip
        assert teller.post("/accounts", json=body).status_code == 201
    assert teller.post("/transfers", json={"from_account_id": "ann", "to_account_id": "bob",
                                           "amount": "12.50", "metadata": {"order": "o-1"}},
                       ).status_code == 201  # fmt: skip
    assert teller.post("/accounts/bob/withdrawals", json={"amount": "2.50"}).status_code == 201
    page = auditor.get("/activity")
    assert page.status_code == 200, page.text
    body = page.json()
    assert set(body) == {"items", "next"} and body["next"] is None
    first = body["items"][0]
    assert set(first) == {"position", "recorded_at", "account_id", "version", "kind", "amount",
                          "currency", "counterparty", "transfer_id", "metadata", "description",
                          "reverses", "actor"}  # fmt: skip
    assert [(i["account_id"], i["kind"], i["amount"], i["counterparty"], i["actor"])
            for i in body["items"]] == [
        ("bob", "withdrawal", "2.50", None, "till-7"),
        ("bob", "transfer_in", "12.50", "ann", "till-7"),
        ("ann", "transfer_out", "12.50", "bob", "till-7"),
        ("ann", "deposit", "100.00", None, "till-7"),
    ]  # fmt: skip
    transfer = body["items"][1]
    assert transfer["metadata"] == {"order": "o-1"} and transfer["transfer_id"]
    assert transfer["transfer_id"] == body["items"][2]["transfer_id"]
    assert every_item(auditor, "/activity", "before", limit="1") == body["items"]
    everything = ledger.events.read_all(0, MAX_READ_LIMIT)
    for params, code in [
        ({"limit": "0"}, "invalid_limit"),
        ({"limit": "201"}, "invalid_limit"),
        ({"limit": "ten"}, "invalid_limit"),
        ({"before": "!!"}, "invalid_cursor"),
        ({"before": cursor_of([0, 1])}, "invalid_cursor"),
        ({"before": "x" * 5_000}, "invalid_cursor"),
    ]:
        problem(auditor.get("/activity", params=params), 422, code)
    assert ledger.events.read_all(0, MAX_READ_LIMIT) == everything  # nothing was written
    problem(auditor.get("/activity", headers={"Authorization": ""}), 401, "unauthorized")
    assert auditor.get("/activity", params={"before": encode_cursor(1, 1)}).json() == {
        "items": [], "next": None}  # fmt: skip
    assert "/activity" in auditor.get("/openapi.json").json()["paths"]
