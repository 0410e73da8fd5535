"""``serve --ledger-process``: single transfers decided and written in a child process
(ledger_process.py), answered as the service answers them, counted in the server's metrics."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from eventbank import ledger_process
from eventbank.application.batch import BatchItem
from eventbank.application.observability import Metrics
from eventbank.application.write_path import Receipt
from eventbank.domain.errors import InsufficientFunds, InvalidInput
from eventbank.ledger_process import LedgerProcess, LedgerProcessLost, _sendable
from eventbank.ports.event_store import StoreError, StoreUnavailable
from eventbank.wiring import Ledger, open_ledger
from tests.serving import EVENTBANK, TELLER, start_server, stop_server


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPUs each thread of process ``pid`` may run on."""
    tasks = Path(f"/proc/{pid}/task")
    return {frozenset(os.sched_getaffinity(int(tid.name))) for tid in tasks.iterdir()}


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def ledger_children_of(pid: int) -> list[int]:
    """The live ledger processes whose parent is ``pid`` (not multiprocessing's helpers)."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()
            and (fields := _stat(entry.name)) is not None and fields[1] == str(pid)
            and fields[0] != "Z" and b"spawn_main" in _cmdline(entry.name)]  # fmt: skip


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        for account in ("acc-a", "acc-b"):
            ledger.service.open_account(account, owner="O", account_type="CHECKING",
                                        initial_deposit="100.00")  # fmt: skip
    finally:
        ledger.close()
    return url


def wait_gone(pid: int) -> None:
    """Until every thread of ``pid`` has exited: its leader turns zombie first, while the
    others may still hold the process's open files (its pipes) for a moment."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (alive(pid) or len(_tasks(pid)) > 1):
        time.sleep(0.05)


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


@contextmanager
def reading(url: str) -> Iterator[Ledger]:
    ledger = open_ledger(url)
    try:
        yield ledger
    finally:
        ledger.close()


def balance(url: str, account: str) -> int:
    with reading(url) as ledger:
        return ledger.service.get_account(account).balance_minor


def actors(url: str, account: str) -> list[str]:
    """Who each of the account's events says acted."""
    with reading(url) as ledger:
        return [e.metadata["actor"] for e in ledger.service.store.read_stream(account, 0)]


@contextmanager
def running(store: str, metrics: Metrics | None = None) -> Iterator[LedgerProcess]:
    process = LedgerProcess(store, metrics=metrics)
    process.start()
    try:
        yield process
    finally:
        process.close()


def test_transfers_are_answered_from_the_child_as_the_service_answers_them(store):
    metrics = Metrics()
    with running(store, metrics) as process:
        assert process.pid not in (None, os.getpid())
        first = process.transfer_each([
            BatchItem("acc-a", "acc-b", "10.00", "key-1", actor="teller-1"),
            BatchItem("acc-a", "acc-b", "1000.00", "key-2"),
            BatchItem("acc-a", "acc-b", "x", "key-3"),
        ])  # fmt: skip
        again = process.transfer_each([BatchItem("acc-a", "acc-b", "10.00", "key-1")])
    done, refused, malformed = first
    assert isinstance(done, Receipt) and not done.replayed
    assert done.outcome["amount"] == "10.00"
    assert isinstance(refused, InsufficientFunds)
    assert isinstance(malformed, InvalidInput)
    (replayed,) = again
    assert isinstance(replayed, Receipt) and replayed.replayed
    assert replayed.outcome == done.outcome
    assert (balance(store, "acc-a"), balance(store, "acc-b")) == (9_000, 11_000)
    assert actors(store, "acc-b")[-1] == "teller-1"  # the item's actor, not the child's
    # what the child observed is counted in the parent's registry
    count = "eventbank_command_duration_seconds_count"
    assert sample(metrics, count, command="transfer", outcome="ok") == 1
    assert sample(metrics, count, command="transfer", outcome="refused") == 1
    assert sample(metrics, count, command="transfer", outcome="replayed") == 1
    assert sample(metrics, "eventbank_appends_total", engine="sqlite", outcome="ok") >= 1


