"""The store contract (docs/architecture.md), written once and run on every engine unchanged."""

from __future__ import annotations

import threading

import pytest

from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import (
    BatchTooLarge,
    CommandRecord,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    Snapshot,
    stream_head,
)
from tests.factories import new_event


def test_appended_events_read_back_in_version_order_with_envelope_intact(store):
    data = {"amount_minor": 10**17, "note": "naïve ✓", "nested": {"a": [1, 2]}}
    events = [new_event("s1", 1, **data), new_event("s1", 2), new_event("s1", 3)]
    recorded = store.append(events, {"s1": 0})
    assert [e.event_id for e in recorded] == [e.event_id for e in events]

    read = store.read_stream("s1")
    assert [(e.event_id, e.version) for e in read] == [(e.event_id, e.version) for e in events]
    assert read[0].data == data
    assert read[0].metadata == {"command_id": events[0].metadata["command_id"], "actor": "tests"}
    assert [e.hash for e in read] == [e.hash for e in events] == [e.hash for e in recorded]
    assert (read[0].aggregate_type, read[0].event_type, read[0].schema_version) == (
        "Test", "Happened", 1,
    )  # fmt: skip
    assert [e.version for e in store.read_stream("s1", after_version=1)] == [2, 3]
    assert store.read_stream("nobody") == []


def test_a_stream_reads_in_bounded_pages_forwards_and_backwards(store):
    events = [new_event("s1", v, n=v) for v in range(1, 6)]
    store.append(events, {"s1": 0})
    store.append([new_event("s2", 1)], {"s2": 0})

    def versions(*args, **kwargs):
        return [e.version for e in store.read_stream("s1", *args, **kwargs)]

    assert versions(limit=1, backwards=True) == [5]  # the head, one event read
    assert versions(limit=2) == [1, 2]
    assert versions(2, limit=2) == [3, 4]  # after_version and limit: one page
    assert versions(3, limit=10_000) == [4, 5]
    assert versions(backwards=True) == [5, 4, 3, 2, 1]
    assert versions(2, backwards=True) == [5, 4, 3]  # after_version stays the lower bound
    assert versions(3, limit=1, backwards=True) == [5]
    assert versions(5, limit=1, backwards=True) == versions(9, limit=3) == []
    assert store.read_stream("s1", limit=5) == store.read_stream("s1")  # whole envelopes
    assert store.read_stream("s1", backwards=True) == store.read_stream("s1")[::-1]
    assert store.read_stream("nobody", limit=1, backwards=True) == []
    head = stream_head(store, "s1")
    assert head is not None and (head.event_id, head.hash) == (events[-1].event_id, events[-1].hash)
    assert stream_head(store, "nobody") is None


@pytest.mark.parametrize(
    "bad",
    [{"limit": 0}, {"limit": -1}, {"limit": 10_001}, {"limit": True}, {"limit": 1.0},
     {"limit": "1"}, {"after_version": -1}, {"after_version": "0"}, {"backwards": "yes"}],
)  # fmt: skip
def test_a_malformed_stream_read_is_refused(store, bad):
    store.append([new_event("s1", 1)], {"s1": 0})
    with pytest.raises(InvalidInput):
        store.read_stream("s1", **bad)


def test_several_streams_read_at_once_each_above_its_own_version(store):
    store.append([new_event("s1", v) for v in (1, 2, 3)], {"s1": 0})
    store.append([new_event("s2", 1), new_event("s3", 1)], {"s2": 0, "s3": 0})
    read = store.read_streams({"s1": 1, "s2": 1, "s3": 0, "nobody": 0})
    assert {sid: [e.version for e in events] for sid, events in read.items()} == {
        "s1": [2, 3], "s3": [1],
    }  # fmt: skip
    assert read["s1"] == store.read_stream("s1", 1)  # whole envelopes, as one stream's read
    assert store.read_streams({}) == {}


@pytest.mark.parametrize(
    "bad", [{"s1": -1}, {"s1": "0"}, {"s1": None}, {f"s{n}": 0 for n in range(1_001)}]
)
def test_a_malformed_read_of_several_streams_is_refused(store, bad):
    with pytest.raises(InvalidInput):
        store.read_streams(bad)


