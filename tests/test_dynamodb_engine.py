"""DynamoDB-specific behaviour, on DynamoDB Local: the EventId-key race fixed, the 100-item
transaction limit, atomic transfers, paginated reads of long streams, the table the engine
creates, and the time budget on an unreachable endpoint."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import boto3
import pytest

from eventbank.domain.errors import InvalidInput
from eventbank.engines.dynamodb.event_store import DynamoEventStore
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import (
    BatchTooLarge,
    CommandRecord,
    ConcurrencyConflict,
    StoreError,
    StoreUnavailable,
)
from tests.factories import new_event

ROUNDS = 30
QUERY_PAGE_BYTES = 1 << 20  # DynamoDB returns at most 1 MB per Query page


@pytest.fixture
def store_url(dynamodb_store_url: str) -> str:
    """Only DynamoDB here: ``store`` and ``make_store`` (conftest) open this URL."""
    return dynamodb_store_url


@pytest.fixture
def dynamodb(dynamodb_local_endpoint: str):
    return boto3.client("dynamodb", endpoint_url=dynamodb_local_endpoint, region_name="us-east-1")


def test_two_withdrawals_at_one_version_never_both_land(make_store):
    """The original specification's flaw: a table keyed on EventId, so two racing events at
    version 6 with different ids both passed ``attribute_not_exists(EventId)``. Here exactly
    one lands."""
    first, second = make_store(), make_store()
    first.append([new_event("acc", 1, kind="opened")], {"acc": 0})
    for version in range(1, ROUNDS + 1):
        start = threading.Barrier(2)
        won: list[str] = []
        lost: list[str] = []

        def withdraw(store, who, version=version, start=start, won=won, lost=lost):
            start.wait()
            try:
                store.append([new_event("acc", version + 1, who=who)], {"acc": version})
                won.append(who)
            except ConcurrencyConflict:
                lost.append(who)

        threads = [threading.Thread(target=withdraw, args=(s, w))
                   for s, w in ((first, "A"), (second, "B"))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == 1
        assert first.read_stream("acc", after_version=version)[0].data["who"] == won[0]
    assert [e.version for e in second.read_stream("acc")] == list(range(1, ROUNDS + 2))


@pytest.mark.parametrize(
    ("events", "expected", "command", "items"),
    [
        (50, {"s": 0}, False, 100),  # 50 events + 50 event-id guards
        (49, {"s": 1}, True, 100),  # + "version 1 exists" + the command record
        (50, {"s": 0}, True, 101),
        (49, {"s": 1, "other": 0}, True, 101),  # + "other has no version 1"
    ],
)
def test_the_100_item_transaction_limit_is_checked_before_writing(
    store, events, expected, command, items
):
    start = expected["s"]
    if start:
        store.append([new_event("s", 1)], {"s": 0})
    batch = [new_event("s", start + v) for v in range(1, events + 1)]
    record = CommandRecord("cmd-big", "f", {}) if command else None
    if items <= 100:
        store.append(batch, expected, record)
        assert len(store.read_stream("s")) == start + events
    else:
        with pytest.raises(BatchTooLarge, match=f"{items} DynamoDB transaction items.*saga"):
            store.append(batch, expected, record)
        assert len(store.read_stream("s")) == start
        assert store.find_command("cmd-big") is None


def test_more_events_than_half_the_limit_are_refused_by_the_shape_check(store):
    with pytest.raises(BatchTooLarge, match="51 events.*limit is 50.*saga"):
        store.append([new_event("s", v) for v in range(1, 52)], {"s": 0})


def test_a_transfer_whose_second_put_fails_writes_neither_event(store):
    store.append([new_event("from", 1), new_event("to", 1)], {"from": 0, "to": 0})
    store.append([new_event("to", 2)], {"to": 1})  # the credit side moves on
    withdrawal = new_event("from", 2, event_id="wd-1", amount_minor=500)
    deposit = new_event("to", 2, event_id="dp-1", amount_minor=500)
    with pytest.raises(ConcurrencyConflict) as caught:
        store.append([withdrawal, deposit], {"from": 1, "to": 1}, CommandRecord("t-1", "f", {}))
    assert caught.value.aggregate_ids == ("to",)
    assert [e.version for e in store.read_stream("from")] == [1]
    assert [e.version for e in store.read_stream("to")] == [1, 2]
    assert store.find_command("t-1") is None
    # The event-id guards were rolled back too: the same ids can land once the race is re-run.
    store.append([withdrawal, new_event("to", 3, event_id="dp-1")], {"from": 1, "to": 2})


def test_an_identical_append_sent_again_is_refused_not_silently_acknowledged(store):
    """The transaction token is per call, so DynamoDB's token dedupe cannot hide the repeat."""
    batch = [new_event("s", 1, event_id="only-once")]
    store.append(batch, {"s": 0})
    with pytest.raises(ConcurrencyConflict):
        store.append(batch, {"s": 0})
    assert len(store.read_stream("s")) == 1