def test_batches_run_in_the_child_each_item_as_its_own_transfer_or_all_or_none(store):
    metrics = Metrics()
    with running(store, metrics) as process:
        items = [BatchItem("acc-a", "acc-b", "5.00", "b-1", actor="clerk"),
                 BatchItem("acc-a", "acc-b", "500.00", "b-2", actor="clerk")]  # fmt: skip
        each = process.transfer_batch(items)
        again = process.transfer_batch(items[:1])
        atomic = process.transfer_batch(
            [BatchItem("acc-b", "acc-a", "1.00", "c-1"), BatchItem("acc-b", "acc-a", "x", "c-2")],
            atomic=True,
        )
    assert [r.status for r in each] == ["ok", "refused"]
    assert isinstance(each[1].error, InsufficientFunds)
    assert [r.status for r in again] == ["replayed"]
    assert [r.status for r in atomic] == ["refused", "refused"]  # all or none: none
    assert (balance(store, "acc-a"), balance(store, "acc-b")) == (9_500, 10_500)
    assert actors(store, "acc-a")[-1] == "clerk"  # the item's actor, not the child's
    count = "eventbank_command_duration_seconds_count"
    assert sample(metrics, count, command="transfer", outcome="ok") == 1


def test_a_child_that_died_between_groups_is_replaced_before_the_next_is_sent(store):
    with running(store) as process:
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_gone(first)
        (done,) = process.transfer_each([BatchItem("acc-a", "acc-b", "1.00", "k-1")])
        assert isinstance(done, Receipt) and not done.replayed
        assert process.pid not in (None, first)
    assert balance(store, "acc-b") == 10_100


def test_a_child_that_dies_holding_a_group_fails_it_as_lost_and_the_next_starts_another(store):
    with running(store) as process:
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGSTOP)  # the group is sent, and never decided
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(process.transfer_each,
                               [BatchItem("acc-a", "acc-b", "1.00", "k-1"),
                                BatchItem("acc-b", "acc-a", "1.00", "k-2")])  # fmt: skip
            deadline = time.monotonic() + 10
            while process._free.qsize() == process.channels and time.monotonic() < deadline:
                time.sleep(0.01)  # until it has taken a pipe
            time.sleep(0.5)  # and sent on it
            os.kill(first, signal.SIGKILL)
            lost = held.result(timeout=30)
        assert [type(answer) for answer in lost] == [LedgerProcessLost, LedgerProcessLost]
        assert "retry with the same Idempotency-Key" in str(lost[0])
        (after,) = process.transfer_each([BatchItem("acc-a", "acc-b", "1.00", "k-1")])
        assert isinstance(after, Receipt) and not after.replayed  # the lost one never ran
        assert process.pid not in (None, first)
    assert balance(store, "acc-b") == 10_100


def test_a_closed_ledger_process_refuses_what_still_comes(store):
    with running(store) as process:
        pass
    with pytest.raises(StoreUnavailable, match="stopping: nothing was written"):
        process.transfer_each([BatchItem("acc-a", "acc-b", "1.00", "late")])
    assert process.pid is None and balance(store, "acc-b") == 10_000


def test_a_store_the_child_cannot_open_is_raised_by_start(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    process = LedgerProcess(f"sqlite:///{tmp_path / 'file' / 'ledger.db'}")
    with pytest.raises(StoreError):
        process.start()
    assert process.pid is None


def test_a_child_that_exits_before_it_is_ready_is_unavailable_not_a_traceback(store):
    process = LedgerProcess(store, cpus=frozenset({4096}))  # no such CPU: the child fails
    with pytest.raises(StoreUnavailable, match=r"exited \(1\) before it was ready"):
        process.start()
    assert process.pid is None


def test_callers_queued_behind_a_start_that_hangs_fail_with_it_not_each_in_turn(monkeypatch):
    monkeypatch.setattr(ledger_process, "START_TIMEOUT_S", 3.0)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, then never answers
        port = silent.getsockname()[1]
        process = LedgerProcess(f"postgresql://eventbank@127.0.0.1:{port}/eventbank")
        starts: list[float] = []
        real_start = process._start
        monkeypatch.setattr(process, "_start", lambda: (starts.append(1), real_start())[1])

        def call(n: int) -> Exception | None:
            try:
                process.transfer_each([BatchItem("acc-a", "acc-b", "1.00", f"queued-{n}")])
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                return exc
            return None

        with ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(call, range(4)))
        assert all(isinstance(o, StoreUnavailable) and "did not start in 3.0 s" in str(o)
                   for o in outcomes), outcomes  # fmt: skip
        assert len(starts) == 1  # the three queued behind it did not each wait 3 s more
        with pytest.raises(StoreUnavailable, match="did not start"):
            process.start()  # a caller that came after the failure tries afresh
        assert len(starts) == 2 and process.pid is None
        process.close()