def test_stream_ids_pages_through_every_stream_with_events_once(store):
    names = ["acc-1", "acc-2", "b", "payroll#x", "audit#trail", "z9"]
    for name in names:
        store.append([new_event(name, 1), new_event(name, 2)], {name: 0})
    store.append([new_event("guarded", 1)], {"guarded": 0, "acc-1": 2})
    with pytest.raises(ConcurrencyConflict):  # a refused append creates no stream
        store.append([new_event("refused", 1), new_event("b", 2)], {"refused": 0, "b": 1})
    # only named, never written: no stream
    store.append([new_event("guarded", 2)], {"guarded": 1, "empty": 0})
    everything = store.stream_ids()
    assert sorted(everything) == sorted([*names, "guarded"])
    pages, after = [], ""
    while page := store.stream_ids(after, limit=2):
        assert len(page) <= 2
        pages += page
        after = page[-1]
    assert pages == everything  # the same order, page by page
    assert store.stream_ids(everything[2], limit=10) == everything[3:]
    assert store.stream_ids(everything[-1]) == []


@pytest.mark.parametrize(
    "bad", [{"limit": 0}, {"limit": 10_001}, {"limit": None}, {"after": None}, {"after": 3}]
)
def test_a_malformed_stream_listing_is_refused(store, bad):
    with pytest.raises(InvalidInput):
        store.stream_ids(**bad)


NASTY = {
    "quotes": 'he said "pay" \\ then {"x": [1]}',
    "controls": "\x00\x01\t\n\u2028",
    "big": 10**30,
    "negative": -(2**63) - 1,
    "non_ascii": "naïve 💸 ✓",
    "empty": {"": [None, True, False, "", []]},
}


def test_payloads_with_quotes_escapes_and_big_numbers_read_back_as_written(store):
    """Events and command outcomes travel as JSON text inside engine-specific parameters
    (PostgreSQL: one JSON document of rows); nothing in the payload may be re-escaped or rounded."""
    events = [new_event("nasty", 1, **NASTY), new_event("nasty", 2, **NASTY)]
    record = CommandRecord("nasty-cmd", "f" * 64, {"outcome": NASTY})
    recorded = store.append(events, {"nasty": 0}, record)
    assert [e.data for e in recorded] == [NASTY, NASTY]
    assert [e.data for e in store.read_stream("nasty")] == [NASTY, NASTY]
    assert [e.data for e in store.read_all() if e.aggregate_id == "nasty"] == [NASTY, NASTY]
    assert store.find_command("nasty-cmd") == record


def test_stale_expected_version_is_a_conflict_and_writes_nothing(store):
    store.append([new_event("s1", 1)], {"s1": 0})
    with pytest.raises(ConcurrencyConflict) as caught:
        store.append([new_event("s1", 1)], {"s1": 0})
    assert caught.value.aggregate_ids == ("s1",)
    with pytest.raises(ConcurrencyConflict):
        store.append([new_event("s1", 3)], {"s1": 2})  # ahead of the stream is stale too
    assert [e.version for e in store.read_stream("s1")] == [1]


def test_multi_stream_append_is_all_or_nothing(store):
    store.append([new_event("a", 1), new_event("b", 1)], {"a": 0, "b": 0})
    store.append([new_event("b", 2)], {"b": 1})  # b moves on behind the next writer's back

    with pytest.raises(ConcurrencyConflict) as caught:
        store.append([new_event("a", 2), new_event("b", 2)], {"a": 1, "b": 1})
    assert caught.value.aggregate_ids == ("b",)
    assert [e.version for e in store.read_stream("a")] == [1]
    assert [e.version for e in store.read_stream("b")] == [1, 2]


def test_expected_version_alone_guards_a_stream_without_writing_to_it(store):
    store.append([new_event("guard", 1)], {"guard": 0})
    with pytest.raises(ConcurrencyConflict):
        store.append([new_event("other", 1)], {"other": 0, "guard": 0})
    assert store.read_stream("other") == []
    store.append([new_event("other", 1)], {"other": 0, "guard": 1})
    assert len(store.read_stream("other")) == 1


def test_the_same_event_appended_twice_is_refused_and_stored_once(store):
    event = new_event("s1", 1, event_id="evt-unique-123")
    store.append([event], {"s1": 0})
    with pytest.raises(DuplicateEvent) as caught:
        store.append([new_event("s1", 2, event_id="evt-unique-123")], {"s1": 1})
    assert caught.value.event_ids == ("evt-unique-123",)
    with pytest.raises(DuplicateEvent):  # event ids are unique across streams, too
        store.append([new_event("s2", 1, event_id="evt-unique-123")], {"s2": 0})
    assert [e.event_id for e in store.read_stream("s1")] == ["evt-unique-123"]
    assert store.read_stream("s2") == []


