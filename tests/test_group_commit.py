"""Group commit (engines/sql/group_commit.py) keeps every guarantee of a lone append, on the engines
that have it (SQLite, PostgreSQL): a refused or conflicting append in a batch fails alone, a
killed writer leaves every acknowledged append stored and none half-written, and a lone append
waits for nobody. Then the service's hot path, on every engine: a stale cached account
(account_cache.py) still gives the right answer, a hot account is not re-read, and a repeated
command is replayed although no look-up precedes deciding.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager

import psycopg
import pytest

from eventbank.application.account_cache import AccountCache
from eventbank.application.auditor import Auditor
from eventbank.application.batch import BatchItem
from eventbank.application.observability import InstrumentedStore, Metrics
from eventbank.application.service import LedgerService
from eventbank.application.write_path import IdempotencyKeyReused
from eventbank.domain.account import Account
from eventbank.domain.errors import InsufficientFunds, InvalidInput
from eventbank.engines.postgres.event_store import _APPEND_LOCK, _LOCK_NAMESPACE, PostgresEventStore
from eventbank.engines.sql.group_commit import GroupCommit
from eventbank.engines.sqlite.event_store import SqliteEventStore
from eventbank.engines.urls import open_store, sqlite_path
from eventbank.ports.event_store import (
    GENESIS_HASH,
    CommandRecord,
    ConcurrencyConflict,
    EventStore,
    StoreError,
    StoreUnavailable,
    chained,
)
from tests.factories import new_event


@pytest.fixture(params=["sqlite", "postgres"])
def group_commit_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture
def opened(group_commit_url: str) -> Iterator[Callable[..., EventStore]]:
    """Opens the store, optionally with URL parameters; everything opened is closed after."""
    handles: list[EventStore] = []

    def open_with(parameters: str = "") -> EventStore:
        separator = "&" if "?" in group_commit_url else "?"
        handles.append(
            open_store(group_commit_url + (separator + parameters if parameters else ""))
        )
        return handles[-1]

    yield open_with
    for handle in handles:
        handle.close()


@contextmanager
def append_lock_held(url: str) -> Iterator[None]:
    """Hold the engine's write lock from outside, so that appends queue up behind it."""
    if url.startswith("sqlite"):
        holder = sqlite3.connect(sqlite_path(url), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    else:
        with psycopg.connect(url, autocommit=True) as holder:  # the lock ends with the session
            holder.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_NAMESPACE, _APPEND_LOCK))
            yield


