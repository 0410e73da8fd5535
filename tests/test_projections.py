"""Projections are exactly-once and order-safe: any delivery order gives a replay's result."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventbank.application.projections import accounts
from eventbank.application.projections import runner as runner_module
from eventbank.application.projections.runner import ProjectionRunner, Projector
from eventbank.application.projections.written_rows import WrittenRows
from eventbank.application.queries import AccountQueries
from eventbank.application.service import LedgerService
from eventbank.domain.errors import InvalidInput, RuleViolation
from eventbank.domain.money import format_minor
from eventbank.engines.urls import open_read_store, open_store
from eventbank.ports.event_store import NewEvent
from eventbank.ports.read_store import BalanceRow, summarize
from eventbank.wiring import open_ledger


@pytest.fixture
def stores(store_url, read_store_url):
    events, reads = open_store(store_url), open_read_store(read_store_url)
    yield events, reads
    reads.close()
    events.close()


def run_workload(service: LedgerService, rng: random.Random, ops: int = 60) -> None:
    """Random opens, deposits, withdrawals, transfers and closes; refusals are part of life."""
    opened: list[str] = []
    for step in range(ops):
        kind = rng.choice(["open", "deposit", "withdraw", "transfer", "transfer", "close"])
        try:
            if kind == "open" or len(opened) < 2:
                account = f"acc-{len(opened)}"
                initial = format_minor(rng.randint(0, 50_000), "USD") if step % 2 else None
                service.open_account(account, owner=f"Owner {account}", account_type="CHECKING",
                                     initial_deposit=initial)  # fmt: skip
                opened.append(account)
            elif kind == "transfer":
                a, b = rng.sample(opened, 2)
                service.transfer(a, b, format_minor(rng.randint(1, 20_000), "USD"))
            elif kind == "close":
                service.close_account(rng.choice(opened))
            else:
                method = service.deposit if kind == "deposit" else service.withdraw
                method(rng.choice(opened), format_minor(rng.randint(1, 20_000), "USD"))
        except RuleViolation:
            pass


def all_events(events):
    feed, position = [], 0
    while page := events.read_all(position, 1000):
        feed.extend(page)
        position = page[-1].position
    return feed


def assert_read_models_equal_replay(events, reads) -> None:
    """Balances against the domain's own fold; movements and totals against a fresh replay."""
    service = LedgerService(events)
    ids = sorted({e.aggregate_id for e in all_events(events)})
    totals: dict[str, list[int]] = {}
    for account_id in ids:
        account = service.get_account(account_id)
        row = reads.balance(account_id)
        assert row is not None, account_id
        assert (row.balance_minor, row.version, row.status, row.owner, row.currency) == (
            account.balance_minor, account.version, str(account.status), account.owner,
            account.currency,
        )  # fmt: skip
        replayed, moves = AccountQueries(reads, events)._replay(account_id)
        assert reads.transactions(account_id, 0, 10_000) == moves
        total = totals.setdefault(account.currency, [0, 0])
        total[0] += str(account.status) == "OPEN"
        total[1] += account.balance_minor
    assert [(t.currency, t.accounts_open, t.balance_minor) for t in reads.totals()] == [
        (currency, n, minor) for currency, (n, minor) in sorted(totals.items())
    ]


def test_after_a_random_workload_read_models_equal_a_replay(stores):
    events, reads = stores
    run_workload(LedgerService(events), random.Random(7))
    runner = ProjectionRunner(Projector(events, reads), batch_size=13)
    assert runner.catch_up() == len(all_events(events))
    assert_read_models_equal_replay(events, reads)
    assert runner.status().lag_events == 0


def test_duplicated_and_shuffled_deliveries_do_not_change_the_result(stores):
    events, reads = stores
    run_workload(LedgerService(events), random.Random(11))
    feed = all_events(events)
    deliveries = feed + random.Random(3).sample(feed, len(feed)) + feed[::-1]
    random.Random(5).shuffle(deliveries)
    projector = Projector(events, reads)
    for start in range(0, len(deliveries), 17):
        projector.project(deliveries[start : start + 17])
    assert_read_models_equal_replay(events, reads)


