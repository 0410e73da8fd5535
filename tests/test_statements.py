"""Balances at a past instant and statements of a period (application/statements.py), on every
engine: equal to a replay of the events recorded by then, for random histories with multi-leg
transactions, reversals and pending transfers; fast through the snapshot history; bad input
refused with stable codes; over HTTP (JSON and CSV) and from the command line."""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbank.application import statements
from eventbank.application.ids import new_id
from eventbank.application.observability import Metrics
from eventbank.application.statements import (
    InvalidAsOf,
    InvalidPeriod,
    StatementTooLong,
    balance_as_of,
    parse_as_of,
    parse_period,
    recorded_at,
    statement,
)
from eventbank.domain import account as domain
from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import AccountNotFound, InvalidInput, RuleViolation
from eventbank.domain.events import ACCOUNT, FundsDeposited, event_from_data
from eventbank.domain.money import format_minor
from eventbank.engines.postgres import event_store as postgres_events
from eventbank.engines.sqlite import event_store as sqlite_events
from eventbank.engines.urls import open_store, sqlite_path
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.ports.event_store import (
    EventStore,
    NewEvent,
    RecordedEvent,
    Snapshot,
    chained,
    stream_head,
)
from eventbank.wiring import Ledger, open_ledger
from tests.clock import START, Clock
from tests.test_cli import cli_against
from tests.test_http import problem

_runs = itertools.count()
SIGNS = {"deposit": 1, "transfer_in": 1, "transaction_credit": 1,
         "withdrawal": -1, "transfer_out": -1, "transaction_debit": -1}  # fmt: skip


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(store_url: str, clock: Clock) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    ledger.service.clock = clock
    yield ledger
    ledger.close()


def engine_of(ledger: Ledger) -> str:
    return type(ledger.events).__name__


# ------------------------------------------------------------------ the reference: a replay


def replayed(events: list[RecordedEvent], instant: datetime) -> domain.Account | None:
    """The account folded from every event recorded at or before ``instant``: no search, no
    snapshot."""
    return domain.replay(
        event_from_data(e.event_type, dict(e.data), e.schema_version)
        for e in events
        if recorded_at(e) <= instant
    )


def check_as_of(
    ledger: Ledger, account_id: str, events: list[RecordedEvent], instant: datetime
) -> None:
    """as_of equals the replay of ``events`` (the account's stream) recorded by ``instant``."""
    expected = replayed(events, instant)
    if expected is None:
        with pytest.raises(AccountNotFound):
            balance_as_of(ledger.events, account_id, instant, now=ledger.service.clock())
        return
    answer = balance_as_of(ledger.events, account_id, instant, now=ledger.service.clock())
    assert answer == {**domain.describe_account(expected), "as_of": utc_text(instant)}


def check_statement(
    ledger: Ledger, account_id: str, events: list[RecordedEvent], start: datetime, end: datetime
) -> None:
    """Opening + lines = closing; each line's running balance; the lines are exactly the
    movements of ``events`` (the account's stream) in the period; the opening and closing are
    the replays' balances."""
    closing = replayed(events, end)
    if closing is None:
        with pytest.raises(AccountNotFound):
            statement(ledger.events, account_id, start, end, now=ledger.service.clock())
        return
    found = statement(ledger.events, account_id, start, end, now=ledger.service.clock())
    opening = replayed(events, start - timedelta(microseconds=1))
    assert found.opening_minor == (opening.balance_minor if opening else 0)
    assert found.closing_minor == closing.balance_minor
    running = found.opening_minor
    for line in found.lines:
        running += line.amount_minor
        assert line.balance_after_minor == running
    assert running == found.closing_minor
    assert found.opening_minor + found.total_in_minor - found.total_out_minor == running
    moved = [(e.version, SIGNS[kind(e)] * e.data["amount_minor"])
             for e in events if start <= recorded_at(e) <= end and kind(e) in SIGNS]  # fmt: skip
    assert [(line.version, line.amount_minor) for line in found.lines] == moved


def kind(event: RecordedEvent) -> str:
    """A stored event's movement kind, worked out here without the projection ("": none)."""
    if event.event_type == "LegPosted":
        return f"transaction_{event.data['direction']}"
    kinds = {"FundsDeposited": "deposit", "FundsWithdrawn": "withdrawal",
             "TransferredOut": "transfer_out", "TransferredIn": "transfer_in"}  # fmt: skip
    return kinds.get(event.event_type, "")


# ------------------------------------------------------------------ random histories