def run_sql(url: str, *, sqlite: str, postgres: str) -> None:
    """Run DDL behind the engine's back (test-only triggers that make appends fail)."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as conn:
            conn.execute(sqlite)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(postgres)


# Refuses the command record 'poison' after its events were written, like a constraint would.
_POISON = {
    "sqlite": "CREATE TRIGGER poison BEFORE INSERT ON commands WHEN NEW.command_id = 'poison'"
    " BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    "postgres": "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " RAISE EXCEPTION 'poisoned' USING ERRCODE = 'check_violation'; END $$;"
    " CREATE TRIGGER poison BEFORE INSERT ON commands FOR EACH ROW"
    " WHEN (NEW.command_id = 'poison') EXECUTE FUNCTION poison()",
}
# Makes the whole transaction fail once stream 'doom' is written: SQLite rolls it back on the
# spot (as it does on a full disk), PostgreSQL refuses the COMMIT (a deferred trigger).
_DOOM = {
    "sqlite": "CREATE TRIGGER doom BEFORE INSERT ON events WHEN NEW.aggregate_id = 'doom'"
    " BEGIN SELECT RAISE(ROLLBACK, 'doomed'); END",
    "postgres": "CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
    " RAISE EXCEPTION 'doomed'; END $$;"
    " CREATE CONSTRAINT TRIGGER doom AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED"
    " FOR EACH ROW WHEN (NEW.aggregate_id = 'doom') EXECUTE FUNCTION doom()",
}


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the appends to queue up")
        time.sleep(0.005)


def outcome(future: Future) -> str:
    error = future.exception(timeout=30)
    return "ok" if error is None else type(error).__name__


def test_a_refused_or_conflicting_append_fails_alone_and_the_rest_commit_together(
    group_commit_url, opened
):
    store = opened()
    run_sql(group_commit_url, **_POISON)
    store.append([new_event("hot", 1)], {"hot": 0})
    store.append(
        [new_event("seen", 1, event_id="taken")], {"seen": 0}, CommandRecord("c0", "f", {})
    )
    plain = {
        f"plain-{i}": (
            [new_event(f"p{i}-a", 1), new_event(f"p{i}-b", 1)],
            {f"p{i}-a": 0, f"p{i}-b": 0},
            CommandRecord(f"cmd-{i}", "f", {"i": i}),
        )
        for i in range(12)
    }
    refused = {
        "stale": ([new_event("hot", 1)], {"hot": 0}, None),
        "known command": ([new_event("fresh", 1)], {"fresh": 0}, CommandRecord("c0", "g", {})),
        "known event id": ([new_event("other", 1, event_id="taken")], {"other": 0}, None),
        "poisoned": ([new_event("sick", 1)], {"sick": 0}, CommandRecord("poison", "f", {})),
    }
    racing = {f"race-{i}": ([new_event("race", 1)], {"race": 0}, None) for i in range(2)}
    appends = {**plain, **refused, **racing}
    group = store.group_commit
    before = (group.transactions, group.appends)

    with ThreadPoolExecutor(len(appends)) as pool:
        with append_lock_held(group_commit_url):
            futures = {name: pool.submit(store.append, *args) for name, args in appends.items()}
            wait_until(lambda: group.in_flight == len(appends))
        outcomes = {name: outcome(future) for name, future in futures.items()}

    assert {outcomes[name] for name in plain} == {"ok"}
    assert [outcomes[name] for name in refused] == [
        "ConcurrencyConflict", "DuplicateCommand", "DuplicateEvent", "StoreError",
    ]  # fmt: skip
    assert sorted(outcomes[name] for name in racing) == ["ConcurrencyConflict", "ok"]
    # The leader takes its batch once its transaction is open, i.e. once it holds the lock:
    # everything queued meanwhile commits in that one transaction.
    assert group.transactions - before[0] == 1
    assert group.appends - before[1] == len(plain) + 1
    for events, _, command in plain.values():
        stored = [store.read_stream(event.aggregate_id)[0].event_id for event in events]
        assert stored == [event.event_id for event in events]
        assert store.find_command(command.command_id) is not None
    streams = ("hot", "fresh", "other", "sick", "race")  # sick: its savepoint undid its event
    assert [len(store.read_stream(stream)) for stream in streams] == [1, 0, 0, 0, 1]
    assert store.find_command("c0").fingerprint == "f"  # not overwritten by the refused one


def test_appends_in_one_batch_see_the_ones_accepted_before_them(group_commit_url, opened):
    """Screening is in queue order: v1 then v2 of one stream both land in one transaction;
    a later append expecting the old head conflicts, as it would after a commit."""
    store = opened()
    group = store.group_commit
    queued = [
        ("v1", [new_event("chain", 1)], {"chain": 0}),
        ("v2", [new_event("chain", 2)], {"chain": 1}),
        ("stale", [new_event("chain", 2)], {"chain": 1}),
        ("v3", [new_event("chain", 3)], {"chain": 2}),
    ]
    before = group.transactions
    with ThreadPoolExecutor(len(queued)) as pool:
        with append_lock_held(group_commit_url):
            futures = {}
            for number, (name, events, expected) in enumerate(queued, start=1):
                futures[name] = pool.submit(store.append, events, expected)
                wait_until(lambda n=number: group.in_flight == n)  # queued in this order
        outcomes = {name: outcome(future) for name, future in futures.items()}
    assert outcomes == {"v1": "ok", "v2": "ok", "stale": "ConcurrencyConflict", "v3": "ok"}
    assert group.transactions - before == 1  # v1 leads, meets the lock, then takes them all
    assert [e.version for e in store.read_stream("chain")] == [1, 2, 3]


def test_an_append_built_on_a_refused_one_is_refused_though_the_version_it_expects_is_there(
    group_commit_url, opened
):
    """``previous_hashes`` (contract.QueuesAppends): ``next_`` was decided on ``mine`` while it
    was queued. A third party took v2 first, so ``mine`` is refused, and ``next_`` must be too,
    although v2 now exists as it expected. Appends built on accepted ones go through, in one
    transaction."""
    store = opened()
    group = store.group_commit
    (first,) = chained([new_event("acct", 1)], {})
    (theirs,) = chained([new_event("acct", 2)], {"acct": first.hash})
    (mine,) = chained([new_event("acct", 2)], {"acct": first.hash})
    (next_,) = chained([new_event("acct", 3)], {"acct": mine.hash})
    store.append([first], {"acct": 0})
    store.append([theirs], {"acct": 1})
    wait_mine = store.submit_append([mine], {"acct": 1}, None, {"acct": first.hash})
    wait_next = store.submit_append([next_], {"acct": 2}, None, {"acct": mine.hash})
    for wait in (wait_mine, wait_next):
        with pytest.raises(ConcurrencyConflict):
            wait()

    (v3,) = chained([new_event("acct", 3)], {"acct": theirs.hash})
    (v4,) = chained([new_event("acct", 4)], {"acct": v3.hash})
    before = group.transactions
    waits = [
        store.submit_append([v3], {"acct": 2}, None, {"acct": theirs.hash}),
        store.submit_append([v4], {"acct": 3}, None, {"acct": v3.hash}),
    ]
    assert [len(wait()) for wait in waits] == [1, 1]
    assert group.transactions - before == 1
    stored = [event.event_id for event in store.read_stream("acct")]
    assert stored == [first.event_id, theirs.event_id, v3.event_id, v4.event_id]
    with pytest.raises(InvalidInput, match="previous_hashes"):
        store.submit_append([new_event("acct", 5)], {"acct": 4}, None, {"other": v4.hash})


@contextmanager
def own_batches_held(group: GroupCommit) -> Iterator[None]:
    """This store's group commit opens no transaction until the block ends; other stores (other
    processes) write meanwhile."""
    gate, original = threading.Event(), group._transaction

    @contextmanager
    def gated() -> Iterator[object]:
        gate.wait(30)
        with original() as conn:
            yield conn

    group._transaction = gated
    try:
        yield
    finally:
        gate.set()
        group._transaction = original


def test_commands_on_one_account_decide_on_queued_ones_and_commit_together(
    group_commit_url, opened
):
    """The stream lock is released once an append is queued: six deposits on one account are
    all decided while the first waits for the write lock, then commit in one transaction, each
    on the balance the one before it leaves."""
    store = opened()
    service = LedgerService(store)
    service.open_account("hot", owner="Ann", account_type="CHECKING", initial_deposit="100")
    group = store.group_commit
    before = group.transactions
    with ThreadPoolExecutor(6) as pool:
        with append_lock_held(group_commit_url):
            futures = [pool.submit(service.deposit, "hot", "1.00") for _ in range(6)]
            wait_until(lambda: group.in_flight == 6)
        receipts = [future.result(timeout=30) for future in futures]
    assert group.transactions - before == 1
    balances = sorted(receipt.outcome["account"]["balance"] for receipt in receipts)
    assert balances == [f"{100 + n}.00" for n in range(1, 7)]
    assert LedgerService(opened()).get_account("hot").balance_minor == 10_600


def test_a_command_decided_on_a_queued_one_that_fails_is_decided_again(group_commit_url, opened):
    """A withdrawal of 70 is decided on the 70 that a queued withdrawal of 30 will leave. Then
    another process withdraws 50 first: the 30 conflicts and is retried (20 left), and the 70,
    though the version it expects now exists, must conflict too and be decided again: refused.
    Were it written, the account would be overdrawn."""
    ours, theirs = LedgerService(opened()), LedgerService(opened())
    ours.open_account("acct", owner="Ann", account_type="CHECKING", initial_deposit="100")
    group = ours.store.group_commit
    with ThreadPoolExecutor(2) as pool:
        with own_batches_held(group):
            thirty = pool.submit(ours.withdraw, "acct", "30")
            wait_until(lambda: group.in_flight == 1)
            seventy = pool.submit(ours.withdraw, "acct", "70")
            wait_until(lambda: group.in_flight == 2)
            theirs.withdraw("acct", "50")
        assert thirty.result(timeout=30).outcome["account"]["balance"] == "20.00"
        with pytest.raises(InsufficientFunds):
            seventy.result(timeout=30)
    assert LedgerService(opened()).get_account("acct").balance_minor == 2_000
    assert Auditor(opened()).run().clean


def test_instrumented_appends_are_counted_and_never_left_pending(store):
    """The HTTP service's metrics wrapper (observability.InstrumentedStore) queues appends where
    the engine does and counts each answer; over an engine that does not queue (DynamoDB),
    ``submit_append`` has appended before it returns, so no command is ever decided on a
    pending append that no head hash would guard."""
    metrics = Metrics()
    instrumented = InstrumentedStore(store, metrics, "e")
    (first,) = chained([new_event("m", 1)], {})
    wait = instrumented.submit_append([first], {"m": 0}, None, {"m": GENESIS_HASH})
    if not hasattr(type(store), "submit_append"):
        assert [e.event_id for e in store.read_stream("m")] == [first.event_id]
    assert [e.event_id for e in wait()] == [first.event_id]
    with pytest.raises(ConcurrencyConflict):
        instrumented.append([new_event("m", 1)], {"m": 0})

    def count(outcome: str) -> float | None:
        labels = {"engine": "e", "outcome": outcome}
        return metrics.registry.get_sample_value("eventbank_appends_total", labels)

    assert (count("ok"), count("conflict")) == (1.0, 1.0)


def test_a_batch_larger_than_one_insert_statement_is_written_whole_and_in_order(
    group_commit_url, opened
):
    """A batch's rows go in 1,000 per INSERT (screening.ROWS_PER_INSERT); positions still
    follow queue order across the statements."""
    store = opened()
    group = store.group_commit
    sizes = (700, 700, 700)  # one batch of 2,100 rows once the lock is released
    with ThreadPoolExecutor(len(sizes)) as pool:
        with append_lock_held(group_commit_url):
            futures = []
            for n, size in enumerate(sizes):
                events = [new_event(f"big-{n}", v) for v in range(1, size + 1)]
                futures.append(pool.submit(store.append, events, {f"big-{n}": 0}))
                wait_until(lambda k=n + 1: group.in_flight == k)
        written = [future.result(timeout=60) for future in futures]
    positions = [event.position for batch in written for event in batch]
    assert positions == sorted(positions) and len(set(positions)) == sum(sizes)
    for n, size in enumerate(sizes):
        assert [e.version for e in store.read_stream(f"big-{n}")] == list(range(1, size + 1))


def test_when_the_shared_transaction_fails_no_append_in_it_is_acknowledged(
    group_commit_url, opened
):
    store = opened()
    run_sql(group_commit_url, **_DOOM)
    group = store.group_commit
    streams = ["first", "s1", "s2", "doom", "s3", "s4"]
    with ThreadPoolExecutor(len(streams)) as pool:
        with append_lock_held(group_commit_url):
            futures = {"first": pool.submit(store.append, [new_event("first", 1)], {"first": 0})}
            wait_until(lambda: group.in_flight == 1)  # it leads, and meets the lock
            for stream in streams[1:]:
                futures[stream] = pool.submit(store.append, [new_event(stream, 1)], {stream: 0})
            wait_until(lambda: group.in_flight == len(streams))
        errors = {stream: future.exception(timeout=30) for stream, future in futures.items()}
    failed = {stream for stream, error in errors.items() if error is not None}
    assert "doom" in failed and len(failed) > 1  # 'doom' never commits, nor anything beside it
    assert all(isinstance(errors[stream], StoreError) for stream in failed)
    assert group.appends == len(streams) - len(failed)
    assert {event.aggregate_id for event in store.read_all()} == set(streams) - failed


# Writers in threads, each appending two-stream batches with a command record to its own pair
# of streams, printing each acknowledged key the moment its append returns.
_CRASHING_WRITER = textwrap.dedent("""
    import os, sys, threading
    from eventbank.ports.event_store import CommandRecord, NewEvent
    from eventbank.engines.urls import open_store

    store = open_store(sys.argv[1])

    def event(stream, version, event_id):
        return NewEvent(event_id, stream, "Test", version, "Happened", 1, {"n": version})

    def write(writer):
        a, b = f"w{writer}-a", f"w{writer}-b"
        for n in range(1_000_000):
            key = f"{writer}.{n}"
            store.append([event(a, n + 1, key + ".a"), event(b, n + 1, key + ".b")],
                         {a: n, b: n}, CommandRecord("cmd-" + key, "f", {}))
            os.write(1, f"{key}\\n".encode())  # one small write to a pipe: never interleaved

    for writer in range(8):
        threading.Thread(target=write, args=(writer,)).start()