def test_inline_projection_keeps_reads_current_and_the_runner_skips_what_it_did(
    store_url, read_store_url
):
    ledger = open_ledger(store_url, read_store_url)
    try:
        ledger.service.open_account("a", owner="Ann", account_type="CHECKING", initial_deposit="9")
        receipt = ledger.service.withdraw("a", "4.50")
        assert ledger.reads.balance("a").balance_minor == 450
        assert ledger.runner.status().lag_events == 0  # projected, though no checkpoint moved
        assert ledger.queries.balance("a", receipt.outcome["account"]["version"])["balance"] == (
            "4.50"
        )
        ledger.runner.catch_up()
        assert_read_models_equal_replay(ledger.events, ledger.reads)
    finally:
        ledger.close()


class _CountingBalanceReads:
    """The projector's read store, noting the account ids of each ``balances`` it asks (the
    store's own reads inside ``apply`` are not the projector's)."""

    def __init__(self, reads) -> None:
        self._reads, self.asked = reads, []

    def __getattr__(self, name: str):
        return getattr(self._reads, name)

    def balances(self, account_ids):
        self.asked.append(list(account_ids))
        return self._reads.balances(account_ids)


def _counting_balance_reads(ledger) -> list[list[str]]:
    """The account ids of each ``balances`` read ``ledger``'s projector makes from now."""
    projector = ledger.runner.projector
    projector.reads = _CountingBalanceReads(projector.reads)
    return projector.reads.asked


def test_inline_projection_folds_on_the_rows_it_wrote_without_reading_them(
    store_url, read_store_url
):
    ledger = open_ledger(store_url, read_store_url)
    try:
        for account in ("a", "b"):
            ledger.service.open_account(account, owner="A", account_type="CHECKING",
                                        initial_deposit="10")  # fmt: skip
        asked = _counting_balance_reads(ledger)
        ledger.service.transfer("a", "b", "2.50")
        ledger.service.transfer("b", "a", "1.00")
        assert asked == []
        ledger.service.open_account("c", owner="C", account_type="CHECKING")
        assert asked == [["c"]]  # not written by this process yet: read
        assert [ledger.reads.balance(a).balance_minor for a in ("a", "b")] == [850, 1150]
        ledger.runner.catch_up()
        assert_read_models_equal_replay(ledger.events, ledger.reads)
    finally:
        ledger.close()


def test_rows_moved_on_by_another_process_or_reset_are_never_folded_on_as_they_were(
    store_url, read_store_url
):
    """Another process's writes leave the rows this one remembers behind: they are read
    again. A reset leaves them ahead: the read store refuses the batch, they are forgotten,
    and the runner rebuilds; later batches read the rows again."""
    ledger, other = open_ledger(store_url, read_store_url), open_ledger(store_url, read_store_url)
    try:
        for account in ("a", "b"):
            ledger.service.open_account(account, owner="A", account_type="CHECKING",
                                        initial_deposit="10")  # fmt: skip
        ledger.service.transfer("a", "b", "1.00")
        other.service.transfer("a", "b", "2.00")
        asked = _counting_balance_reads(ledger)
        ledger.service.transfer("b", "a", "0.50")
        assert [sorted(ids) for ids in asked] == [["a", "b"]]  # behind the events: read again
        assert [ledger.reads.balance(a).balance_minor for a in ("a", "b")] == [750, 1250]
        assert_read_models_equal_replay(ledger.events, ledger.reads)

        other.reads.reset(accounts.NAME)
        ledger.service.transfer("a", "b", "0.25")  # committed; its inline projection refused
        assert ledger.reads.balance("a") is None
        asked.clear()
        ledger.runner.catch_up()
        ledger.service.transfer("b", "a", "0.10")
        assert ["a", "b"] in [sorted(ids) for ids in asked]  # read again, not remembered
        assert [ledger.reads.balance(a).balance_minor for a in ("a", "b")] == [735, 1265]
        assert_read_models_equal_replay(ledger.events, ledger.reads)
    finally:
        other.close()
        ledger.close()


def test_remembered_rows_only_move_forward_and_are_bounded():
    def row(account: str, version: int) -> BalanceRow:
        return BalanceRow(account, "A", "CHECKING", "USD", version, "OPEN", version, "")

    written = WrittenRows(capacity=2)
    written.remember([row("a", 3), row("b", 1)])
    written.remember([row("a", 2)])  # a racing batch's older row
    asked: list[list[str]] = []
    rows = written.rows({"a": 4, "b": 2, "c": 1}, lambda ids: asked.append(list(ids)) or {})
    assert (rows["a"].version, rows["b"].version, asked) == (3, 1, [["c"]])
    written.rows({"a": 5, "b": 2}, lambda ids: asked.append(list(ids)) or {})
    assert asked[-1] == ["a"]  # remembered further behind than the event: read again
    written.remember([row("c", 1)])  # the least recently written, b, goes
    assert sorted(written.rows({"a": 4, "b": 2, "c": 2}, lambda ids: {})) == ["a", "c"]
    written.forget()
    assert written.rows({"a": 4}, lambda ids: {}) == {}
    with pytest.raises(InvalidInput):
        WrittenRows(capacity=-1)


