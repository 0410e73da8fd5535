"""Payroll sagas on every engine: big batches complete, crashes resume, bad input moves nothing."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from eventbank.application.auditor import Auditor
from eventbank.application.observability import Metrics
from eventbank.application.payroll_service import (
    RECORD_ATTEMPTS,
    START_ATTEMPTS,
    PayrollConflict,
    PayrollRejected,
    PayrollService,
    saga_id_for,
)
from eventbank.domain.errors import BalanceNotZero
from eventbank.domain.events import ACCOUNT, AccountOpened
from eventbank.domain.payroll import REGISTRY
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.http.payrolls import PayrollRunner
from eventbank.ports.event_store import ConcurrencyConflict, NewEvent, StoreUnavailable, chained
from eventbank.ports.read_store import Failure
from eventbank.wiring import open_ledger

EVENTBANK = str(Path(sys.executable).parent / "eventbank")


@pytest.fixture
def ledger(store_url, tmp_path):
    opened = open_ledger(store_url, f"sqlite:///{tmp_path / 'payroll.read.db'}")
    yield opened
    opened.close()


def open_staff(ledger, count: int, prefix: str) -> list[str]:
    """Open ``count`` empty accounts, 25 per append (inside every engine's limit: DynamoDB's
    is 100 items, and a new stream's first event costs three)."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for start in range(0, count, 25):
        chunk = ids[start : start + 25]
        opened = [AccountOpened(a, f"Employee {a}", "CHECKING", "USD") for a in chunk]
        events = [NewEvent(str(uuid.uuid4()), e.account_id, ACCOUNT, 1, e.event_type,
                           e.SCHEMA_VERSION, e.to_data(), {"recorded_at": "2026-11-01T00:00:00"})
                  for e in opened]  # fmt: skip
        ledger.events.append(chained(events, {}), dict.fromkeys(chunk, 0))
    ledger.runner.catch_up()
    return ids


def csv_for(staff: list[str], cents=lambda n: 100 + n) -> str:
    return "".join(
        f"{a},{cents(n) // 100}.{cents(n) % 100:02d},nov-{n}\n" for n, a in enumerate(staff)
    )


def balance(ledger, account: str) -> int:
    return ledger.service.get_account(account).balance_minor


def test_a_1000_line_payroll_completes_and_the_books_balance(ledger):
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="1000000.00")  # fmt: skip
    staff = open_staff(ledger, 1000, "emp")
    payrolls = PayrollService(ledger.service, record_every=40)
    payroll = payrolls.start("employer", csv_for(staff), idempotency_key="nov")
    done = payrolls.run(payroll.saga_id)
    total = sum(100 + n for n in range(1000))
    assert (done.status, len(done.paid), done.paid_minor) == ("completed", 1000, total)
    assert balance(ledger, "employer") == 100_000_000 - total
    ledger.runner.catch_up()
    # the staff's balances from the read model, which the audit finds equal to a replay of
    # their events (a replay of each of 1,000 accounts here took 7 s on DynamoDB Local)
    paid = ledger.reads.balances(staff)
    assert (len(paid), sum(row.balance_minor for row in paid.values())) == (1000, total)
    report = Auditor(ledger.events, ledger.reads).run()
    assert report.clean, report.findings[:5]


