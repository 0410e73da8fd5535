"""The request path made cheap, every guarantee kept (docs/performance.md, "The request path").

- Inline projection runs once per group-commit batch (``GroupCommit.after_commit``): one
  read-store transaction per batch, done before any caller of the batch is answered, so a
  command's events are in the read model when it returns; it moves the checkpoint only over
  events it projected itself.
- The SQLite read store commits with ``synchronous=NORMAL`` (the event store keeps ``FULL``); a
  process killed while projecting loses nothing the runner cannot re-apply.
- The pure-ASGI middleware keeps the request id (header, problem bodies, logs), the metrics and
  an access line for errors and slow requests; write routes run on the command threads with the
  request's context.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from eventbank.application.observability import JsonLogFormatter, Metrics
from eventbank.application.projections import accounts
from eventbank.application.service import LedgerService
from eventbank.engines.sql.group_commit import GroupCommit
from eventbank.engines.urls import open_store, sqlite_path
from eventbank.http import transfers
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.http.commands import Coalescer
from eventbank.wiring import Ledger, open_ledger
from tests.test_projections import assert_read_models_equal_replay

# ------------------------------------------------------------------ GroupCommit.after_commit


class Engine:
    """GroupCommit's engine in memory; its commit can be held until ``committing`` is set, and
    its writes can be made to fail."""

    def __init__(self) -> None:
        self.committing = threading.Event()
        self.committing.set()
        self.fail = False

    @contextmanager
    def transaction(self) -> Iterator[list[object]]:
        yield []
        assert self.committing.wait(30)
        if self.fail:
            raise OSError("disk I/O error")

    def write_many(self, conn: list[object], items: list[object]) -> list[object]:
        return [f"stored {item}" for item in items]


def test_after_commit_sees_each_committed_batch_once_before_its_callers_are_answered():
    engine = Engine()
    group = GroupCommit(engine.transaction, engine.write_many, max_wait_ms=0)
    seen: list[tuple[list[object], list[bool]]] = []
    futures = []
    group.after_commit = lambda results: seen.append((results, [f.done() for f in futures]))
    engine.committing.clear()  # the leader's commit waits until all three are queued
    with ThreadPoolExecutor(3) as pool:
        waits = [group.submit(item) for item in ("lead", "f0", "f1")]
        futures += [pool.submit(wait) for wait in waits]
        time.sleep(0.2)
        engine.committing.set()
        assert [f.result(timeout=10) for f in futures] == ["stored lead", "stored f0", "stored f1"]
    # One call, with every result, made while no caller of the batch had been answered.
    assert seen == [(["stored lead", "stored f0", "stored f1"], [False, False, False])]
    assert group.submit("alone")() == "stored alone"
    assert seen[-1][0] == ["stored alone"] and len(seen) == 2


def test_a_failing_after_commit_is_logged_and_the_batch_answered_as_committed(caplog):
    engine = Engine()
    group = GroupCommit(engine.transaction, engine.write_many)

    def broken(results: list[object]) -> None:
        raise RuntimeError("read store gone")

    group.after_commit = broken
    with caplog.at_level(logging.ERROR, logger="eventbank.engines.sql.group_commit"):
        assert group.submit("x")() == "stored x"
    assert "after_commit failed" in caplog.text and "read store gone" in caplog.text


def test_a_slow_after_commit_never_turns_a_committed_append_into_an_error():
    """A follower out of time while the hook runs is answered with its result (the batch is
    committed), not with an outcome unknown; the leader waits for the hook."""
    engine = Engine()
    group = GroupCommit(engine.transaction, engine.write_many, follower_timeout_s=0.5)
    group.after_commit = lambda results: time.sleep(5)
    engine.committing.clear()
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        leader, follower = [pool.submit(wait) for wait in [group.submit(i) for i in "ab"]]
        time.sleep(0.1)
        engine.committing.set()
        assert follower.result(timeout=10) == "stored b"
        assert time.monotonic() - started < 4  # at its deadline, not after the hook
        assert leader.result(timeout=10) == "stored a"
        assert time.monotonic() - started >= 5


def test_after_commit_is_not_called_for_a_batch_that_did_not_commit():
    engine = Engine()
    group = GroupCommit(engine.transaction, engine.write_many)
    seen: list[list[object]] = []
    group.after_commit = seen.append
    engine.fail = True
    with pytest.raises(OSError, match="disk I/O"):
        group.submit("x")()
    assert seen == []


# ------------------------------------------------------------------ inline projection per batch


ACCOUNTS = [f"acc-{n:02d}" for n in range(20)]


@pytest.fixture
def ledger(sqlite_store_url: str, sqlite_read_store_url: str) -> Iterator[Ledger]:
    opened = open_ledger(sqlite_store_url, sqlite_read_store_url, metrics=Metrics())
    for account in ACCOUNTS:
        opened.service.open_account(account, owner="Ann", account_type="CHECKING",
                                    initial_deposit="1000.00")  # fmt: skip
    yield opened
    opened.close()


def random_transfers(ledger: Ledger, count: int, seed: int) -> list[tuple[str, int, int]]:
    """``count`` transfers from 16 threads; for each, the payer, the version the command
    returned, and the payer's read-model version as soon as the command had returned."""
    rng = random.Random(seed)
    pairs = [tuple(rng.sample(ACCOUNTS, 2)) for _ in range(count)]

    def transfer(pair: tuple[str, str]) -> tuple[str, int, int]:
        receipt = ledger.service.transfer(pair[0], pair[1], "0.01")
        row = ledger.reads.balance(pair[0])
        return pair[0], receipt.outcome["from"]["version"], row.version if row else 0

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(transfer, pairs))