def test_read_your_writes_falls_back_to_a_replay_when_the_projection_lags(stores):
    events, reads = stores
    service = LedgerService(events)  # no inline projection: the read model stays empty
    service.open_account("a", owner="Ann", account_type="SAVINGS", initial_deposit="10")
    version = service.deposit("a", "5").outcome["account"]["version"]
    queries = AccountQueries(reads, events, wait_s=0.05)
    assert reads.balance("a") is None
    assert ProjectionRunner(Projector(events, reads)).status().lag_events == 3
    assert queries.balance("a", min_version=version)["balance"] == "15.00"
    assert [h["kind"] for h in queries.history("a", min_version=version)] == ["deposit"] * 2


class FlakyHandler:
    """The real projection, except that one event fails its first ``failures`` attempts."""

    def __init__(self, event_id: str, failures: int):
        self.event_id, self.failures = event_id, failures

    def __call__(self, row, event):
        if event.event_id == self.event_id and self.failures:
            self.failures -= 1
            raise RuntimeError("handler bug")
        return accounts.project(row, event)


def test_a_failing_handler_parks_its_stream_only_and_is_retried_until_it_succeeds(stores):
    events, reads = stores
    service = LedgerService(events)
    service.open_account("bad", owner="B", account_type="CHECKING", initial_deposit="10")
    service.open_account("good", owner="G", account_type="CHECKING", initial_deposit="10")
    poisoned = events.read_stream("bad")[1].event_id
    service.deposit("bad", "1")
    service.deposit("good", "1")
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    projector = Projector(events, reads, handler=FlakyHandler(poisoned, failures=2),
                          clock=lambda: now[0], retry_base_s=10)  # fmt: skip
    runner = ProjectionRunner(projector)

    runner.catch_up()
    assert reads.balance("good").balance_minor == 1100  # not blocked by the other stream
    assert reads.balance("bad").version == 1  # parked right before the failing event
    [failure] = runner.status().failures
    assert (failure.aggregate_id, failure.version, failure.attempts) == ("bad", 2, 1)
    assert "handler bug" in failure.error

    runner.run_once()  # not due yet: nothing retried
    assert runner.status().failures[0].attempts == 1
    now[0] += timedelta(seconds=11)
    runner.run_once()  # due: fails again, backs off longer
    assert runner.status().failures[0].attempts == 2
    now[0] += timedelta(seconds=21)
    runner.run_once()  # due: succeeds and catches up the whole stream
    assert runner.status().failures == []
    assert_read_models_equal_replay(events, reads)


class CountingFailures:
    """A real read store that counts its reads of the parked streams."""

    def __init__(self, reads):
        self._reads, self.failure_reads = reads, 0

    def __getattr__(self, name):
        return getattr(self._reads, name)

    def failures(self, projection):
        self.failure_reads += 1
        return self._reads.failures(projection)


def test_the_parked_streams_are_read_only_for_a_batch_with_a_gap_or_a_failure(
    sqlite_store_url, sqlite_read_store_url
):
    events = open_store(sqlite_store_url)
    reads = CountingFailures(open_read_store(sqlite_read_store_url))
    try:
        service = LedgerService(events)
        service.open_account("bad", owner="B", account_type="CHECKING", initial_deposit="10")
        service.open_account("good", owner="G", account_type="CHECKING", initial_deposit="10")
        poisoned = events.read_stream("bad")[1].event_id
        ticks = iter(range(1, 1000))  # a clock that moves on each reading
        projector = Projector(events, reads, handler=FlakyHandler(poisoned, failures=9),
                              clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
                              + timedelta(seconds=next(ticks)))  # fmt: skip
        good, bad = events.read_stream("good"), events.read_stream("bad")
        projector.project(good)  # no gap, no failure: no read of the parked streams
        assert reads.failure_reads == 0 and reads.balance("good").version == 2
        projector.project(bad)  # its deposit fails: the stream is parked
        assert reads.failure_reads == 1
        [parked] = reads._reads.failures(accounts.NAME)
        projector.project(bad[1:])  # the parked event delivered again: still parked once
        assert reads._reads.failures(accounts.NAME) == [parked]
        service.deposit("bad", "1")
        projector.project(events.read_stream("bad", 2))  # past the parked event: skipped
        assert reads.balance("bad").version == 1
        assert reads._reads.failures(accounts.NAME) == [parked]
    finally:
        reads.close()
        events.close()


