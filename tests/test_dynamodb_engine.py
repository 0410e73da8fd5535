"""DynamoDB-specific behaviour, on DynamoDB Local: the EventId-key race fixed, the 100-item
transaction limit, atomic transfers, paginated reads of long streams, the stream registry, the
table the engine creates, and the time budget on an unreachable endpoint."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import boto3
import pytest

from eventbank.domain.errors import InvalidInput
from eventbank.engines.dynamodb import event_store as dynamo
from eventbank.engines.dynamodb.event_store import DynamoEventStore
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import (
    BatchTooLarge,
    CommandRecord,
    ConcurrencyConflict,
    Snapshot,
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
        (49, {"s": 0}, False, 99),  # 49 events + 49 event-id guards + the stream's registry
        (49, {"s": 0}, True, 100),  # + the command record
        (50, {"s": 0}, False, 101),
        (49, {"s": 1}, True, 100),  # 98 + "version 1 exists" + the command record
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


def test_a_stream_of_several_query_pages_reads_back_whole_and_in_order(store):
    padding = "x" * 4_000  # makes the stream span several 1 MB Query pages with few items
    total, batch = 700, 49  # 49 events + 49 guards + "version exists" = 99 items
    for start in range(0, total, batch):
        events = [new_event("long", v, pad=padding, v=v)
                  for v in range(start + 1, min(start + batch, total) + 1)]  # fmt: skip
        store.append(events, {"long": start})
    assert total * len(padding) > 2 * QUERY_PAGE_BYTES
    read = store.read_stream("long")
    assert [e.version for e in read] == list(range(1, total + 1))
    assert all(e.data["v"] == e.version for e in read)
    assert [e.version for e in store.read_stream("long", after_version=600)] == list(
        range(601, total + 1)
    )
    # Bounded reads stop at their limit, across Query pages, in either direction.
    assert [e.version for e in store.read_stream("long", limit=1, backwards=True)] == [total]
    assert [e.version for e in store.read_stream("long", 100, limit=500)] == list(range(101, 601))
    assert [e.version for e in store.read_stream("long", 300, backwards=True)] == list(
        range(total, 300, -1)
    )
    feed, position = [], 0
    while page := store.read_all(after_position=position, limit=250):
        feed += page
        position = page[-1].position
    assert [e.version for e in feed] == list(range(1, total + 1))


def _registry(dynamodb, table: str) -> list[dict]:
    """The registry items (negative SK) and the marker saying the registry is complete."""
    return dynamodb.scan(
        TableName=table, FilterExpression="SK < :zero OR PK = :marker",
        ExpressionAttributeValues={":zero": {"N": "0"}, ":marker": {"S": "META#stream-registry"}},
    )["Items"]  # fmt: skip


def test_streams_written_before_the_registry_existed_are_listed_after_a_backfill(
    store, make_store, dynamodb
):
    store.append([new_event("old-1", 1), new_event("old-2", 1)], {"old-1": 0, "old-2": 0})
    store.append([new_event("old-1", 2)], {"old-1": 1})
    before = _registry(dynamodb, store.table)
    assert len(before) == 3  # two streams, one registry item each, and the marker
    for item in before:  # as a table written by an eventbank without the registry
        dynamodb.delete_item(TableName=store.table, Key={"PK": item["PK"], "SK": item["SK"]})
    assert sorted(make_store().stream_ids()) == ["old-1", "old-2"]  # a new handle backfills
    assert sorted(map(str, _registry(dynamodb, store.table))) == sorted(map(str, before))
    store.append([new_event("new", 1)], {"new": 0})
    assert sorted(make_store().stream_ids()) == ["new", "old-1", "old-2"]


def test_registry_items_never_show_as_events_even_under_a_stream_of_the_same_key(store):
    """A stream may be named like a registry partition: its events and the registry items
    share the partition key but never the sort keys (versions > 0, registry < 0)."""
    store.append([new_event("acc", 1)], {"acc": 0})
    shard, _ = dynamo._registry_key("acc")
    lookalike = dynamo._registry_pk(shard)  # the partition holding acc's registry item
    store.append([new_event(lookalike, 1), new_event(lookalike, 2)], {lookalike: 0})
    assert [e.version for e in store.read_stream(lookalike)] == [1, 2]
    assert [e.version for e in store.read_stream(lookalike, backwards=True)] == [2, 1]
    assert sorted(store.stream_ids()) == sorted(["acc", lookalike])
    assert sorted((e.aggregate_id, e.version) for e in store.read_all()) == sorted(
        [("acc", 1), (lookalike, 1), (lookalike, 2)]
    )


def test_stream_ids_pages_across_the_registry_partitions(store):
    streams = [f"s{n}" for n in range(40)]
    for start in range(0, len(streams), 20):
        batch = streams[start : start + 20]
        store.append([new_event(s, 1) for s in batch], dict.fromkeys(batch, 0))
    assert len({dynamo._registry_key(s)[0] for s in streams}) > 1  # several partitions
    pages, after = [], ""
    while page := store.stream_ids(after, limit=7):
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [7] * 5 + [5]
    assert sorted(s for p in pages for s in p) == sorted(streams)


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
    assert time.monotonic() - started < 15  # botocore's default retries would take longer


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


def _calls(store, operation: str) -> list[str]:
    """The names of the threads making each ``operation`` call of ``store``'s client from now."""
    threads: list[str] = []
    store._ddb.meta.events.register(
        f"before-call.dynamodb.{operation}",
        lambda **_: threads.append(threading.current_thread().name),
    )
    return threads