def test_inline_projection_is_one_read_store_transaction_per_group_commit_batch(ledger):
    group = ledger.events.group_commit
    applies = []
    apply = ledger.reads.apply
    ledger.reads.apply = lambda *args, **kwargs: (applies.append(1), apply(*args, **kwargs))[1]
    transactions_before = group.transactions
    random_transfers(ledger, 400, seed=1)
    transactions = group.transactions - transactions_before
    assert len(applies) == transactions  # one read-store transaction per batch ...
    assert transactions < 400  # ... and batches of several commands formed
    assert_read_models_equal_replay(ledger.events, ledger.reads)


def test_a_command_returns_once_its_events_are_in_the_read_model(ledger):
    """Read-your-writes without waiting: the batch is projected before anyone in it is told."""
    for payer, version, projected in random_transfers(ledger, 200, seed=2):
        assert projected >= version, (payer, version, projected)


def test_inline_projection_moves_the_checkpoint_only_over_what_it_projected(
    ledger, sqlite_store_url
):
    events, reads = ledger.events, ledger.reads
    random_transfers(ledger, 50, seed=3)
    assert reads.checkpoint(accounts.NAME) == events.last_position()  # the runner has no work
    assert ledger.runner.run_once() == 0

    # Another writer's events (another store object: its batches are not projected here) ...
    other = open_store(sqlite_store_url)
    LedgerService(other).deposit("acc-00", "5.00")
    other.close()
    unprojected = events.last_position()
    # ... are followed by ours: ours are projected, the checkpoint does not jump the gap.
    ledger.service.deposit("acc-01", "1.00")
    assert reads.checkpoint(accounts.NAME) == unprojected - 1
    assert reads.balance("acc-01").version == ledger.service.get_account("acc-01").version
    assert reads.balance("acc-00").version < ledger.service.get_account("acc-00").version
    ledger.runner.catch_up()
    assert reads.checkpoint(accounts.NAME) == events.last_position()
    assert_read_models_equal_replay(events, reads)


# ------------------------------------------------------------------ the read store's durability