# Each event store's feed and each read store's checkpoints once, and DynamoDB's unordered feed
# into SQLite's checkpoints: all nine pairs took 80 s of the suite.
KILLED_RUNNER_PAIRS = [("sqlite", "sqlite"), ("postgres", "postgres"), ("dynamodb", "dynamodb"),
                       ("dynamodb", "sqlite")]  # fmt: skip


@pytest.mark.parametrize(("events_engine", "reads_engine"), KILLED_RUNNER_PAIRS)
def test_a_runner_killed_at_random_points_resumes_without_loss_or_double_counting(
    events_engine: str, reads_engine: str, request: pytest.FixtureRequest
):
    store_url = request.getfixturevalue(f"{events_engine}_store_url")
    read_store_url = request.getfixturevalue(f"{reads_engine}_read_store_url")
    command = [str(Path(sys.executable).parent / "eventbank"), "--store", store_url,
               "--read-store", read_store_url, "projections", "run", "--batch-size", "3",
               "--poll-interval", "0.01"]  # fmt: skip
    events, reads = open_store(store_url), open_read_store(read_store_url)
    done = threading.Event()
    writer = threading.Thread(
        target=lambda: (run_workload(LedgerService(events), random.Random(13), ops=150), done.set())
    )
    writer.start()
    rng = random.Random(17)
    kills = 0
    try:
        while not done.is_set() or kills < 3:
            before = reads.checkpoint(accounts.NAME)
            runner = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # Kill it at a random moment once it has got going (its start-up takes a while on a
            # loaded machine), or after 3 s if there was nothing left for it to do; before any
            # runner has projected anything there is, so the first may take 20 s to start.
            give_up = time.monotonic() + (3 if before else 20)
            while reads.checkpoint(accounts.NAME) == before and time.monotonic() < give_up:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.3))
            os.kill(runner.pid, signal.SIGKILL)
            runner.wait()
            kills += 1
        writer.join()
        assert reads.checkpoint(accounts.NAME) > 0, "the killed runners never made progress"
        ProjectionRunner(Projector(events, reads)).catch_up()
        assert_read_models_equal_replay(events, reads)
    finally:
        done.wait(60)
        reads.close()
        events.close()


def test_rebuilding_100_000_events_matches_a_replay(tmp_path: Path, record_property):
    events = open_store(f"sqlite:///{tmp_path / 'big.db'}")
    reads = open_read_store(f"sqlite:///{tmp_path / 'big.read.db'}")
    service = LedgerService(events)
    versions = {}
    for n in range(100):
        service.open_account(f"acc-{n}", owner="Owner", account_type="CHECKING")
        versions[f"acc-{n}"] = 1
    for _ in range(100):  # 100 appends of 999 deposits: 100,000 events with the opens
        expected = dict(versions)
        batch = []
        for i in range(999):
            account = f"acc-{i % 100}"
            versions[account] += 1
            batch.append(_deposit(account, versions[account]))
        events.append(batch, expected)

    runner = ProjectionRunner(Projector(events, reads), batch_size=5_000)
    count, seconds = runner.rebuild()
    assert count == 100_000
    assert_read_models_equal_replay(events, reads)
    record_property(  # printed at the end of the run (conftest: figures)
        "figure", f"rebuild: {count:,} events in {seconds:.2f} s = {count / seconds:,.0f} events/s"
    )
    reads.close()
    events.close()


def _deposit(account: str, version: int) -> NewEvent:
    """A deposit event shaped as the service writes it, for bulk loading."""
    return NewEvent(
        event_id=f"{account}-{version}", aggregate_id=account, aggregate_type="Account",
        version=version, event_type="FundsDeposited", schema_version=1,
        data={"account_id": account, "amount_minor": 1, "currency": "USD"},
        metadata={"recorded_at": "2026-01-01T00:00:00+00:00"},
    )  # fmt: skip