@pytest.mark.parametrize("with_reads", [False, True], ids=["events", "read model"])
def test_every_invalid_line_is_reported_before_any_money_moves(ledger, with_reads):
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="50.00")  # fmt: skip
    ledger.service.open_account("eur", owner="E", account_type="CHECKING", currency="EUR")
    ledger.service.open_account("gone", owner="G", account_type="CHECKING")
    ledger.service.close_account("gone")
    staff = open_staff(ledger, 2, "ok")
    before = len(ledger.events.read_all(0, 10_000))
    text = "\n".join([
        "account_id,amount,reference",
        f"{staff[0]},60.00,nov",  # 2: fine
        f"{staff[1]},1.001,nov",  # 3: too many decimals
        "nobody,1.00,nov",  # 4: unknown account
        "gone,1.00,nov",  # 5: closed
        "eur,1.00,nov",  # 6: currency mismatch
        f"{staff[0]},60.00,nov",  # 7: duplicate of line 2
        "just-one-field",  # 8: malformed
        "employer,1.00,nov",  # 9: pays itself
    ])  # fmt: skip
    with pytest.raises(PayrollRejected) as refused:
        PayrollService(ledger.service, reads=ledger.reads if with_reads else None).start(
            "employer", text
        )
    problems = {p["line"]: p["problem"] for p in refused.value.problems}
    assert sorted(problems, key=lambda n: n or 0) == [None, 3, 4, 5, 6, 7, 8, 9]
    assert problems[4] == "account 'nobody' does not exist"
    assert problems[5] == "account 'gone' is closed"
    assert problems[6] == "account 'eur' holds EUR, the employer pays USD"
    assert "insufficient funds" in problems[None]  # the one valid line, 60.00 > 50.00 held
    assert "duplicate of line 2" in problems[7]
    assert len(ledger.events.read_all(0, 10_000)) == before


def test_the_start_reads_every_lines_account_at_once_and_the_events_where_the_reads_lag(
    sqlite_ledger, monkeypatch
):
    staff = open_staff(sqlite_ledger, 40, "r")
    service, loaded = sqlite_ledger.service, []
    load = service.load_account
    monkeypatch.setattr(service, "load_account", lambda a: loaded.append(a) or load(a))
    payrolls = PayrollService(service, reads=sqlite_ledger.reads)
    assert payrolls.start("employer", csv_for(staff), idempotency_key="read").line_count == 40
    assert loaded == ["employer"]  # the 40 accounts came from one read of the read model
    sqlite_ledger.reads.reset("accounts")  # a read model that shows none of them yet
    loaded.clear()
    assert payrolls.start("employer", csv_for(staff), idempotency_key="lag").line_count == 40
    assert sorted(loaded) == sorted(["employer", *staff])  # each confirmed from its events

    def down(ids):
        raise StoreUnavailable("read store down")

    monkeypatch.setattr(sqlite_ledger.reads, "balances", down)
    loaded.clear()
    assert payrolls.start("employer", csv_for(staff), idempotency_key="down").line_count == 40
    assert sorted(loaded) == sorted(["employer", *staff])  # a read model down refuses nothing


def test_the_start_trusts_no_read_model_row_whose_stream_is_parked(sqlite_ledger):
    """A parked stream's row stays behind its events: an account closed since is refused."""
    staff = open_staff(sqlite_ledger, 2, "p")
    group = sqlite_ledger.service.store.group_commit
    hook, group.after_commit = group.after_commit, None  # the close below is not projected
    sqlite_ledger.service.close_account(staff[1])
    group.after_commit = hook
    assert sqlite_ledger.reads.balance(staff[1]).status == "OPEN"
    sqlite_ledger.reads.save_failure(Failure("accounts", staff[1], 2, "RuntimeError: bug", 1,
                                             "2026-12-07T00:00:00+00:00",
                                             "2026-12-07T01:00:00+00:00"))  # fmt: skip
    payrolls = PayrollService(sqlite_ledger.service, reads=sqlite_ledger.reads)
    with pytest.raises(PayrollRejected) as refused:
        payrolls.start("employer", csv_for(staff), idempotency_key="parked")
    assert [p["problem"] for p in refused.value.problems] == [f"account {staff[1]!r} is closed"]


def test_a_json_line_with_a_duplicate_key_is_refused_and_nothing_is_paid(ledger):
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="100.00")  # fmt: skip
    staff = open_staff(ledger, 2, "dup")
    before = len(ledger.events.read_all(0, 10_000))
    text = "\n".join([
        f'{{"account_id": "{staff[0]}", "amount": "1.00", "reference": "nov"}}',
        f'{{"account_id": "{staff[1]}", "amount": "1.00", "amount": "90.00", "reference": "nov"}}',
        f'{{"account_id": "{staff[0]}", "amount": "2.00", "reference": "dec", '
        '"meta": {"to": "a", "to": "b"}}',  # a duplicate at any depth
    ])  # fmt: skip
    with pytest.raises(PayrollRejected) as refused:
        PayrollService(ledger.service).start("employer", text, fmt="jsonl", idempotency_key="k")
    problems = {p["line"]: p["problem"] for p in refused.value.problems}
    assert sorted(problems) == [2, 3]
    assert "duplicate key 'amount'" in problems[2] and "duplicate key 'to'" in problems[3]
    assert len(ledger.events.read_all(0, 10_000)) == before
    assert [balance(ledger, a) for a in ["employer", *staff]] == [10_000, 0, 0]