def test_the_read_store_commits_without_fsync_and_the_event_store_with_it(
    sqlite_store_url, sqlite_read_store_url
):
    opened = open_ledger(sqlite_store_url, sqlite_read_store_url)
    try:
        opened.service.open_account("a", owner="Ann", account_type="CHECKING")
        with sqlite3.connect(sqlite_path(sqlite_store_url)) as probe:
            assert probe.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        read_conn = opened.reads._db._writer  # the connection every read-store commit uses
        event_conn = opened.events._db._writer
        assert read_conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
        assert event_conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        opened.close()


CRASHING_WRITER = textwrap.dedent("""
    import random, sys, threading
    from eventbank.wiring import open_ledger
    ledger = open_ledger(sys.argv[1], sys.argv[2])
    stop = threading.Event()
    threading.Thread(target=ledger.runner.run, args=(stop,), daemon=True).start()
    accounts = [f"acc-{n:02d}" for n in range(20)]

    def work(seed):
        rng = random.Random(seed)
        while True:
            a, b = rng.sample(accounts, 2)
            if rng.random() < 0.8:
                ledger.service.transfer(a, b, "0.01")
            else:
                ledger.service.deposit(a, "1.00")

    for n in range(8):
        threading.Thread(target=work, args=(int(sys.argv[3]) + n,), daemon=True).start()
    print("running", flush=True)
    threading.Event().wait()
""")


def test_a_process_killed_while_projecting_loses_nothing_the_runner_cannot_reapply(
    sqlite_store_url, sqlite_read_store_url
):
    """SIGKILL at random moments of a busy process (8 writers, inline projection, the runner):
    afterwards the runner catches up and the read model equals a replay of the events."""
    setup = open_ledger(sqlite_store_url, sqlite_read_store_url)
    for account in ACCOUNTS:
        setup.service.open_account(account, owner="Ann", account_type="CHECKING",
                                   initial_deposit="1000.00")  # fmt: skip
    setup.close()
    rng = random.Random(11)
    root = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
    for kill in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WRITER, sqlite_store_url, sqlite_read_store_url,
             str(kill * 100)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert child.stdout.readline() == b"running\n", child.stderr.read().decode()
            time.sleep(rng.uniform(0.3, 1.0))
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    events = open_store(sqlite_store_url)
    ledger = open_ledger(sqlite_store_url, sqlite_read_store_url)
    try:
        assert events.last_position() > 200, "the killed writers never got going"
        ledger.runner.catch_up()
        assert_read_models_equal_replay(events, ledger.reads)
    finally:
        ledger.close()
        events.close()


# ------------------------------------------------------------------ over HTTP (in process)


@pytest.fixture
def app_ledger(sqlite_store_url, sqlite_read_store_url) -> Iterator[tuple[Ledger, Metrics]]:
    metrics = Metrics()
    opened = open_ledger(sqlite_store_url, sqlite_read_store_url, metrics=metrics)
    for account in ("alice", "bob"):
        opened.service.open_account(account, owner="Ann", account_type="CHECKING",
                                    initial_deposit="100.00")  # fmt: skip
    yield opened, metrics
    opened.close()


@contextmanager
def client_of(app_ledger, tmp_path: Path, **options) -> Iterator[TestClient]:
    ledger, metrics = app_ledger
    tokens_file = tmp_path / f"tokens-{uuid.uuid4().hex}.json"
    secret = add_token(tokens_file, "clerk", "teller")
    app = create_app(ledger, TokenStore.load(tokens_file), metrics, **options)
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client