class CountingEvents:
    """An event store that counts the events its reads return, and the reads."""

    def __init__(self, store):
        self.store, self.events_read, self.reads = store, 0, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def read_all(self, *args, **kwargs):
        return self._counted(self.store.read_all(*args, **kwargs))

    def read_stream(self, *args, **kwargs):
        return self._counted(self.store.read_stream(*args, **kwargs))

    def _counted(self, events):
        self.events_read += len(events)
        self.reads += 1
        return events


def test_status_reads_a_bounded_number_of_events_however_far_behind_the_checkpoint_is(
    store_url, sqlite_read_store_url, monkeypatch
):
    """/readyz, /metrics and /stats ask for the status every few seconds: it reads at most two
    windows of events (here 4 each: STATUS_WINDOW made small), never the whole lag."""
    monkeypatch.setattr(runner_module, "STATUS_WINDOW", 4, raising=False)
    ledger = open_ledger(store_url, sqlite_read_store_url, inline=False)
    try:
        # Each append projected as it lands, without moving the checkpoint: it stays at 0.
        inline = LedgerService(ledger.events, after_append=ledger.runner.projector.project)
        inline.open_account("a", owner="Ann", account_type="CHECKING")
        for _ in range(15):
            inline.deposit("a", "1")
        behind = LedgerService(ledger.events)  # appends nothing projects
        behind.deposit("a", "1")
        behind.deposit("a", "1")
        counting = CountingEvents(ledger.events)
        state = ProjectionRunner(Projector(counting, ledger.reads)).status()
        assert counting.events_read <= 2 * 4 and counting.reads <= 2
        assert state.checkpoint == 0 and state.lag_capped  # 18 events, 8 examined at most
        if store_url.startswith("dynamodb"):  # no last position: the first window only
            assert state.lag_events == 0
        else:  # the last window holds the two unprojected deposits
            assert (state.lag_events, state.lag_seconds >= 0) == (2, True)

        ledger.runner.catch_up()
        counting = CountingEvents(ledger.events)
        state = ProjectionRunner(Projector(counting, ledger.reads)).status()
        assert (state.lag_events, state.lag_capped, state.lag_seconds) == (0, False, 0.0)
        assert counting.events_read == 0
    finally:
        ledger.close()


def test_transfer_rows_folded_batch_by_batch_equal_a_fold_of_all_their_movements(
    sqlite_store_url, read_store_url
):
    """A transfer's movements and its reversals land in different batches, twice, in any order:
    each row still equals the fold of all its movements and reversals (``summarize``). The fold
    is each read store's own, so one event store serves them all."""
    ledger = open_ledger(sqlite_store_url, read_store_url)
    try:
        service = ledger.service
        for name in ("a", "b", "c"):
            service.open_account(name, owner=name, account_type="CHECKING",
                                 initial_deposit="1000.00")  # fmt: skip
        ids = [service.transfer("a", "b", "10.00").outcome["transfer_id"] for _ in range(3)]
        held = [service.transfer("b", "c", "30.00", pending=True).outcome["transfer_id"]
                for _ in range(2)]  # fmt: skip
        service.post_transfer(held[0], "20.00")
        service.void_transfer(held[1])
        ids += held
        ids.append(service.reverse(ids[0], "4.00").outcome["transfer_id"])
        ids.append(service.reverse(ids[0]).outcome["transfer_id"])
        ids.append(service.reverse(held[0], "5.00").outcome["transfer_id"])
        moves: dict[str, list] = {}
        for name in ("a", "b", "c"):
            for move in ledger.reads.transactions(name, 0, 1000):
                moves.setdefault(move.transfer_id, []).append(move)
        alone = {tid: summarize(moves[tid]) for tid in ids}
        expected = {
            tid: summarize(moves[tid], sorted((r.transfer_id, r.moved_minor)
                                              for r in alone.values() if r.reverses == tid))
            for tid in ids
        }  # fmt: skip
        assert expected[ids[0]].reversed_minor == 1000 and expected[held[0]].reversed_minor == 500
        assert ledger.reads.transfer_rows(ids) == expected

        feed = all_events(ledger.events)
        deliveries = feed + random.Random(1).sample(feed, len(feed))
        random.Random(2).shuffle(deliveries)
        ledger.reads.reset(accounts.NAME)
        projector = Projector(ledger.events, ledger.reads)
        for start in range(0, len(deliveries), 3):
            projector.project(deliveries[start : start + 3])
        assert ledger.reads.transfer_rows(ids) == expected
    finally:
        ledger.close()