def test_a_duplicate_inside_one_batch_writes_nothing(store):
    with pytest.raises(DuplicateEvent):
        store.append([new_event("s1", 1, event_id="e"), new_event("s2", 1, event_id="e")],
                     {"s1": 0, "s2": 0})  # fmt: skip
    assert store.read_stream("s1") == [] and store.read_stream("s2") == []


def test_command_record_lands_with_the_events_and_only_once(store):
    record = CommandRecord("cmd-1", "f" * 64, {"kind": "deposit", "amount": "1.00"})
    assert store.find_command("cmd-1") is None
    store.append([new_event("s1", 1)], {"s1": 0}, record)
    assert store.find_command("cmd-1") == record

    with pytest.raises(DuplicateCommand):
        store.append([new_event("s1", 2)], {"s1": 1}, record)
    assert len(store.read_stream("s1")) == 1


def test_an_append_may_record_several_commands_all_or_none(store):
    """An atomic batch of transfers: each item's command record lands with the events, and one
    known command id among them refuses the whole append."""
    first = CommandRecord("item-1", "f1", {"n": 1})
    second = CommandRecord("item-2", "f2", {"n": 2})
    store.append([new_event("s1", 1), new_event("s2", 1)], {"s1": 0, "s2": 0}, [first, second])
    assert (store.find_command("item-1"), store.find_command("item-2")) == (first, second)

    third = CommandRecord("item-3", "f3", {"n": 3})
    with pytest.raises(DuplicateCommand) as caught:
        store.append([new_event("s1", 2), new_event("s2", 2)], {"s1": 1, "s2": 1},
                     [third, CommandRecord("item-2", "f2", {"n": 2})])  # fmt: skip
    assert caught.value.command_id == "item-2"
    assert store.find_command("item-3") is None
    assert [len(store.read_stream(s)) for s in ("s1", "s2")] == [1, 1]


def test_command_records_of_one_append_must_have_distinct_ids(store):
    twice = [CommandRecord("same", "f", {}), CommandRecord("same", "g", {})]
    with pytest.raises(InvalidInput, match="share a command id"):
        store.append([new_event("s1", 1), new_event("s1", 2)], {"s1": 0}, twice)
    assert store.read_stream("s1") == [] and store.find_command("same") is None


def test_a_refused_append_does_not_record_its_command(store):
    store.append([new_event("s1", 1)], {"s1": 0})
    with pytest.raises(ConcurrencyConflict):
        store.append([new_event("s1", 1)], {"s1": 0}, CommandRecord("cmd-2", "f", {}))
    assert store.find_command("cmd-2") is None


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], {"s1": 0}),
        ([new_event("s1", 1)], {}),  # stream without an expected version
        ([new_event("s1", 2)], {"s1": 0}),  # gap
        ([new_event("s1", 1), new_event("s1", 3)], {"s1": 0}),  # gap inside the batch
        ([new_event("s1", 1)], {"s1": -1}),
    ],
)
def test_malformed_appends_are_refused_before_writing(store, events, expected):
    with pytest.raises(InvalidInput):
        store.append(events, expected)
    assert store.read_stream("s1") == []
    assert store.read_all() == []


def test_an_append_over_the_batch_limit_is_refused(store):
    events = [new_event("big", v) for v in range(1, 1_002)]
    with pytest.raises(BatchTooLarge, match="saga"):
        store.append(events, {"big": 0})
    assert store.read_stream("big") == []


def test_global_feed_pages_through_every_event_once(store):
    store.append([new_event("a", 1), new_event("b", 1)], {"a": 0, "b": 0})
    store.append([new_event("a", 2)], {"a": 1})
    feed = store.read_all()
    assert sorted((e.aggregate_id, e.version) for e in feed) == [("a", 1), ("a", 2), ("b", 1)]
    assert [e.version for e in feed if e.aggregate_id == "a"] == [1, 2]
    positions = [e.position for e in feed]
    assert positions == sorted(positions) and len(set(positions)) == 3

    first_page = store.read_all(after_position=0, limit=2)
    rest = store.read_all(after_position=first_page[-1].position, limit=2)
    assert [e.event_id for e in first_page + rest] == [e.event_id for e in feed]
    for bad in (0, -1, 10_001):
        with pytest.raises(InvalidInput):
            store.read_all(limit=bad)