ACCOUNTS = 3
amounts = st.integers(min_value=1, max_value=3_000)
step = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, ACCOUNTS - 1), amounts),
    st.tuples(st.just("withdraw"), st.integers(0, ACCOUNTS - 1), amounts),
    st.tuples(st.just("transfer"), st.integers(0, ACCOUNTS - 1), st.integers(1, ACCOUNTS - 1),
              amounts),
    st.tuples(st.just("pending"), st.integers(0, ACCOUNTS - 1), st.integers(1, ACCOUNTS - 1),
              amounts),
    st.tuples(st.just("post"), st.integers(0, 50), st.booleans()),
    st.tuples(st.just("transaction"), st.integers(0, ACCOUNTS - 1), amounts, amounts),
    st.tuples(st.just("reverse"), st.integers(0, 50), st.booleans()),
)  # fmt: skip
history = st.lists(st.tuples(step, st.sampled_from([0, 0, 1, 60, 3_600])), min_size=1,
                   max_size=30)  # fmt: skip


def play(ledger: Ledger, clock: Clock, names: list[str], steps: list) -> None:
    """Run ``steps`` on the ledger, the clock moving 0 s to an hour after each (several events
    at one instant included); a step a rule refuses is skipped, as a client would see it."""
    service, moved, pending = ledger.service, [], []
    for (kind, *args), pause in steps:
        with contextlib.suppress(RuleViolation, InvalidInput):
            if kind in ("deposit", "withdraw"):
                getattr(service, kind)(names[args[0]], format_minor(args[1], "USD"),
                                       metadata={"step": kind})  # fmt: skip
            elif kind in ("transfer", "pending"):
                source, target = names[args[0]], names[(args[0] + args[1]) % ACCOUNTS]
                receipt = service.transfer(source, target, format_minor(args[2], "USD"),
                                           pending=kind == "pending")  # fmt: skip
                (pending if kind == "pending" else moved).append(receipt.outcome["transfer_id"])
            elif kind == "post" and pending:
                tid = pending.pop(args[0] % len(pending))
                if args[1]:
                    service.post_transfer(tid)
                    moved.append(tid)
                else:
                    service.void_transfer(tid)
            elif kind == "transaction":
                debit = names[args[0]]
                credits = [n for n in names if n != debit]
                total = args[1] + args[2]
                legs = [(debit, "debit", format_minor(total, "USD")),
                        (credits[0], "credit", format_minor(args[1], "USD")),
                        (credits[1], "credit", format_minor(args[2], "USD"))]  # fmt: skip
                receipt = service.post_transaction(legs, currency="USD", description="split")
                moved.append(receipt.outcome["transaction_id"])
            elif kind == "reverse" and moved:
                original = moved[args[0] % len(moved)]
                service.reverse(original, None if args[1] else "0.02")
        clock.advance(pause)


def instants_of(streams: list[list[RecordedEvent]], now: datetime) -> list[datetime]:
    """Every instant an event was recorded at, a tick before and after each (up to ``now``),
    and a day before the first."""
    times = {recorded_at(e) for events in streams for e in events}
    tick = timedelta(microseconds=1)
    around = {t + d for t in times for d in (-tick, timedelta(0), tick)}
    return sorted(at for at in around | {START - timedelta(days=1)} if at <= now)


# Per engine: examples, and instants checked per account (None: every one that matters); few
# on the server engines, where every read is a round trip, so each stays within ~20 s.
EXAMPLES = {"SqliteEventStore": (30, None), "PostgresEventStore": (8, 20),
            "DynamoEventStore": (4, 12)}  # fmt: skip


def test_as_of_and_statements_equal_a_replay_of_the_events_recorded_by_then(ledger, clock):
    """Random histories on every engine: as_of at every instant that matters (a sample on the
    server engines) equals the replay of the events recorded by then; statements over random
    periods add up."""

    examples, sampled = EXAMPLES[engine_of(ledger)]

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(
        steps=history,
        every=st.integers(1, 6),
        bounds=st.lists(st.integers(0, 10**6), min_size=6, max_size=6),
        randoms=st.randoms(use_true_random=False),
    )
    def check(steps, every, bounds, randoms):
        run = next(_runs)
        names = [f"r{run}-{i}" for i in range(ACCOUNTS)]
        clock.now = START
        ledger.service.snapshot_every = every  # snapshots inside the histories, and between
        for name in names:
            ledger.service.open_account(name, owner="Ann", account_type="CHECKING",
                                        initial_deposit="50")  # fmt: skip
            clock.advance(1)
        play(ledger, clock, names, steps)
        streams = [ledger.events.read_stream(name) for name in names]
        instants = instants_of(streams, clock.now)
        for name, events in zip(names, streams, strict=True):
            checked = instants
            if sampled is not None and len(instants) > sampled:
                checked = [instants[0], instants[-1], *randoms.sample(instants, sampled - 2)]
            for instant in checked:
                check_as_of(ledger, name, events, instant)
            for first, second in zip(bounds[::2], bounds[1::2], strict=True):
                start, end = sorted(instants[i % len(instants)] for i in (first, second))
                check_statement(ledger, name, events, start, end)
            # the whole history, whatever the bounds drawn
            check_statement(ledger, name, events, START - timedelta(days=1), clock.now)

    check()