@contextmanager
def json_log_lines() -> Iterator[list[dict]]:
    """Lines written by eventbank's JSON formatter while inside, parsed (as ``serve`` logs)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    lines: list[dict] = []
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        lines += [json.loads(line) for line in stream.getvalue().splitlines()]


def transfer_body(amount: str = "1.00") -> dict:
    return {"from_account_id": "alice", "to_account_id": "bob", "amount": amount}


def test_a_transfer_is_readable_at_its_version_as_soon_as_it_is_answered(app_ledger, tmp_path):
    ledger, _ = app_ledger
    ledger.queries.wait_s = 30  # a read that had to wait for the read model would take this long
    with client_of(app_ledger, tmp_path) as client:
        answer = client.post("/transfers", json=transfer_body("2.50"))
        assert answer.status_code == 201, answer.text
        payer = answer.json()["from"]
        # In the read model already (no polling, no replay) ...
        assert ledger.reads.balance("alice").version == payer["version"]
        # ... so a read asking for that version answers it at once.
        started = time.monotonic()
        read = client.get("/accounts/alice", params={"min_version": payer["version"]})
        assert time.monotonic() - started < 10
        assert read.status_code == 200
        assert (read.json()["balance"], read.json()["version"]) == ("97.50", payer["version"])
        moved = client.get(f"/transfers/{answer.json()['transfer_id']}")
        assert moved.status_code == 200 and moved.json()["amount"] == "2.50"


@pytest.mark.parametrize("group_wait_ms", [0.0, 12.5])
def test_the_group_wait_serve_is_given_is_the_transfer_coalescers(
    app_ledger, tmp_path, monkeypatch, group_wait_ms
):
    """``serve --group-wait-ms`` reaches the runner of concurrent ``POST /transfers``
    (``create_app`` -> ``transfer_routes`` -> ``Coalescer``), and transfers run with it."""
    made: list[Coalescer] = []

    class Recorded(Coalescer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(transfers, "Coalescer", Recorded)
    with (
        client_of(app_ledger, tmp_path, group_wait_ms=group_wait_ms) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        answers = list(pool.map(lambda _: client.post("/transfers", json=transfer_body()),
                                range(8)))  # fmt: skip
    assert [answer.status_code for answer in answers] == [201] * 8
    assert [coalescer.wait_s for coalescer in made] == [group_wait_ms / 1000]
    assert app_ledger[0].reads.balance("bob").balance_minor == 100_00 + 8 * 1_00


def test_the_request_id_is_answered_on_successes_and_on_every_kind_of_refusal(app_ledger, tmp_path):
    with client_of(app_ledger, tmp_path, max_body_bytes=200) as client:
        ok = client.post("/transfers", json=transfer_body(), headers={"X-Request-ID": "req-1"})
        assert (ok.status_code, ok.headers["X-Request-ID"]) == (201, "req-1")
        refusals = {
            "unknown": client.get("/accounts/nobody"),  # 404 from the queries
            "no-token": client.get("/accounts/alice", headers={"Authorization": ""}),  # 401
            "too-large": client.post("/transfers", content=b"{" + b" " * 300 + b"}",
                                     headers={"Content-Type": "application/json"}),  # 413
            "duplicate": client.post("/transfers", headers={"Content-Type": "application/json"},
                                     content=b'{"amount": "1", "amount": "2"}'),  # 400
            "broke": client.post("/transfers", json=transfer_body("5000.00")),  # 409
        }  # fmt: skip
        for name, response in refusals.items():
            assert response.status_code >= 400, name
            rid = response.headers["X-Request-ID"]
            assert len(rid) == 32 and int(rid, 16) >= 0, name  # made up when none was sent
            assert response.json()["request_id"] == rid, name
        assert refusals["duplicate"].json()["code"] == "malformed_json"
        long = client.get("/healthz", headers={"X-Request-ID": "r" * 100})
        assert long.headers["X-Request-ID"] == "r" * 64


def scrape(client: TestClient) -> str:
    return client.get("/metrics").text


def series(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_every_answer_an_unexpected_error_included(app_ledger, tmp_path):
    ledger, _ = app_ledger
    with client_of(app_ledger, tmp_path) as client:
        before = scrape(client)
        assert client.post("/transfers", json=transfer_body()).status_code == 201
        assert client.post("/transfers", json=transfer_body("5000.00")).status_code == 409
        with pytest.MonkeyPatch.context() as patch:  # a bug in every write path's first step
            patch.setattr(ledger.service, "expire_overdue",
                          lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))  # fmt: skip
            with TestClient(client.app, raise_server_exceptions=False,
                            headers=client.headers) as quiet:  # fmt: skip
                assert quiet.post("/transfers", json=transfer_body()).status_code == 500
        after = scrape(client)
    for status in ("201", "409", "500"):
        labels = {"method": "POST", "route": "/transfers", "status": status}
        moved = series(after, "eventbank_http_requests_total", **labels) - series(
            before, "eventbank_http_requests_total", **labels
        )
        assert moved == 1, status
    timed = {"method": "POST", "route": "/transfers"}
    count = "eventbank_http_request_duration_seconds_count"
    assert series(after, count, **timed) - series(before, count, **timed) == 3
    assert series(after, "eventbank_appends_total", engine="sqlite", outcome="ok") >= 3


def test_errors_and_slow_requests_are_logged_with_their_request_id_and_others_are_not(
    app_ledger, tmp_path
):
    ledger, _ = app_ledger
    # "slow" from 60 s here: at the default a busy machine once made the ordinary request slow
    with client_of(app_ledger, tmp_path, slow_request_s=60.0) as client, json_log_lines() as lines:
        client.post("/transfers", json=transfer_body(), headers={"X-Request-ID": "fast-ok"})
        client.post("/transfers", json=transfer_body("5000.00"),
                    headers={"X-Request-ID": "refused", "Idempotency-Key": "k-409"})  # fmt: skip
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ledger.service, "expire_overdue",
                          lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))  # fmt: skip
            with TestClient(client.app, raise_server_exceptions=False,
                            headers=client.headers) as quiet:  # fmt: skip
                quiet.post("/transfers", json=transfer_body(), headers={"X-Request-ID": "boom"})
    access = {line["request_id"]: line for line in lines if line["logger"].endswith("access")}
    assert "fast-ok" not in access  # an ordinary request writes no line
    assert access["refused"]["status"] == 409 and access["refused"]["command_id"] == "k-409"
    assert access["refused"]["route"] == "/transfers" and access["refused"]["duration_ms"] >= 0
    assert access["boom"]["status"] == 500
    (crash,) = [line for line in lines if line["msg"].startswith("unexpected error")]
    assert crash["request_id"] == "boom" and "RuntimeError: bug" in crash["exc"]

    with client_of(app_ledger, tmp_path, slow_request_s=0.0) as client, json_log_lines() as lines:
        client.post("/transfers", json=transfer_body(), headers={"X-Request-ID": "slow"})
    (slow,) = [line for line in lines if line.get("request_id") == "slow"]
    assert (slow["level"], slow["status"], slow["method"]) == ("info", 201, "POST")
    assert len(slow["command_id"]) > 0  # the generated command id, as the service chose it


def test_a_write_runs_as_the_token_that_asked_for_it(app_ledger, tmp_path):
    """Write routes run on the command threads; the request's context goes with them."""
    ledger, _ = app_ledger
    with client_of(app_ledger, tmp_path) as client:
        answers = [
            client.post("/transfers", json=transfer_body()),
            client.post("/accounts/alice/deposits", json={"amount": "1.00"}),
            client.post("/accounts/alice/withdrawals", json={"amount": "1.00"}),
            client.post(
                "/accounts", json={"account_id": "carol", "owner": "C", "type": "CHECKING"}
            ),  # fmt: skip
            client.post("/accounts/carol/close"),
        ]
    assert [a.status_code for a in answers] == [201, 201, 201, 201, 200]
    written = ledger.events.read_all(0, 1000)[-6:]  # transfer (2), deposit, withdrawal, open, close
    assert [e.metadata["actor"] for e in written] == ["clerk"] * 6