def test_global_feed_follows_commit_order(ordered_store):
    """Engines with a global order (SQLite, PostgreSQL) number events in commit order."""
    ordered_store.append([new_event("a", 1), new_event("b", 1)], {"a": 0, "b": 0})
    ordered_store.append([new_event("a", 2)], {"a": 1})
    feed = ordered_store.read_all()
    assert [(e.aggregate_id, e.version) for e in feed] == [("a", 1), ("b", 1), ("a", 2)]


def test_snapshots_keep_the_newest(store):
    assert store.load_snapshot("s1") is None
    newer = Snapshot("s1", "Account", 7, 1, {"balance_minor": 700})
    store.save_snapshot(newer)
    store.save_snapshot(Snapshot("s1", "Account", 3, 1, {"balance_minor": 300}))
    assert store.load_snapshot("s1") == newer


def test_the_newest_snapshots_of_several_streams_are_loaded_at_once(store):
    for version in (3, 9, 5):
        store.save_snapshot(Snapshot("s1", "Account", version, 1, {"v": version}))
    store.save_snapshot(Snapshot("s2", "Account", 4, 2, {"v": 4}))
    found = store.load_snapshots(["s1", "nobody", "s2"])
    assert found == {"s1": store.load_snapshot("s1"), "s2": store.load_snapshot("s2")}
    assert found["s1"].state == {"v": 9} and found["s2"].state_schema_version == 2
    assert store.load_snapshots([]) == {}


@pytest.mark.parametrize("bad", [[3], [None], [f"s{n}" for n in range(1_001)]])
def test_a_malformed_read_of_several_snapshots_is_refused(store, bad):
    with pytest.raises(InvalidInput):
        store.load_snapshots(bad)


def test_events_survive_closing_and_reopening(store, make_store):
    store.append([new_event("s1", 1)], {"s1": 0}, CommandRecord("cmd-3", "f", {"ok": True}))
    store.close()
    reopened = make_store()
    assert [e.version for e in reopened.read_stream("s1")] == [1]
    assert reopened.find_command("cmd-3").outcome == {"ok": True}


def test_racing_writers_at_one_version_exactly_one_wins(make_store):
    handles = [make_store() for _ in range(4)]
    handles[0].append([new_event("hot", 1)], {"hot": 0})
    for round_ in range(10):
        version = round_ + 1
        start = threading.Barrier(len(handles))
        won, lost = [], []

        def write(handle, i, version=version, start=start, won=won, lost=lost):
            start.wait()
            try:
                handle.append([new_event("hot", version + 1, n=i)], {"hot": version})
                won.append(i)
            except ConcurrencyConflict:
                lost.append(i)

        threads = [threading.Thread(target=write, args=(h, i)) for i, h in enumerate(handles)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(won) == 1 and len(lost) == len(handles) - 1
    assert [e.version for e in handles[0].read_stream("hot")] == list(range(1, 12))


def test_every_snapshot_is_kept_and_the_newest_at_or_below_a_version_is_loaded(store):
    def saved(version: int, schema: int = 1) -> Snapshot:
        snapshot = Snapshot("s1", "Account", version, schema, {"balance_minor": version * 100})
        store.save_snapshot(snapshot)
        return snapshot

    at_100, at_300, at_200 = saved(100), saved(300), saved(200)  # saved out of order
    assert store.load_snapshot("s1") == at_300  # no bound: the newest, as before
    assert store.load_snapshot("s1", None) == at_300
    assert [store.load_snapshot("s1", v) for v in (99, 100, 199, 200, 250, 300, 10**9)] == [
        None, at_100, at_100, at_200, at_200, at_300, at_300]  # fmt: skip
    assert store.load_snapshot("s1", 0) is None
    assert store.load_snapshot("s2", 500) is None and store.load_snapshot("s2") is None
    saved(200, schema=0)  # an older state schema at a version kept does not replace it
    assert store.load_snapshot("s1", 200) == at_200
    newer_shape = saved(200, schema=2)  # a newer one does
    assert store.load_snapshot("s1", 250) == newer_shape
    assert store.load_snapshot("s1") == at_300
    for bad in (-1, 1.5, "3", True):
        with pytest.raises(InvalidInput):
            store.load_snapshot("s1", bad)
    assert store.read_stream("s1") == [] and "s1" not in store.stream_ids()