def test_a_stream_of_thousands_of_events_reads_back_whole_and_in_order(store):
    padding = "x" * 1_000  # makes the stream span several 1 MB Query pages
    total, batch = 2_500, 49  # 49 events + 49 guards + "version exists" = 99 items
    for start in range(0, total, batch):
        events = [new_event("long", v, pad=padding, v=v)
                  for v in range(start + 1, min(start + batch, total) + 1)]  # fmt: skip
        store.append(events, {"long": start})
    assert total * len(padding) > 2 * QUERY_PAGE_BYTES
    read = store.read_stream("long")
    assert [e.version for e in read] == list(range(1, total + 1))
    assert all(e.data["v"] == e.version for e in read)
    assert [e.version for e in store.read_stream("long", after_version=2_400)] == list(
        range(2_401, total + 1)
    )
    feed, position = [], 0
    while page := store.read_all(after_position=position, limit=1_000):
        feed += page
        position = page[-1].position
    assert [e.version for e in feed] == list(range(1, total + 1))


def test_integers_beyond_float_and_dynamodb_numbers_round_trip_exactly(store):
    huge = 10**40 + 1  # more digits than a DynamoDB number holds; floats lose it entirely
    store.append([new_event("s", 1, amount_minor=huge)], {"s": 0})
    assert store.read_stream("s")[0].data["amount_minor"] == huge
    assert store.read_all()[0].data["amount_minor"] == huge


def test_opening_creates_the_table_once_with_its_stream(store_url, dynamodb):
    opened = []
    start = threading.Barrier(4)

    def open_concurrently():
        start.wait()
        opened.append(open_store(store_url))

    threads = [threading.Thread(target=open_concurrently) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened.append(open_store(store_url))  # and again, once it exists
    for store in opened:
        store.close()
    assert len(opened) == 5
    table = dynamodb.describe_table(TableName=urlsplit(store_url).netloc)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("PK", "HASH"), ("SK", "RANGE"),
    ]  # fmt: skip
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}


def test_the_seeds_event_id_keyed_table_is_refused(store_url, dynamodb):
    dynamodb.create_table(
        TableName=urlsplit(store_url).netloc, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "EventId", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "EventId", "AttributeType": "S"}],
    )  # fmt: skip
    with pytest.raises(StoreError, match="not an eventbank event table"):
        open_store(store_url)


def test_an_unreachable_endpoint_is_unavailable_within_the_time_budget():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="did not succeed within 0.5 s"):
        DynamoEventStore("nobody-home", endpoint_url=f"http://127.0.0.1:{closed_port}",
                         timeout_s=0.5)  # fmt: skip
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "url",
    [
        "dynamodb://ab",  # table names have 3 to 255 characters
        "dynamodb://table/extra-path",
        "dynamodb://table?endpoint=http://127.0.0.1:1",  # misspelt option
    ],
)
def test_malformed_urls_are_refused(url):
    with pytest.raises(InvalidInput):
        open_store(url)