def test_best_effort_pays_the_rest_and_all_or_nothing_compensates(ledger):
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="100.00")  # fmt: skip
    staff = open_staff(ledger, 4, "s")
    payrolls = PayrollService(ledger.service, record_every=2)
    best = payrolls.start("employer", csv_for(staff), policy="best-effort")
    strict = payrolls.start("employer", csv_for(staff), policy="all-or-nothing")
    ledger.service.close_account(staff[2])  # closed after validation: its line will fail

    best = payrolls.run(best.saga_id)
    assert (best.status, sorted(best.paid), sorted(best.failed)) == (
        "completed_with_failures", [1, 2, 4], [3]
    )  # fmt: skip
    assert "account_closed" in best.failed[3]
    strict = payrolls.run(strict.saga_id)
    assert (strict.status, sorted(strict.compensated)) == ("compensated", [1, 2])
    paid_once = [100, 101, 0, 103]
    assert [balance(ledger, a) for a in staff] == paid_once
    assert balance(ledger, "employer") == 10_000 - sum(paid_once)


def test_two_resumers_racing_pay_each_line_once(ledger):
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="500.00")  # fmt: skip
    staff = open_staff(ledger, 30, "r")
    payroll = PayrollService(ledger.service).start("employer", csv_for(staff))
    runners = [PayrollService(ledger.service, record_every=3) for _ in range(2)]
    threads = [threading.Thread(target=r.run, args=(payroll.saga_id,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert runners[0].status(payroll.saga_id).status == "completed"
    assert [balance(ledger, a) for a in staff] == [100 + n for n in range(30)]


@pytest.mark.parametrize("policy", ["best-effort", "all-or-nothing"])
def test_a_payroll_process_killed_at_random_points_resumes_exactly_once(
    ledger, store_url, tmp_path, policy
):
    rng = random.Random(policy)
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="100000.00")  # fmt: skip
    env = {**os.environ, "EVENTBANK_STORE": store_url,
           "EVENTBANK_READ_STORE": f"sqlite:///{tmp_path / 'payroll.read.db'}"}  # fmt: skip
    # Enough lines that the kill, at most 0.1 s after the first recorded payments, falls
    # mid-run: lines are paid 25 to an atomic batch (10 on DynamoDB), about 250 lines a second
    # on DynamoDB Local and thousands on the SQL engines.
    size = 100 if store_url.startswith("dynamodb") else 400
    interrupted, statuses = 0, []
    for run in range(3):
        staff = open_staff(ledger, size, f"k{run}")
        file = tmp_path / f"run{run}.csv"
        file.write_text(csv_for(staff))
        key = f"run-{run}-{policy}"
        paying = subprocess.Popen(
            [EVENTBANK, "payroll", str(file), "--from", "employer", "--policy", policy,
             "--idempotency-key", key],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        # Kill it a random moment after it has recorded its first payments.
        deadline = time.monotonic() + 60
        while paying.poll() is None and time.monotonic() < deadline:
            if any(e.event_type == "PaymentsRecorded" for e in
                   ledger.events.read_stream(saga_id_for(key))):  # fmt: skip
                break
            time.sleep(0.05)  # each look is a read the payroll process competes with
        if policy == "all-or-nothing":  # an injected failure: an account closes mid-run
            with contextlib.suppress(BalanceNotZero):
                ledger.service.close_account(staff[-1])  # the last line: not yet paid
        time.sleep(rng.uniform(0, 0.05))
        paying.send_signal(signal.SIGKILL)
        paying.wait()
        payrolls = PayrollService(ledger.service)
        interrupted += not payrolls.status(saga_id_for(key)).finished
        # What an operator does after a crash: resume, then re-run the file with its key
        # (which answers from the first run, since the saga had started).
        payrolls.resume_all()
        again = payrolls.run(payrolls.start("employer", file.read_text(), policy=policy,
                                            idempotency_key=key).saga_id)  # fmt: skip
        statuses.append(again.status)
        got = [balance(ledger, a) for a in staff]
        owed = [100 + n for n in range(size)]
        if again.status == "compensated":
            assert got == [0] * size, run
        else:
            assert (again.status, got) == ("completed", owed), run
    assert interrupted >= 1, "no run was killed mid-payroll; the test proved nothing"
    if policy == "all-or-nothing":
        assert "compensated" in statuses, statuses
    ledger.runner.catch_up()
    report = Auditor(ledger.events, ledger.reads).run()
    assert report.clean, report.findings[:5]


# ------------------------------------------------------------------ bounded work, on SQLite


@pytest.fixture
def sqlite_ledger(tmp_path):
    opened = open_ledger(f"sqlite:///{tmp_path / 'events.db'}", f"sqlite:///{tmp_path / 'r.db'}")
    opened.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="10000.00")  # fmt: skip
    yield opened
    opened.close()


class CountingReads:
    """A real store that counts the events ``read_stream`` returns."""

    def __init__(self, store):
        self._store, self.events_read = store, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_stream(self, aggregate_id, *args, **kwargs):
        events = self._store.read_stream(aggregate_id, *args, **kwargs)
        self.events_read += len(events)
        return events


def test_the_saga_events_a_payroll_reads_grow_linearly_with_its_lines(sqlite_ledger):
    """The state is kept in memory while the saga runs. It was re-read in full twice per
    record, so 4x the lines read about 13x the saga events here (16x in the limit)."""
    read = {}
    for size in (100, 400):
        staff = open_staff(sqlite_ledger, size, f"n{size}")
        payrolls = PayrollService(sqlite_ledger.service, record_every=10)
        payrolls.events = counting = CountingReads(payrolls.events)
        started = payrolls.start("employer", csv_for(staff), idempotency_key=f"lines-{size}")
        done = payrolls.run(started.saga_id)
        assert (done.status, len(done.paid)) == ("completed", size)
        read[size] = counting.events_read
    assert read[400] <= 4.5 * read[100], read


def test_lines_are_paid_a_batch_to_a_commit_not_one_commit_each(sqlite_ledger):
    staff = open_staff(sqlite_ledger, 100, "c")
    payrolls = PayrollService(sqlite_ledger.service, record_every=25)
    payroll = payrolls.start("employer", csv_for(staff), idempotency_key="commits")
    commits = sqlite_ledger.service.store.group_commit
    before = commits.transactions
    done = payrolls.run(payroll.saga_id)
    assert (done.status, len(done.paid)) == ("completed", 100)
    # four batches of 25 lines, their four records and the closing event; one transfer
    # each would have taken a commit per line
    assert commits.transactions - before <= 9, commits.transactions - before
    assert [balance(sqlite_ledger, a) for a in staff] == [100 + n for n in range(100)]


def test_a_batch_too_large_for_dynamodb_shrinks_to_the_lines_that_fit(dynamodb_store_url, tmp_path):
    """25 lines need 151 transaction items there (the limit is 100): the run goes on in
    batches of 16 (97 items), not halves of 12."""
    ledger = open_ledger(dynamodb_store_url, f"sqlite:///{tmp_path / 'payroll.read.db'}")
    try:
        ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                    initial_deposit="10000.00")  # fmt: skip
        staff = open_staff(ledger, 40, "d")
        payrolls = PayrollService(ledger.service, record_every=25)
        written: list[int] = []
        batch = ledger.service.transfer_batch

        def counted(items, *, atomic=False):
            results = batch(items, atomic=atomic)
            written.append(len(items))
            return results

        ledger.service.transfer_batch = counted
        payroll = payrolls.start("employer", csv_for(staff), idempotency_key="fits")
        done = payrolls.run(payroll.saga_id)
        assert (done.status, len(done.paid)) == ("completed", 40)
        assert written == [16, 16, 8], written
        assert [balance(ledger, a) for a in staff] == [100 + n for n in range(40)]
    finally:
        ledger.close()


class AlwaysConflicting(CountingReads):
    """Every append reports a concurrent write; past ``limit`` appends it fails the test, so
    that an unbounded retry loop ends."""

    def __init__(self, store, limit: int = 200):
        super().__init__(store)
        self.appends, self.limit = 0, limit

    def append(self, events, expected_versions, command=None):
        self.appends += 1
        assert self.appends <= self.limit, "retried without bound"
        raise ConcurrencyConflict(list(expected_versions))


@pytest.mark.parametrize("key", ["conflicted", None])
def test_a_start_that_keeps_conflicting_gives_up_with_a_conflict_and_records_nothing(
    sqlite_ledger, key
):
    staff = open_staff(sqlite_ledger, 3, "c")
    before = len(sqlite_ledger.events.read_all(0, 10_000))
    payrolls = PayrollService(sqlite_ledger.service)
    payrolls.events = conflicting = AlwaysConflicting(payrolls.events)
    with pytest.raises(PayrollConflict, match="concurrent write 5 times in a row; nothing was"):
        payrolls.start("employer", csv_for(staff), idempotency_key=key)
    assert conflicting.appends == START_ATTEMPTS
    assert len(sqlite_ledger.events.read_all(0, 10_000)) == before


def test_outcomes_that_keep_conflicting_give_up_and_a_resume_records_them_once(sqlite_ledger):
    staff = open_staff(sqlite_ledger, 3, "o")
    payrolls = PayrollService(sqlite_ledger.service)
    payroll = payrolls.start("employer", csv_for(staff), idempotency_key="outcomes")
    store = payrolls.events
    payrolls.events = conflicting = AlwaysConflicting(store)
    with pytest.raises(PayrollConflict, match="resume it"):
        payrolls.run(payroll.saga_id)
    assert conflicting.appends == RECORD_ATTEMPTS
    payrolls.events = store  # the store answers again: the paid lines are replayed, not repaid
    done = payrolls.run(payroll.saga_id)
    assert (done.status, len(done.paid)) == ("completed", 3)
    assert [balance(sqlite_ledger, a) for a in staff] == [100, 101, 102]


# ------------------------------------------------------------------ over HTTP, in process


@pytest.fixture
def clerk(sqlite_ledger, tmp_path):
    """Opens the app in process (options as create_app's) with one teller token, named
    "payroll-clerk", and yields a client that sends it."""
    tokens_file = tmp_path / "tokens.json"
    secret = add_token(tokens_file, "payroll-clerk", "teller")

    @contextlib.contextmanager
    def client(**options):
        app = create_app(sqlite_ledger, TokenStore.load(tokens_file), Metrics(), **options)
        with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as opened:
            yield opened

    return client


def post_payroll(client, staff: list[str], **headers: str):
    headers = {"content-type": "text/csv", **headers}
    return client.post("/payrolls", params={"from_account_id": "employer"},
                       content=csv_for(staff), headers=headers)  # fmt: skip


def finished_view(client, location: str, timeout_s: float = 10) -> dict:
    deadline = time.monotonic() + timeout_s
    while (view := client.get(location).json())["status"] in ("running", "compensating"):
        assert time.monotonic() < deadline, view
        time.sleep(0.02)
    return view


def test_post_payrolls_requires_an_idempotency_key_and_pays_once_per_key(sqlite_ledger, clerk):
    staff = open_staff(sqlite_ledger, 3, "h")
    before = len(sqlite_ledger.events.read_all(0, 10_000))
    with clerk() as client:
        refused = post_payroll(client, staff)
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "idempotency_key_required"
        assert "requires an Idempotency-Key header" in refused.json()["detail"]
        assert len(sqlite_ledger.events.read_all(0, 10_000)) == before  # no saga, no money
        first = post_payroll(client, staff, **{"Idempotency-Key": "nov-payroll"})
        again = post_payroll(client, staff, **{"Idempotency-Key": "nov-payroll"})
        assert (first.status_code, again.status_code) == (202, 202), again.text
        assert first.json()["saga_id"] == again.json()["saga_id"]
        assert finished_view(client, first.headers["Location"])["status"] == "completed"
    registered = [e for e in sqlite_ledger.events.read_stream(REGISTRY)
                  if e.event_type == "PayrollRegistered"]  # fmt: skip
    assert len(registered) == 1
    assert balance(sqlite_ledger, "employer") == 1_000_000 - (100 + 101 + 102)
    assert [balance(sqlite_ledger, a) for a in staff] == [100, 101, 102]


def test_a_payroll_started_over_http_records_the_token_as_its_transfers_actor(sqlite_ledger, clerk):
    staff = open_staff(sqlite_ledger, 3, "a")
    with clerk() as client:
        started = post_payroll(client, staff, **{"Idempotency-Key": "actor"})
        assert finished_view(client, started.headers["Location"])["status"] == "completed"
    moved = [e for account in ["employer", *staff]
             for e in sqlite_ledger.events.read_stream(account)
             if e.event_type.startswith("Transferred")]  # fmt: skip
    assert len(moved) == 6 and {e.metadata["actor"] for e in moved} == {"payroll-clerk"}


def test_a_resume_leaves_alone_a_payroll_being_started_and_runs_it_once_released(sqlite_ledger):
    """A request records its payroll and submits its run; a resume in between would pay it
    first, logged without the request's ids (a busy machine once showed it)."""
    staff = open_staff(sqlite_ledger, 2, "c")
    payrolls = PayrollService(sqlite_ledger.service)
    runner = PayrollRunner(payrolls, resume_every_s=None)
    try:
        with runner.claimed(saga_id_for("claimed-nov")):
            payroll = payrolls.start("employer", csv_for(staff), idempotency_key="claimed-nov")
            runner.resume().result(timeout=60)
            assert payroll.saga_id in payrolls.unfinished()
            assert [balance(sqlite_ledger, a) for a in staff] == [0, 0]
        runner.resume().result(timeout=60)
        assert payroll.saga_id not in payrolls.unfinished()
        assert [balance(sqlite_ledger, a) for a in staff] == [100, 101]
    finally:
        runner.stop()


def test_a_failed_payroll_run_is_logged_with_its_request_id_and_finished_by_the_periodic_resume(
    sqlite_ledger, clerk, monkeypatch, caplog
):
    staff = open_staff(sqlite_ledger, 3, "f")
    pay, failed = sqlite_ledger.service.transfer_batch, []

    def failing_once(items, **kwargs):  # the lines are paid in one batch
        if not failed:
            failed.append([item.idempotency_key for item in items])
            raise StoreUnavailable("injected: the store went away for a moment")
        return pay(items, **kwargs)

    monkeypatch.setattr(sqlite_ledger.service, "transfer_batch", failing_once)
    caplog.set_level(logging.ERROR, logger="eventbank.payroll")
    headers = {"Idempotency-Key": "flaky", "X-Request-ID": "req-flaky-1"}
    with clerk(payroll_resume_every_s=0.2) as client:  # no restart in between
        started = post_payroll(client, staff, **headers)
        assert started.status_code == 202, started.text
        view = finished_view(client, started.headers["Location"])
    saga_id = started.json()["saga_id"]
    assert failed == [[f"{saga_id}:pay:{line}" for line in (1, 2, 3)]]
    assert (view["status"], view["paid"]) == ("completed", 3)
    assert [balance(sqlite_ledger, a) for a in staff] == [100, 101, 102]
    (logged,) = [r for r in caplog.records if r.name == "eventbank.payroll"]
    assert logged.fields == {"saga_id": saga_id, "request_id": "req-flaky-1",
                             "command_id": "flaky"}  # fmt: skip
    assert "injected" in caplog.text
