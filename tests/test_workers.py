"""``eventbank serve --workers N``: several processes, each with its own ledger and group commit,
serving one PostgreSQL store on one port ("Several server processes" in docs/configuration.md).

- Through two workers, concurrent transfers, deposits and withdrawals from several threads are
  each acknowledged once and stored once, and the books balance; both workers answer, and stop
  gracefully with their supervisor.
- A killed worker leaves the service answering and is replaced, and the projection runner (one
  per ``serve``) moves to a live worker; a supervisor killed alone takes its workers with it.
- Two projection runners on one read store (which ``--workers`` avoids, but separate ``serve``
  processes have) leave it equal to a replay.
- DynamoDB serves with two workers; SQLite refuses ``--workers`` above 1 (one line, exit 2)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from eventbank.application.auditor import Auditor
from eventbank.application.projections.runner import ProjectionRunner
from eventbank.wiring import open_ledger
from reliability.chaos import final_store
from reliability.serve import ServeProcess
from reliability.workload import amount_text, minor_of
from tests.serving import EVENTBANK

TELLER = "workers-teller-token"
TOKENS = {"teller": TELLER}
INITIAL_MINOR = 500_00
ACCOUNTS = [f"w-{n}" for n in range(6)]


def fresh_client(url: str) -> httpx.Client:
    """A new connection per request: the kernel hands each to whichever worker accepts first,
    so both get some (one keep-alive connection would stay with one worker)."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TELLER}"},
                        timeout=30, limits=httpx.Limits(max_keepalive_connections=0))  # fmt: skip


def worker_views(url: str, want: int = 2, within_s: float = 30.0) -> dict[str, dict[str, float]]:
    """Scrape ``/metrics`` until ``want`` workers have answered: each worker's pid and gauges."""
    seen: dict[str, dict[str, float]] = {}
    deadline = time.monotonic() + within_s
    with fresh_client(url) as client:
        while len(seen) < want:
            assert time.monotonic() < deadline, f"only workers {sorted(seen)} answered"
            try:
                response = client.get("/metrics")
            except httpx.TransportError:
                continue
            gauges = {line.split(" ")[0]: float(line.split(" ")[1])
                      for line in response.text.splitlines()
                      if line.startswith("eventbank_")}  # fmt: skip
            seen[response.headers["x-served-by"]] = gauges
            time.sleep(0.02)
    return seen


def runs_projections(view: dict[str, float]) -> bool:
    return view["eventbank_worker_runs_projections"] == 1.0