# ------------------------------------------------------------------ the snapshot history


class CountingReads:
    """The store, counting the events and snapshots every read returns."""

    def __init__(self, store: EventStore):
        self._store, self.events, self.snapshot_reads = store, 0, []

    def read_stream(self, *args: Any, **kwargs: Any) -> list[RecordedEvent]:
        found = self._store.read_stream(*args, **kwargs)
        self.events += len(found)
        return found

    def load_snapshot(self, aggregate_id: str, max_version: int | None = None) -> Any:
        self.snapshot_reads.append(max_version)
        return self._store.load_snapshot(aggregate_id, max_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def deposit_until(ledger: Ledger, clock: Clock, account_id: str, last_version: int) -> None:
    """Deposits of 0.01 a minute apart up to ``last_version``, appended up to 25 at a time (as
    the service writes them, recorded_at and chain included, in far fewer round trips), with
    the service's snapshot at every multiple of ``snapshot_every``, as it takes them."""
    head = stream_head(ledger.events, account_id)
    assert head is not None
    version, previous, every = head.version, head.hash, ledger.service.snapshot_every
    while version < last_version:
        batch = []
        for v in range(version + 1, min(last_version, version // 25 * 25 + 25) + 1):
            clock.advance(60)
            data = FundsDeposited(account_id, 1, "USD", "test").to_data()
            batch.append(NewEvent(new_id(), account_id, ACCOUNT, v, "FundsDeposited",
                                  FundsDeposited.SCHEMA_VERSION, data,
                                  {"recorded_at": clock.now.isoformat()}))  # fmt: skip
        stored = chained(batch, {account_id: previous})
        ledger.events.append(stored, {account_id: version})
        version, previous = batch[-1].version, stored[-1].hash
        if version % every == 0:
            ledger.service.take_snapshot(account_id)


def test_an_early_instant_of_a_long_account_is_folded_from_the_snapshot_history(ledger, clock):
    """2,000 events, a snapshot every 100 (the default): as_of near the start, in the middle
    and now each read a binary search's probes plus fewer than 100 events, not 2,000."""
    service = ledger.service
    assert service.snapshot_every == 100
    service.open_account("long", owner="Lee", account_type="CHECKING")
    deposit_until(ledger, clock, "long", 2_000)
    assert ledger.events.load_snapshot("long", 1_999).version == 1_900
    clock.advance(60)
    events = ledger.events.read_stream("long")
    assert len(events) == 2_000
    probes = math.ceil(math.log2(len(events))) + 1  # the head, then the search
    for index in (150, 1_234, len(events) - 1):
        instant = recorded_at(events[index]) + timedelta(seconds=30)
        counting = CountingReads(ledger.events)
        answer = balance_as_of(counting, "long", instant, now=clock.now)
        expected = replayed(events, instant)
        assert answer["balance"] == format_minor(expected.balance_minor, "USD")
        assert answer["version"] == index + 1
        assert counting.snapshot_reads == [index + 1]
        assert counting.events <= probes + service.snapshot_every, counting.events
    counting = CountingReads(ledger.events)
    found = statement(counting, "long", recorded_at(events[300]), recorded_at(events[309]),
                      now=clock.now)  # fmt: skip
    assert [line.version for line in found.lines] == list(range(301, 311))
    assert counting.events <= 2 * probes + service.snapshot_every + 10, counting.events


def test_stores_made_before_the_snapshot_history_keep_their_snapshots(
    store_url: str, monkeypatch: pytest.MonkeyPatch
):
    """SQLite and PostgreSQL migrate the snapshots table keeping its rows; on DynamoDB the
    newest-snapshot item an older eventbank wrote still answers a bounded load."""
    old = Snapshot("acct", "Account", 200, 4, {"written": "before"})
    if store_url.startswith("dynamodb"):
        store = open_store(store_url)
        item = {"PK": {"S": "SNAP#acct"}, "SK": {"N": "0"}, "aggregate_type": {"S": "Account"},
                "version": {"N": "200"}, "state_schema_version": {"N": "4"},
                "state": {"S": '{"written":"before"}'}}  # fmt: skip
        store._ddb.put_item(TableName=store.table, Item=item)
    else:
        module = sqlite_events if store_url.startswith("sqlite") else postgres_events
        with monkeypatch.context() as before:
            before.setattr(module, "_MIGRATIONS", module._MIGRATIONS[:1])
            open_store(store_url).close()  # the schema of the release before
        insert = ("INSERT INTO snapshots VALUES ('acct', 'Account', 200, 4,"
                  " '{\"written\":\"before\"}')")  # fmt: skip
        if store_url.startswith("sqlite"):
            with sqlite3.connect(sqlite_path(store_url)) as conn:
                conn.execute(insert)
        else:
            with psycopg.connect(store_url) as conn:
                conn.execute(insert)
        store = open_store(store_url)
        assert store.schema_version() == module.SCHEMA_VERSION == 2
    try:
        assert store.load_snapshot("acct") == old
        assert store.load_snapshot("acct", 250) == old and store.load_snapshot("acct", 199) is None
        newer = Snapshot("acct", "Account", 300, 4, {"written": "after"})
        store.save_snapshot(newer)
        assert store.load_snapshot("acct") == newer
        assert store.load_snapshot("acct", 299) == (None if "dynamodb" in store_url else old)
    finally:
        store.close()


# ------------------------------------------------------------------ bad input


def test_bad_instants_and_periods_are_refused_with_stable_codes(ledger, clock):
    ledger.service.open_account("ann", owner="Ann", account_type="CHECKING", initial_deposit="5")
    clock.advance(3_600)
    now = clock.now
    written = len(ledger.events.read_stream("ann"))
    for text in ("", "yesterday", "2026-12-05", "2026-12-05T09:00:00", "2026-12-05T25:00:00Z",
                 "2026-02-30T00:00:00Z", "1969-12-31T23:59:59Z", "2026-12-05T09:00:00+2:00",
                 "2026-12-05T09:00:00Z trailing", "99999-01-01T00:00:00Z"):  # fmt: skip
        with pytest.raises(InvalidAsOf) as refused:
            parse_as_of(text)
        assert refused.value.code == "invalid_as_of" and repr(text) in str(refused.value)
    assert parse_as_of(" 2026-12-05t10:00:00.5+01:00 ") == datetime(2026, 12, 5, 9, 0, 0, 500_000,
                                                                    tzinfo=UTC)  # fmt: skip
    with pytest.raises(InvalidAsOf, match="in the future"):
        balance_as_of(ledger.events, "ann", now + timedelta(microseconds=1), now=now)
    with pytest.raises(AccountNotFound, match="did not exist at"):
        balance_as_of(ledger.events, "ann", START - timedelta(microseconds=1), now=now)
    with pytest.raises(AccountNotFound):
        balance_as_of(ledger.events, "nobody", now, now=now)
    with pytest.raises(InvalidInput):
        balance_as_of(ledger.events, "bad id!", now, now=now)

    assert parse_period("2026-11-01", "2026-11-30") == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 30, 23, 59, 59, 999_999, tzinfo=UTC),
    )
    for bounds in (("2026-11-31", "2026-12-01"), ("2026-11-01", "tomorrow"),
                   ("2026-11-01T00:00:00", "2026-11-02")):  # fmt: skip
        with pytest.raises(InvalidPeriod) as refused:
            parse_period(*bounds)
        assert refused.value.code == "invalid_period"
    with pytest.raises(InvalidPeriod, match="is after to"):
        statement(ledger.events, "ann", *parse_period("2026-12-05", "2026-12-04"), now=now)
    with pytest.raises(InvalidPeriod, match="in the future"):
        statement(ledger.events, "ann", *parse_period("2026-12-06", "2026-12-07"), now=now)
    with pytest.raises(AccountNotFound, match="did not exist by"):
        statement(ledger.events, "ann", *parse_period("2026-12-01", "2026-12-04"), now=now)
    later = statement(ledger.events, "ann", *parse_period("2026-12-05", "2026-12-31"), now=now)
    assert later.end == now and later.closing_minor == 500  # a future `to` means now

    for _ in range(4):
        ledger.service.deposit("ann", "1")  # six events in all
    with pytest.MonkeyPatch.context() as limit:
        limit.setattr(statements, "MAX_STATEMENT_EVENTS", 6)
        assert len(statement(ledger.events, "ann", START, now, now=now).lines) == 5
        limit.setattr(statements, "MAX_STATEMENT_EVENTS", 5)
        with pytest.raises(StatementTooLong, match="ask for a shorter period") as refused:
            statement(ledger.events, "ann", START, now, now=now)
    assert refused.value.code == "statement_too_long"
    assert len(ledger.events.read_stream("ann")) == written + 4  # the reads wrote nothing


# ------------------------------------------------------------------ HTTP and the command line


@pytest.fixture
def client(ledger: Ledger, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """A teller's client of the app on the test's ledger, and an auditor's token."""
    tokens = tmp_path / "tokens.json"
    teller = add_token(tokens, "statement-teller", "teller")
    auditor = add_token(tokens, "statement-auditor", "auditor")
    assert teller and auditor
    app = create_app(ledger, TokenStore.load(tokens), Metrics())
    with TestClient(app, headers={"Authorization": f"Bearer {teller}"}) as opened:
        yield opened, auditor


def posted(client: TestClient, path: str, body: dict) -> dict:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_over_http_as_of_and_a_statement_in_json_and_csv(client, ledger, clock):
    http, auditor = client
    ledger.service.channel = "api"  # as served
    for name, deposit in (("ann", "100.00"), ("bob", None)):
        body = {"account_id": name, "owner": "Ada", "type": "CHECKING"}
        posted(http, "/accounts", {**body, **({"initial_deposit": deposit} if deposit else {})})
    clock.advance(3_600)  # 10:00
    moved = posted(
        http,
        "/transfers",
        {
            "from_account_id": "ann",
            "to_account_id": "bob",
            "amount": "30.00",
            "metadata": {"invoice": "=inv-7"},
        },
    )
    clock.advance(3_600)  # 11:00
    posted(http, "/accounts/ann/withdrawals", {"amount": "5.50"})
    clock.advance(86_400)  # the next day
    posted(http, "/accounts/ann/deposits", {"amount": "1.00"})

    then = http.get("/accounts/ann", params={"as_of": "2026-12-05T10:30:00+00:00"})
    assert then.status_code == 200, then.text
    assert (then.json()["balance"], then.json()["version"], then.json()["as_of"]) == (
        "70.00", 3, "2026-12-05T10:30:00.000000Z")  # fmt: skip
    assert "as_of" not in http.get("/accounts/ann").json()  # the present: the read model's

    period = {"from": "2026-12-05", "to": "2026-12-05"}
    answer = http.get("/accounts/ann/statement", params=period,
                      headers={"Authorization": f"Bearer {auditor}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["from"], body["to"]) == ("2026-12-05T00:00:00.000000Z",
                                          "2026-12-05T23:59:59.999999Z")  # fmt: skip
    assert (body["opening_balance"], body["total_in"], body["total_out"],
            body["closing_balance"]) == ("0.00", "100.00", "35.50", "64.50")  # fmt: skip
    assert [(line["kind"], line["amount"], line["balance_after"], line["description"])
            for line in body["lines"]] == [
        ("deposit", "100.00", "100.00", "deposit (api)"),
        ("transfer_out", "-30.00", "70.00", "transfer to bob"),
        ("withdrawal", "-5.50", "64.50", "withdrawal")]  # fmt: skip
    transfer = body["lines"][1]
    assert (transfer["counterparty"], transfer["transfer_id"], transfer["metadata"]) == (
        "bob", moved["transfer_id"], {"invoice": "=inv-7"})  # fmt: skip

    for request in ({"headers": {"Accept": "text/csv"}}, {"params": {**period, "format": "csv"}}):
        request.setdefault("params", period)
        csv_answer = http.get("/accounts/ann/statement", **request)
        assert csv_answer.status_code == 200, csv_answer.text
        assert csv_answer.headers["content-type"] == "text/csv; charset=utf-8"
        assert "statement-ann-20261205-20261205.csv" in csv_answer.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(csv_answer.content.decode("utf-8"))))
        assert [(r["kind"], r["amount"], r["balance"]) for r in rows] == [
            ("opening_balance", "", "0.00"), ("deposit", "100.00", "100.00"),
            ("transfer_out", "-30.00", "70.00"), ("withdrawal", "-5.50", "64.50"),
            ("closing_balance", "", "64.50")]  # fmt: skip
        assert json.loads(rows[2]["metadata"]) == {"invoice": "=inv-7"}
    as_json = http.get("/accounts/ann/statement", params={**period, "format": "json"},
                       headers={"Accept": "text/csv"})  # fmt: skip
    assert as_json.json()["closing_balance"] == "64.50"

    written = len(ledger.events.read_stream("ann"))
    problem(http.get("/accounts/ann", params={"as_of": "2026-12-07T00:00:00Z"}), 422,
            "invalid_as_of")  # fmt: skip
    problem(http.get("/accounts/ann", params={"as_of": "soon"}), 422, "invalid_as_of")
    problem(http.get("/accounts/ann", params={"as_of": "2026-12-04T00:00:00Z"}), 404,
            "account_not_found")  # fmt: skip
    problem(http.get("/accounts/ann/statement", params={"from": "2026-12-06", "to": "2026-12-05"}),
            422, "invalid_period")  # fmt: skip
    problem(http.get("/accounts/ann/statement", params={"from": "12/01/2026", "to": "2026-12-05"}),
            422, "invalid_period")  # fmt: skip
    problem(http.get("/accounts/ann/statement", params={"to": "2026-12-05"}), 422,
            "validation_error")  # fmt: skip
    problem(http.get("/accounts/ann/statement", params={**period, "format": "pdf"}), 422,
            "validation_error")  # fmt: skip
    problem(http.get("/accounts/nobody/statement", params=period), 404, "account_not_found")
    anonymous = http.get("/accounts/ann/statement", params=period, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert len(ledger.events.read_stream("ann")) == written  # nothing written


def test_the_command_line_shows_a_past_balance_and_a_statement(
    sqlite_store_url: str, tmp_path: Path, capsys, monkeypatch
):
    cli = cli_against(sqlite_store_url, f"sqlite:///{tmp_path / 'r.db'}", monkeypatch, capsys)
    assert cli("init")[0] == 0
    assert cli("open", "ann", "--owner", "Ann", "--type", "CHECKING",
               "--initial-deposit", "100")[0] == 0  # fmt: skip
    assert cli("open", "bob", "--owner", "Bob", "--type", "CHECKING")[0] == 0
    between = utc_text(datetime.now(UTC))
    assert cli("transfer", "ann", "bob", "30.50")[0] == 0

    code, out, err = cli("balance", "ann", "--as-of", between, "--json")
    assert code == 0, err
    assert (json.loads(out)["balance"], json.loads(out)["as_of"]) == ("100.00", between)
    code, out, _ = cli("balance", "ann", "--as-of", between)
    line = " ".join(out.split())  # as wrapped to the terminal's width, rejoined
    assert code == 0 and "ann balance 100.00 USD" in line and f"as of {between}" in line

    today = datetime.now(UTC).date().isoformat()
    code, out, err = cli("statement", "ann", "--from", today, "--to", today, "--csv")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:6] == ["recorded_at", "version", "kind", "description", "amount", "balance"]
    assert [row[2:6] for row in rows[1:]] == [
        ["opening_balance", "opening balance", "", "0.00"],
        ["deposit", "deposit (cli)", "100.00", "100.00"],
        ["transfer_out", "transfer to bob", "-30.50", "69.50"],
        ["closing_balance", "closing balance", "", "69.50"]]  # fmt: skip
    code, out, _ = cli("statement", "ann", "--from", today, "--to", today)
    assert code == 0 and "in 100.00 USD, out 30.50 USD, closing balance 69.50 USD" in out
    code, out, _ = cli("statement", "ann", "--from", today, "--to", today, "--json")
    assert code == 0 and json.loads(out)["total_out"] == "30.50"

    store = open_store(sqlite_store_url)
    events = len(store.read_stream("ann"))
    for args in (("balance", "ann", "--as-of", "2999-01-01T00:00:00Z"),
                 ("balance", "ann", "--as-of", "noon"),
                 ("statement", "ann", "--from", today, "--to", "2020-01-01"),
                 ("statement", "ann", "--from", "first", "--to", today),
                 ("statement", "ann", "--to", today)):  # fmt: skip
        code, _, err = cli(*args)
        assert code == 2, (args, err)
    assert cli("balance", "ann", "--as-of", "2020-01-01T00:00:00Z")[0] == 3  # not yet opened
    assert "as_of must be an RFC 3339 instant" in cli("balance", "ann", "--as-of", "noon")[2]
    assert len(store.read_stream("ann")) == events
    store.close()