def test_an_error_that_cannot_cross_the_pipe_becomes_a_store_error():
    class Odd(Exception):
        def __init__(self) -> None:
            super().__init__("odd")
            self.call = lambda: None  # a lambda does not pickle

    sent = _sendable(Odd())
    assert isinstance(sent, StoreError) and "Odd: odd" in str(sent)
    kept = InsufficientFunds("short")
    assert _sendable(kept) is kept


def test_serve_with_a_ledger_process_answers_transfers_from_it(tmp_path):
    process, url, startup = start_server(tmp_path, "--ledger-process")
    teller = {"Authorization": f"Bearer {TELLER}"}
    try:
        for account in ("acc-a", "acc-b"):
            opened = httpx.post(f"{url}/accounts", headers=teller, timeout=10, json={
                "account_id": account, "owner": "O", "type": "CHECKING",
                "initial_deposit": "50.00"})  # fmt: skip
            assert opened.status_code == 201, opened.text
        body = {"from_account_id": "acc-a", "to_account_id": "acc-b", "amount": "20.00"}
        keyed = {**teller, "Idempotency-Key": "pay-1"}
        sent = httpx.post(f"{url}/transfers", headers=keyed, json=body, timeout=10)
        batch = {"items": [{**body, "amount": "1.00", "idempotency_key": "batch-1"}]}
        batched = httpx.post(f"{url}/transfers/batch", headers=teller, json=batch, timeout=10)
        again = httpx.post(f"{url}/transfers", headers=keyed, json=body, timeout=10)
        short = httpx.post(f"{url}/transfers", headers=teller, timeout=10,
                           json={**body, "amount": "500.00"})  # fmt: skip
        read = httpx.get(f"{url}/accounts/acc-b", headers=teller, timeout=10)
        scraped = httpx.get(f"{url}/metrics", headers=teller, timeout=10).text
        child = int(re.search(r"ledger +process (\d+)", startup).group(1))
        server_cpus, child_cpus = thread_cpus(process.pid), thread_cpus(child)
        os.kill(child, signal.SIGSTOP)  # what is sent to it now is never answered
        with ThreadPoolExecutor(2) as pool:
            held = pool.submit(httpx.post, f"{url}/transfers", headers=teller, json=body,
                               timeout=30)  # fmt: skip
            held_batch = pool.submit(httpx.post, f"{url}/transfers/batch", headers=teller,
                                     json={"items": [{**body, "idempotency_key": "batch-2"}]},
                                     timeout=30)  # fmt: skip
            time.sleep(4)  # both sent to the stopped child, even on a busy machine
            os.kill(child, signal.SIGKILL)
            lost, lost_batch = held.result(timeout=30), held_batch.result(timeout=30)
        after = httpx.post(f"{url}/transfers", headers=teller, json=body, timeout=10)
        children = ledger_children_of(process.pid)  # the ledger process started after the kill
    finally:
        stop_server(process)
    assert sent.status_code == 201, sent.text
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == sent.json()
    assert short.status_code == 409 and short.json()["code"] == "insufficient_funds"
    assert batched.status_code == 200 and batched.json()["succeeded"] == 1, batched.text
    assert read.json()["balance"] == "71.00"  # projected inline by the child
    everywhere = frozenset(os.sched_getaffinity(0))
    assert len(server_cpus) == 1 and len(next(iter(server_cpus))) == 1  # serve stays on one
    assert child_cpus == {everywhere}  # the child runs on any of them
    for held_answer in (lost, lost_batch):  # both ran in the child: its loss is theirs
        assert held_answer.status_code == 503, held_answer.text
        assert held_answer.json()["code"] == "ledger_process_lost"
    assert after.status_code == 201, after.text  # a new child took over
    assert 'eventbank_command_duration_seconds_count{command="transfer",outcome="ok"} 2.0' in (
        scraped
    )
    assert len(children) == 1 and child not in children
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in children), "a ledger process outlived serve"


@pytest.mark.parametrize(
    ("store", "options", "reason"),
    [
        ("postgresql://127.0.0.1:1/none", ("--workers", "2"),
         "--ledger-process is for one server process: leave out --workers"),
        ("dynamodb://local/none", (), "--ledger-process needs a SQLite or PostgreSQL store"),
    ],
)  # fmt: skip
def test_serve_refuses_a_ledger_process_it_cannot_use_in_one_line(tmp_path, store, options, reason):
    done = subprocess.run(
        [EVENTBANK, "--store", store, "serve", "--ledger-process", *options,
         "--tokens-file", str(tmp_path / "tokens.json")],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.startswith(f"error: {reason}"), done.stderr
    assert done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