@pytest.fixture
def workers_server(postgres_store_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(postgres_store_url, tmp_path, TOKENS, workers=2)
    server.start()
    try:
        worker_views(server.url)  # both up
        with fresh_client(server.url) as client:
            for account in ACCOUNTS:
                body = {"account_id": account, "owner": "W", "type": "CHECKING",
                        "initial_deposit": amount_text(INITIAL_MINOR)}  # fmt: skip
                key = {"Idempotency-Key": f"open-{account}"}
                opened = client.post("/accounts", headers=key, json=body)
                assert opened.status_code == 201, opened.text
        yield server
    finally:
        server.stop()


def definite(response: httpx.Response) -> bool:
    return response.status_code == 201 or (
        response.status_code == 409 and response.json()["code"] == "insufficient_funds"
    )


def until_definite(client: httpx.Client, path: str, body: dict, key: str) -> httpx.Response:
    """Send, and again with the same key while the answer says nothing final."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = client.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            response = None
        if response is not None and definite(response):
            return response
        assert time.monotonic() < deadline, (key, response and response.text)
        time.sleep(0.05)


def test_concurrent_money_movements_through_two_workers_are_stored_once_and_balance(
    workers_server: ServeProcess,
):
    url = workers_server.url
    acknowledged: list[tuple[str, str, dict, httpx.Response]] = []
    lock = threading.Lock()

    def client_thread(number: int) -> None:
        rng = random.Random(number)
        with fresh_client(url) as client:
            for sequence in range(25):
                key = f"t{number}-{sequence}"
                kind = rng.choice(["transfer", "transfer", "deposit", "withdrawal"])
                amount = amount_text(rng.randint(1, 100_00))
                if kind == "transfer":
                    source, target = rng.sample(ACCOUNTS, 2)
                    path, body = (
                        "/transfers",
                        {"from_account_id": source, "to_account_id": target, "amount": amount},
                    )
                else:
                    path = f"/accounts/{rng.choice(ACCOUNTS)}/{kind}s"
                    body = {"amount": amount}  # fmt: skip
                response = until_definite(client, path, body, key)
                with lock:
                    acknowledged.append((key, path, body, response))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client_thread, range(8)))

    ok = [(key, path, body, r) for key, path, body, r in acknowledged if r.status_code == 201]
    served_by = Counter(r.headers["x-served-by"] for *_, r in acknowledged)
    assert len(served_by) == 2, served_by  # both workers answered
    assert len(ok) > 100, len(ok)

    # Each acknowledged transfer is in the store exactly once, whole; nothing else moved money.
    events, findings = final_store(workers_server.store_url, True, ACCOUNTS)
    assert findings == []  # chains, books, read models = replay
    halves: dict[str, list[str]] = {}
    for event in events:
        if "transfer_id" in event.data:
            halves.setdefault(event.data["transfer_id"], []).append(event.event_type)
    transfers = {r.json()["transfer_id"]: key for key, path, _, r in ok if path == "/transfers"}
    assert len(transfers) == sum(1 for _, path, _, _ in ok if path == "/transfers")
    assert set(halves) == set(transfers)
    assert all(sorted(kinds) == ["TransferredIn", "TransferredOut"] for kinds in halves.values())
    commands = Counter(e.metadata["command_id"] for e in events
                       if e.event_type in ("FundsDeposited", "FundsWithdrawn")
                       and not e.metadata["command_id"].startswith("open-"))  # fmt: skip
    assert commands == Counter(key for key, path, _, _ in ok if path != "/transfers")

    # The books: the sum of balances is what came in less what went out.
    deposits = sum(minor_of(b["amount"]) for _, p, b, _ in ok if p.endswith("/deposits"))
    withdrawals = sum(minor_of(b["amount"]) for _, p, b, _ in ok if p.endswith("/withdrawals"))
    with fresh_client(url) as client:
        balances = [minor_of(client.get(f"/accounts/{a}").json()["balance"]) for a in ACCOUNTS]
        assert sum(balances) == INITIAL_MINOR * len(ACCOUNTS) + deposits - withdrawals
        assert min(balances) >= 0

        # A retry, to whichever worker, is answered from the first outcome and moves nothing.
        for key, path, body, first in ok[:10]:
            again = client.post(path, json=body, headers={"Idempotency-Key": key})
            assert again.status_code == 201
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.json() == first.json()
        assert [minor_of(client.get(f"/accounts/{a}").json()["balance"])
                for a in ACCOUNTS] == balances  # fmt: skip

    workers_server.stop()  # SIGTERM to the supervisor: every worker stops gracefully
    assert workers_server.process is not None and workers_server.process.returncode == 0
    assert not any(alive(int(pid)) for pid in served_by)


def test_a_killed_worker_leaves_the_service_answering_and_the_runner_moves(
    workers_server: ServeProcess,
):
    url = workers_server.url
    views = worker_views(url)
    assert sorted(runs_projections(v) for v in views.values()) == [False, True]  # one runner
    runner_pid = next(int(pid) for pid, view in views.items() if runs_projections(view))
    os.kill(runner_pid, signal.SIGKILL)
    with fresh_client(url) as client:
        for n in range(20):  # at once: the other worker answers every new connection
            moved = client.post("/transfers", headers={"Idempotency-Key": f"after-kill-{n}"},
                                json={"from_account_id": "w-0", "to_account_id": "w-1",
                                      "amount": "1.00"})  # fmt: skip
            assert moved.status_code == 201, moved.text
            assert moved.headers["x-served-by"] != str(runner_pid)
    # The supervisor starts a replacement; one live worker runs the projections again.
    deadline = time.monotonic() + 30
    while True:
        views = worker_views(url)
        if str(runner_pid) not in views and sum(map(runs_projections, views.values())) == 1:
            break
        assert time.monotonic() < deadline, views
        time.sleep(0.5)
    with fresh_client(url) as client:
        assert client.get("/accounts/w-1").json()["balance"] == amount_text(INITIAL_MINOR + 20_00)

    # The supervisor killed alone: the kernel tells its workers (SIGTERM), and the port is free.
    assert workers_server.process is not None
    os.kill(workers_server.process.pid, signal.SIGKILL)
    workers_server.process.wait()
    deadline = time.monotonic() + 20
    while any(alive(int(pid)) for pid in views):
        assert time.monotonic() < deadline, f"workers {sorted(views)} outlived their supervisor"
        time.sleep(0.1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", workers_server.port))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_projection_runners_on_one_read_store_leave_it_equal_to_a_replay(
    postgres_store_url: str,
):
    """What separate ``serve`` processes on one store do (``--workers`` runs one runner): every
    change applies only to a row one version behind, and the checkpoint never moves back."""
    first = open_ledger(postgres_store_url, inline=False)
    second = open_ledger(postgres_store_url, inline=False)
    try:
        for account in ACCOUNTS:
            first.service.open_account(account, owner="W", account_type="CHECKING",
                                       initial_deposit="500.00")  # fmt: skip
        rng = random.Random(7)
        for _ in range(150):
            source, target = rng.sample(ACCOUNTS, 2)
            first.service.transfer(source, target, "1.00")
        runners = [ProjectionRunner(ledger.runner.projector, batch_size=17)
                   for ledger in (first, second)]  # fmt: skip
        checkpoints: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                checkpoints.append(first.reads.checkpoint("accounts"))

        watcher = threading.Thread(target=watch)
        watcher.start()
        with ThreadPoolExecutor(2) as pool:
            read = list(pool.map(ProjectionRunner.catch_up, runners))
        done.set()
        watcher.join()
        assert min(read) > 0, read  # both ran, side by side
        assert checkpoints == sorted(checkpoints)
        assert first.reads.checkpoint("accounts") == first.events.last_position()
        assert Auditor(first.events, first.reads).run().findings == []
    finally:
        first.close()
        second.close()


def test_dynamodb_serves_with_two_workers(dynamodb_store_url: str, tmp_path: Path):
    """Allowed: every DynamoDB write is a conditional transaction, and the one projection
    runner per serve reads the table's stream alone (a shard throttles beyond two readers)."""
    server = ServeProcess(dynamodb_store_url, tmp_path, TOKENS, workers=2)
    server.start()
    try:
        assert sorted(runs_projections(v) for v in worker_views(server.url).values()) == [
            False, True]  # fmt: skip
        with fresh_client(server.url) as client:
            for account in ("d-0", "d-1"):
                body = {"account_id": account, "owner": "D", "type": "CHECKING",
                        "initial_deposit": "100.00"}  # fmt: skip
                assert client.post("/accounts", json=body).status_code == 201
            transfer = {"from_account_id": "d-0", "to_account_id": "d-1", "amount": "1.00"}
            for n in range(10):
                assert until_definite(client, "/transfers", transfer, f"d{n}").status_code == 201
            assert client.get("/accounts/d-1").json()["balance"] == "110.00"
    finally:
        server.stop()


def test_sqlite_refuses_workers_with_one_line_and_exit_2(tmp_path: Path):
    done = subprocess.run(
        [EVENTBANK, "--store", f"sqlite:///{tmp_path / 'events.db'}", "serve", "--workers", "2",
         "--tokens-file", str(tmp_path / "tokens.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr == (
        "error: --workers 2 needs a PostgreSQL or DynamoDB store: SQLite has one writer per "
        "file, and two processes on one file measured slower than one (serve with --workers 1)\n"
    )
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no store, no token file