def test_snapshots_of_many_streams_are_read_a_hundred_to_a_request(store):
    for n in range(250):
        store.save_snapshot(Snapshot(f"s{n}", "Account", n + 1, 1, {"n": n}))
    batches, gets = _calls(store, "BatchGetItem"), _calls(store, "GetItem")
    found = store.load_snapshots([f"s{n}" for n in range(250)] + ["none", "s7"])
    assert len(batches) == 3 and gets == []
    assert sorted(found) == sorted(f"s{n}" for n in range(250))
    assert all(
        found[f"s{n}"] == Snapshot(f"s{n}", "Account", n + 1, 1, {"n": n}) for n in range(250)
    )


def test_keys_dynamodb_leaves_unprocessed_are_asked_again(store):
    """DynamoDB may answer part of a BatchGetItem (beyond 16 MB, or throttled) and list the
    rest under UnprocessedKeys; the first answer here is made to hold only half."""
    for n in range(10):
        store.save_snapshot(Snapshot(f"s{n}", "Account", 1, 1, {"n": n}))
    answers = []

    def answer_half_the_first_time(parsed, **_):
        answers.append(len(parsed["Responses"][store.table]))
        if len(answers) == 1:
            items = parsed["Responses"][store.table]
            held_back, parsed["Responses"][store.table] = items[5:], items[:5]
            keys = [{"PK": item["PK"], "SK": item["SK"]} for item in held_back]
            parsed["UnprocessedKeys"] = {store.table: {"Keys": keys, "ConsistentRead": True}}

    store._ddb.meta.events.register("after-call.dynamodb.BatchGetItem", answer_half_the_first_time)
    found = store.load_snapshots([f"s{n}" for n in range(10)])
    assert answers == [10, 5]
    assert sorted(found) == [f"s{n}" for n in range(10)]


def test_many_streams_are_read_at_once_and_each_whole(store):
    for n in range(40):
        store.append([new_event(f"s{n}", v, v=v) for v in range(1, n % 3 + 2)], {f"s{n}": 0})
    queries = _calls(store, "Query")
    after = {f"s{n}": n % 2 for n in range(40)} | {"none": 0}
    found = store.read_streams(after)
    assert len(queries) == 41 and len(set(queries)) > 1  # several threads, one Query each
    assert found == {
        sid: events for sid, v in after.items() if (events := store.read_stream(sid, v))
    }
    assert [e.version for e in found["s5"]] == [2, 3]