""")


def test_a_writer_killed_mid_run_loses_no_acknowledged_append_and_leaves_no_half(
    group_commit_url, opened
):
    opened().close()  # create the schema first, so the writer starts appending at once
    writer = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, group_commit_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(60, writer.kill)
    watchdog.start()
    kill_after = random.randint(100, 500)
    acknowledged = []
    try:
        for line in writer.stdout:
            acknowledged.append(line.strip())
            if len(acknowledged) == kill_after:
                break
    finally:
        writer.kill()  # SIGKILL: no cleanup, no flush, mid-batch with high probability
        watchdog.cancel()
    rest, errors = writer.communicate(timeout=30)
    assert len(acknowledged) == kill_after, errors
    acknowledged += [line for line in rest.splitlines() if line]

    store = opened()
    stored: dict[str, set[str]] = {}
    for event in store.read_all(limit=10_000):
        key, half = event.event_id.rsplit(".", 1)
        stored.setdefault(key, set()).add(half)
    assert set(acknowledged) <= set(stored), "an acknowledged append is missing"
    assert all(halves == {"a", "b"} for halves in stored.values()), "half an append survived"
    assert all(store.find_command(f"cmd-{key}") is not None for key in stored)
    for w in range(8):  # each writer's appends are a gap-free prefix of what it attempted
        versions = [e.version for e in store.read_stream(f"w{w}-a")]
        assert versions == list(range(1, len(versions) + 1))
        assert len(store.read_stream(f"w{w}-b")) == len(versions)


def test_when_the_write_lock_is_never_granted_every_queued_append_is_told_and_none_written(
    group_commit_url,
):
    """The leader opens its transaction before it takes its batch; when that fails (its wait
    for the engine's write lock times out), the callers queued meanwhile share the failure:
    each gets a retryable error, none is answered as written, and the next append goes in."""
    if group_commit_url.startswith("sqlite"):
        store: EventStore = SqliteEventStore(sqlite_path(group_commit_url), busy_timeout_s=0.3)
    else:
        store = PostgresEventStore(group_commit_url, lock_timeout_s=0.3)
    streams = [f"s{n}" for n in range(4)]
    with ThreadPoolExecutor(len(streams)) as pool, append_lock_held(group_commit_url):
        futures = [pool.submit(store.append, [new_event(s, 1)], {s: 0}) for s in streams]
        errors = [future.exception(timeout=30) for future in futures]
    assert [type(error) for error in errors] == [StoreUnavailable] * len(streams)
    assert store.group_commit.in_flight == 0 and store.group_commit.transactions == 0
    assert store.read_all() == []
    store.append([new_event("after", 1)], {"after": 0})
    assert [event.aggregate_id for event in store.read_all()] == ["after"]
    store.close()


def test_a_lone_append_waits_for_no_one_and_commits_alone(opened):
    store = opened("group_commit_wait_ms=1000")  # the most a batch may wait for company
    started = time.monotonic()
    for version in range(1, 6):
        store.append([new_event("solo", version)], {"solo": version - 1})
    # Lingering for company never coming, the five would take 5 s at least; counted over all
    # five, one commit slowed by a busy machine does not fail it.
    assert time.monotonic() - started < 4.5
    assert (store.group_commit.transactions, store.group_commit.appends) == (5, 5)


def test_group_commit_is_set_by_url_parameters_and_can_be_turned_off(opened):
    store = opened("group_commit_max=1&group_commit_wait_ms=0.5")
    assert (store.group_commit.max_batch, store.group_commit.max_wait_s) == (1, 0.0005)
    with ThreadPoolExecutor(8) as pool:
        for n in range(8):
            pool.submit(store.append, [new_event(f"s{n}", 1)], {f"s{n}": 0})
    assert (store.group_commit.transactions, store.group_commit.appends) == (8, 8)
    for nonsense in ("group_commit_max=0", "group_commit_max=1.5", "group_commit_wait_ms=nan"):
        with pytest.raises(InvalidInput, match=nonsense.split("=")[0]):
            opened(nonsense)


def test_a_misspelt_sqlite_url_parameter_is_refused_not_ignored(sqlite_store_url):
    with pytest.raises(InvalidInput, match="unknown SQLite URL parameter"):
        open_store(sqlite_store_url + "?group_comit_max=4")


# ---------------------------------------------------------------- a leader that does not return


class HeldEngine:
    """GroupCommit's engine in memory, whose transactions can be held where an engine's can hang:
    while opening (before the leader takes its batch) and at the commit, each until set."""

    def __init__(self) -> None:
        self.opening, self.committing = threading.Event(), threading.Event()
        self.opening.set()
        self.committing.set()
        self.opened = 0
        self.committed: list[object] = []

    @contextmanager
    def transaction(self) -> Iterator[list[object]]:
        self.opened += 1  # only a leader opens one, one at a time
        assert self.opening.wait(30)
        written: list[object] = []
        yield written
        assert self.committing.wait(30)
        self.committed += written

    def write_many(self, written: list[object], items: list[object]) -> list[object]:
        written += items
        return [f"stored {item}" for item in items]

    def release(self) -> None:
        self.opening.set()
        self.committing.set()


def test_a_follower_whose_leader_hangs_before_taking_it_gives_up_and_is_never_written():
    """Still queued when its time is up: taken out of the queue, so the leader, once it goes on,
    never writes it; the queue and the counts stay whole and the next append goes through."""
    engine = HeldEngine()
    group = GroupCommit(engine.transaction, engine.write_many, follower_timeout_s=0.5)
    engine.opening.clear()
    try:
        with ThreadPoolExecutor(3) as pool:
            started = time.monotonic()
            waits = [group.submit(item) for item in ("lead", "f0", "f1")]
            leader, *followers = [pool.submit(wait) for wait in waits]
            for follower in followers:
                with pytest.raises(StoreUnavailable, match="nothing was written"):
                    follower.result(timeout=15)
            assert time.monotonic() - started < 15  # not the 30 s opening wait
            assert engine.opened == 1 and group.in_flight == 1 and not leader.done()
            engine.opening.set()
            assert leader.result(timeout=5) == "stored lead"
    finally:
        engine.release()
    assert engine.committed == ["lead"]
    assert (group.transactions, group.appends, group.in_flight) == (1, 1, 0)
    assert group.submit("after")() == "stored after"


def test_a_follower_whose_batch_does_not_commit_in_time_is_told_its_outcome_is_unknown():
    """Already in the batch being written when its time is up: that cannot be undone, so the
    follower gets StoreUnavailable (outcome unknown; a retry is safe by command id, as after a
    connection lost during a COMMIT), once: the leader's late answer is dropped. The leader
    itself is answered only when its commit returns."""
    engine = HeldEngine()
    group = GroupCommit(engine.transaction, engine.write_many, follower_timeout_s=5.0)
    engine.opening.clear()
    engine.committing.clear()
    try:
        with ThreadPoolExecutor(3) as pool:
            waits = [group.submit(item) for item in ("lead", "f0", "f1")]
            leader, *followers = [pool.submit(wait) for wait in waits]
            wait_until(lambda: engine.opened == 1)
            engine.opening.set()  # the leader takes all three, then its commit hangs
            for follower in followers:
                with pytest.raises(StoreUnavailable, match="outcome is unknown"):
                    follower.result(timeout=15)
            assert not leader.done() and group.in_flight == 3
            engine.committing.set()
            assert leader.result(timeout=5) == "stored lead"
    finally:
        engine.release()
    assert engine.committed == ["lead", "f0", "f1"]  # landed, unknown to their callers
    assert (group.transactions, group.appends, group.in_flight) == (1, 1, 0)
    assert group.submit("after")() == "stored after"


def test_a_follower_timeout_must_be_positive():
    engine = HeldEngine()
    for nonsense in (0, -1.0, "5"):
        with pytest.raises(InvalidInput, match="follower_timeout_s"):
            GroupCommit(engine.transaction, engine.write_many, follower_timeout_s=nonsense)


# ---------------------------------------------------------------- the service's account cache


class Retries:
    """A CommandObserver that keeps the reasons of retries."""

    def __init__(self):
        self.reasons = []

    def command_finished(self, command, outcome, seconds):
        pass

    def command_retried(self, command, reason):
        self.reasons.append(reason)


def test_a_stale_cached_account_is_caught_by_the_store_and_answered_correctly(make_store):
    retries = Retries()
    ours = LedgerService(make_store(), observer=retries)
    theirs = LedgerService(make_store())  # another process, as far as `ours` can tell
    ours.open_account("acc", owner="Ann", account_type="CHECKING", initial_deposit="100")
    theirs.withdraw("acc", "60.00")  # `ours` still holds 100.00 at version 2
    with pytest.raises(InsufficientFunds):
        ours.withdraw("acc", "50.00")  # decided on 100.00, refused by the store, re-decided
    assert retries.reasons == ["ConcurrencyConflict"]
    theirs.deposit("acc", "100.00")  # 140.00; `ours` holds 40.00
    receipt = ours.withdraw("acc", "120.00")  # refused on 40.00, so decided again on the store's
    assert receipt.outcome["account"]["balance"] == "20.00"
    assert retries.reasons == ["ConcurrencyConflict"]
    assert LedgerService(make_store()).get_account("acc").describe()["balance"] == "20.00"


def test_once_a_cached_account_proved_stale_another_writers_moves_cost_no_conflict(make_store):
    """account_cache.py: after one refusal, the streams of a command are caught up in one read
    before deciding, so a second writer's moves are folded on instead of refused."""
    retries = Retries()
    ours = LedgerService(make_store(), observer=retries)
    theirs = LedgerService(make_store())
    ours.open_account("acc", owner="Ann", account_type="CHECKING", initial_deposit="100")
    ours.open_account("other", owner="Bob", account_type="CHECKING")
    theirs.deposit("acc", "1.00")
    ours.withdraw("acc", "1.00")  # decided on 100.00 at version 2: refused, re-read, done
    assert retries.reasons == ["ConcurrencyConflict"]
    for _ in range(3):
        theirs.deposit("acc", "10.00")
        theirs.deposit("other", "1.00")
        ours.transfer("acc", "other", "5.00")
    assert retries.reasons == ["ConcurrencyConflict"]  # caught up, never refused again
    fresh = LedgerService(make_store())
    assert [fresh.get_account(a).describe()["balance"] for a in ("acc", "other")] == [
        "115.00", "18.00",
    ]  # fmt: skip


def test_catching_up_folds_on_the_stores_newer_events_and_keeps_only_what_it_can_trust(store):
    service = LedgerService(store)
    for sid in ("behind", "queued", "passed"):
        service.open_account(sid, owner="Ann", account_type="CHECKING", initial_deposit="10")
    cache = AccountCache()
    for sid in ("behind", "queued", "passed"):
        cache.put(*service._load(sid))  # committed at version 2
    service.deposit("behind", "5.00")  # the store moved on past the cached state
    for sid in ("queued", "passed"):  # as if this process had queued version 3, not yet written
        state, _ = cache.get(sid)
        cache.put(dataclasses.replace(state, version=3, balance_minor=2_000), "h3", pending=True)
    service.deposit("passed", "1.00")  # another writer took version 3: the queued append fails
    pending = cache.get("queued")
    service.open_account("steady", owner="Bo", account_type="CHECKING", initial_deposit="10")
    service.open_account("refused", owner="Cy", account_type="CHECKING", initial_deposit="10")
    for sid in ("steady", "refused"):
        cache.put(*service._load(sid))
    cache.found_stale(["refused"])  # a refusal the store's newer events do not explain
    cache.catch_up(store, ["behind", "queued", "passed", "steady", "refused"])
    assert cache.get("behind")[0].describe()["balance"] == "15.00"
    assert cache.get("behind") == service._load("behind")
    assert cache.get("queued") == pending
    assert cache.get("passed") == service._load("passed")
    assert cache.get("steady") == service._load("steady")
    assert cache.get("refused") is None  # for the caller to read whole


def test_a_failed_append_takes_only_its_pending_states_out_of_the_cache():
    cache = AccountCache()
    committed = Account("acc", "Ann", "CHECKING", "USD", 1_000, "OPEN", version=2)
    cache.put(committed, "h2")
    cache.put(dataclasses.replace(committed, version=3), "h3", pending=True)
    cache.put(dataclasses.replace(committed, version=4), "h4", pending=True)  # built on it
    assert cache.get("acc")[1] == "h4"
    cache.put(dataclasses.replace(committed, version=3), "h3")  # the first append was written
    assert cache.get("acc")[1] == "h4"  # the second is still queued
    cache.drop_pending(["acc"])  # and failed
    assert cache.get("acc") == (dataclasses.replace(committed, version=3), "h3")
    cache.put(dataclasses.replace(committed, version=4), "h4'", pending=True)
    cache.put(dataclasses.replace(committed, version=5), "h5")  # read from the store: past it
    cache.drop_pending(["acc"])
    assert cache.get("acc")[1] == "h5"
    cache.put(dataclasses.replace(committed, version=1), "h1", pending=True)  # behind: ignored
    assert cache.get("acc")[1] == "h5"
    cache.forget(["acc"])
    cache.put(committed, "h2", pending=True)
    cache.drop_pending(["acc"])  # nothing committed under it: nothing left
    assert cache.get("acc") is None


def test_a_group_refused_for_one_stale_account_is_caught_up_in_one_read(opened):
    """A conflict fails the whole group's append; its accounts' committed states stay cached
    (account_cache.py), and deciding the group again catches them up in one read: none is
    read whole again."""
    store = opened()
    ours = LedgerService(store)
    assert ours.groups_appends  # so the group is one append, refused as one
    theirs = LedgerService(opened())
    for sid in ("a", "b", "c", "d"):
        ours.open_account(sid, owner="Ann", account_type="CHECKING", initial_deposit="100")
    theirs.deposit("a", "1.00")  # `ours` holds a at version 2, the store at 3
    read_whole: list[str] = []
    caught_up: list[list[str]] = []
    read_stream, read_streams = store.read_stream, store.read_streams
    store.read_stream = lambda sid, *rest: read_whole.append(sid) or read_stream(sid, *rest)
    store.read_streams = lambda after: caught_up.append(sorted(after)) or read_streams(after)
    answers = ours.transfer_each([BatchItem("a", "b", "5.00", "k1"),
                                  BatchItem("c", "d", "5.00", "k2")])  # fmt: skip
    assert [answer.outcome["from"]["balance"] for answer in answers] == ["96.00", "95.00"]
    assert read_whole == []
    assert caught_up == [["a", "b", "c", "d"]]


def test_within_one_command_a_stream_is_caught_up_once(store):
    counting = CountingReads(store)
    service = LedgerService(store)
    service.open_account("acc-1", owner="Ann", account_type="CHECKING", initial_deposit="10")
    cache = AccountCache()
    cache.put(*service._load("acc-1"))
    cache.catch_up(counting, ["acc-1"])
    assert not counting.reads  # no other writer seen: nothing is checked
    cache.found_stale([])
    with cache.checking_once():
        cache.catch_up(counting, ["acc-1"])
        cache.catch_up(counting, ["acc-1"])
        assert counting.reads == Counter(read_streams=1)
        cache.found_stale(["acc-2"])  # a retry within the block checks again what it uses
        cache.catch_up(counting, ["acc-1"])
        cache.catch_up(counting, ["acc-1"])
    cache.catch_up(counting, ["acc-1"])
    assert counting.reads == Counter(read_streams=3)


class CountingReads:
    """Wraps a real store and counts the reads the service makes."""

    def __init__(self, store):
        self._store, self.reads = store, Counter()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_stream(self, aggregate_id, after_version=0):
        self.reads["read_stream"] += 1
        return self._store.read_stream(aggregate_id, after_version)

    def load_snapshot(self, aggregate_id):
        self.reads["load_snapshot"] += 1
        return self._store.load_snapshot(aggregate_id)

    def find_command(self, command_id):
        self.reads["find_command"] += 1
        return self._store.find_command(command_id)

    def read_streams(self, after_versions):
        self.reads["read_streams"] += 1
        return self._store.read_streams(after_versions)

    def load_snapshots(self, aggregate_ids):
        self.reads["load_snapshots"] += 1
        return self._store.load_snapshots(aggregate_ids)


def test_accounts_not_cached_are_read_together_from_their_snapshots_on(store):
    """A command's accounts this process has not cached cost two reads of the store in all
    (their snapshots, then the events after each), not two per account."""
    writer = LedgerService(store, snapshot_every=5)
    writer.open_account("snapped", owner="Ann", account_type="CHECKING", initial_deposit="100")
    writer.open_account("plain", owner="Bob", account_type="CHECKING")
    for _ in range(5):
        writer.deposit("snapped", "1.00")  # versions 3 to 7: a snapshot at 5, two events after
    assert store.load_snapshot("snapped").version == 5
    counting = CountingReads(store)
    cold = LedgerService(counting)
    receipt = cold.transfer("snapped", "plain", "4.00")
    assert counting.reads == Counter(load_snapshots=1, read_streams=1)
    assert receipt.outcome["from"]["balance"] == "101.00"
    assert receipt.outcome["from"]["version"] == 8
    assert LedgerService(store).get_account("plain").describe()["balance"] == "4.00"


def test_commands_on_hot_accounts_read_nothing_they_already_know(store):
    counting = CountingReads(store)
    service = LedgerService(counting, snapshot_every=5)
    service.open_account("acc-1", owner="Ann", account_type="CHECKING", initial_deposit="100")
    service.open_account("acc-2", owner="Bob", account_type="SAVINGS")
    counting.reads.clear()
    for _ in range(12):
        service.transfer("acc-1", "acc-2", "1.00")
    service.deposit("acc-2", "5.00", command_id="dep-1")
    assert not counting.reads  # states from the cache, and no look-up before a first run
    assert service.deposit("acc-2", "5.00", command_id="dep-1").replayed  # the append's check
    assert counting.reads == Counter(find_command=1)
    assert store.load_snapshot("acc-1").version == 10  # snapshots are still taken
    fresh = LedgerService(store)
    assert [fresh.get_account(a).describe()["balance"] for a in ("acc-1", "acc-2")] == [
        "88.00", "17.00",
    ]  # fmt: skip


def test_a_repeated_command_is_replayed_even_where_deciding_again_would_refuse_it(service):
    """No look-up precedes a first run, so a repeat is recognised by the append's check or, when
    the repeat's own decision is refused (the money is gone), by a look-up before refusing."""
    service.open_account("acc", owner="Ann", account_type="CHECKING", initial_deposit="100")
    first = service.withdraw("acc", "80.00", command_id="w-1")
    again = service.withdraw("acc", "80.00", command_id="w-1")  # 20.00 left: it would be refused
    assert again.replayed and again.outcome == first.outcome
    with pytest.raises(IdempotencyKeyReused):
        service.withdraw("acc", "90.00", command_id="w-1")
    with pytest.raises(InsufficientFunds):
        service.withdraw("acc", "80.00", command_id="w-2")
    assert service.get_account("acc").describe()["balance"] == "20.00"


def test_the_cache_is_bounded_and_only_moves_forward():
    from eventbank.domain.account import Account, AccountStatus, AccountType

    def state(account_id: str, version: int) -> Account:
        return Account(account_id, "Ann", AccountType.CHECKING, "USD", 0, AccountStatus.OPEN,
                       version)  # fmt: skip

    cache = AccountCache(capacity=2)
    cache.put(state("a", 3), "h3")
    cache.put(state("a", 2), "h2")  # an older read racing a newer write changes nothing
    assert cache.get("a") == (state("a", 3), "h3")
    cache.put(state("b", 1), "h")
    cache.get("a")  # a is now the most recently used
    cache.put(state("c", 1), "h")
    assert (cache.get("a") is not None, cache.get("b"), cache.get("c") is not None) == (
        True, None, True,
    )  # fmt: skip
    cache.forget(["a"])
    assert cache.get("a") is None


def test_commands_of_one_process_on_one_account_take_turns_instead_of_conflicting(store):
    """Stream locks (stream_locks.py): 8 threads hammering two accounts never meet a version
    conflict of their own making, every transfer lands once, and no lock outlives its use."""
    retries = Retries()
    service = LedgerService(store, observer=retries)
    service.open_account("hot-a", owner="Ann", account_type="CHECKING", initial_deposit="1000")
    service.open_account("hot-b", owner="Bob", account_type="CHECKING", initial_deposit="1000")

    def pay(n: int) -> None:
        for i in range(15):
            source, target = ("hot-a", "hot-b") if (n + i) % 2 else ("hot-b", "hot-a")
            service.transfer(source, target, "1.00", command_id=f"t-{n}-{i}")

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(pay, n) for n in range(8)]:
            done.result(timeout=60)
    assert retries.reasons == []
    fresh = LedgerService(store)
    balances = [fresh.get_account(a).balance_minor for a in ("hot-a", "hot-b")]
    assert balances == [100_000, 100_000]  # 60 each way
    assert fresh.get_account("hot-a").version == 2 + 120
    assert len(service._stream_locks) == 0
