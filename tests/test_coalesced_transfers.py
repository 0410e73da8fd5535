"""Single transfers run together (``LedgerService.transfer_each``, the HTTP service's
``Coalescer``): each is still a command of its own, with its own key, actor and answer, exactly
as if it had been sent alone. The service runs on both group-committing engines; the coalescer
in process; the HTTP service as a real ``eventbank serve``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from eventbank.application.batch import BatchItem
from eventbank.application.service import LedgerService
from eventbank.application.write_path import Receipt, current_actor
from eventbank.domain.errors import EventbankError
from eventbank.http.commands import Coalescer
from tests.serving import TELLER, serve


def opened(service: LedgerService, **balances: str | None) -> None:
    for account_id, balance in balances.items():
        service.open_account(account_id, owner=account_id.title(), account_type="CHECKING",
                             initial_deposit=balance)  # fmt: skip


def balance(service: LedgerService, account_id: str) -> str:
    return service.get_account(account_id).describe()["balance"]


def test_each_transfer_run_together_answers_as_if_sent_alone(ordered_store):
    service = LedgerService(ordered_store)
    opened(service, alice="100.00", bob=None, carol="5.00")
    first = service.transfer("alice", "bob", "1.00", command_id="k-sent-before")
    answers = service.transfer_each([
        BatchItem("alice", "bob", "10.00", "k-1", actor="ann"),          # 0 ok
        BatchItem("carol", "bob", "50.00", "k-poor", actor="ann"),       # 1 refused alone
        BatchItem("alice", "nobody", "1.00", "k-unknown"),               # 2 refused alone
        BatchItem("alice", "bob", "1.00", "k-sent-before"),              # 3 replayed
        BatchItem("alice", "bob", "2.00", "k-sent-before"),              # 4 key reused
        BatchItem("alice", "bob", "3.00", None, actor="ben"),            # 5 no key: a new one
        BatchItem("alice", "bob", "4.00", "k-twice"),                    # 6 ok
        BatchItem("alice", "bob", "4.00", "k-twice"),                    # 7 the same: replayed
        BatchItem("bob", "alice", "5.00", "k-back", actor="ben"),        # 8 on what bob got
        BatchItem("alice", "bob", "1.234", "k-cents"),                   # 9 refused alone
    ])  # fmt: skip
    kinds = [a.code if isinstance(a, EventbankError) else ("replayed" if a.replayed else "ok")
             for a in answers]  # fmt: skip
    assert kinds == [
        "ok",
        "insufficient_funds",
        "account_not_found",
        "replayed",
        "idempotency_key_reused",
        "ok",
        "ok",
        "replayed",
        "ok",
        "invalid_amount",
    ]
    receipts = [a for a in answers if isinstance(a, Receipt)]
    assert [r.command_id for r in receipts[:2]] == ["k-1", "k-sent-before"]
    assert answers[3].outcome == first.outcome  # type: ignore[union-attr]
    assert answers[7].outcome == answers[6].outcome  # type: ignore[union-attr]
    assert len(answers[5].command_id) > 0  # type: ignore[union-attr]
    # alice: 100 - 1 (before) - 10 - 3 - 4 + 5; bob the rest; carol untouched
    assert [balance(service, a) for a in ("alice", "bob", "carol")] == ["87.00", "13.00", "5.00"]
    actors = {e.metadata["command_id"]: e.metadata["actor"]
              for e in ordered_store.read_all(0, 1000)}  # fmt: skip
    assert (actors["k-1"], actors["k-back"], actors["k-twice"]) == ("ann", "ben", "local")
    assert actors[answers[5].command_id] == "ben"  # type: ignore[union-attr]
    # each is a command of its own: the same key and parameters sent alone replay it
    again = service.transfer("alice", "bob", "10.00", command_id="k-1")
    assert again.replayed and again.outcome == answers[0].outcome  # type: ignore[union-attr]


def test_concurrent_runs_on_the_same_accounts_never_overdraw(ordered_store):
    """Groups run by several threads at once (``transfer_each`` is the service's own call, for
    any number of threads; the HTTP coalescer makes it from one)."""
    service = LedgerService(ordered_store)
    opened(service, alice="100.00", bob=None)
    groups = [[BatchItem("alice", "bob", "1.00", f"k-{g}-{i}") for i in range(15)]
              for g in range(10)]  # fmt: skip
    with ThreadPoolExecutor(4) as pool:
        answers = [a for group in pool.map(service.transfer_each, groups) for a in group]
    done = sum(isinstance(a, Receipt) for a in answers)
    refused = [a.code for a in answers if isinstance(a, EventbankError)]
    assert done == 100 and refused == ["insufficient_funds"] * 50
    assert (balance(service, "alice"), balance(service, "bob")) == ("0.00", "100.00")


def test_the_coalescer_runs_what_queued_meanwhile_together_and_answers_each_its_own():
    taken, release = threading.Event(), threading.Event()
    groups: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        if not groups:
            taken.set()
            release.wait(30)  # the first group holds its runner while the others queue
        groups.append(items)
        if items == [99]:
            raise RuntimeError("the whole call failed")
        return [ValueError(f"refused {i}") if i % 5 == 0 else i * 10 for i in items]

    together = Coalescer(run, runners=1)

    async def main() -> list[object]:
        first = asyncio.ensure_future(together.submit(1))
        while not taken.is_set():  # the runner has taken the first alone
            await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(together.submit(i)) for i in range(2, 12)]
        gone = asyncio.ensure_future(together.submit(12))
        await asyncio.sleep(0.05)
        gone.cancel()  # its client went away: the others are still answered
        release.set()
        answers = await asyncio.gather(first, *rest, return_exceptions=True)
        failed = await asyncio.gather(together.submit(99), return_exceptions=True)
        return [*answers, *failed]

    answers = asyncio.run(main())
    assert groups[0] == [1] and groups[1] == list(range(2, 13)) and groups[2] == [99]
    assert answers[:4] == [10, 20, 30, 40]
    assert [str(a) for a in answers if isinstance(a, ValueError)] == ["refused 5", "refused 10"]
    assert isinstance(answers[-1], RuntimeError)


def test_after_a_group_with_company_the_runner_waits_for_the_clients_it_answered():
    """Coalescer's wait: after a group of several, the next is taken once as many requests as
    that group and the queue held are queued (its clients sending again), or once ``wait_ms``
    has passed; after a group of one, at once."""
    blocking, release = threading.Event(), threading.Event()
    groups: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        groups.append(items)
        if items == [10]:
            blocking.set()
            release.wait(30)  # the others queue meanwhile
        return items

    patient = Coalescer(run, runners=1, wait_ms=5_000)

    async def client(first: int) -> list[int]:  # sends again soon after its answer
        answered = await patient.submit(first)
        await asyncio.sleep(0.02 * first)  # one after another: alone, each a group of its own
        return [answered, await patient.submit(first + 4)]

    async def main() -> tuple[list[list[int]], float]:
        started = time.monotonic()
        assert [await patient.submit(0), await patient.submit(1)] == [0, 1]
        lone_s = time.monotonic() - started  # two groups of one: neither waited
        blocker = asyncio.ensure_future(patient.submit(10))
        while not blocking.is_set():
            await asyncio.sleep(0.01)
        clients = [asyncio.ensure_future(client(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0.05)
        release.set()
        return [await blocker, *await asyncio.gather(*clients)], lone_s

    answers, lone_s = asyncio.run(main())
    assert answers == [10, [2, 6], [3, 7], [4, 8]] and lone_s < 2.5
    assert groups == [[0], [1], [10], [2, 3, 4], [6, 7, 8]]

    blocking.clear()
    release.clear()
    groups.clear()
    brief = Coalescer(run, runners=1, wait_ms=300)

    async def company_never_comes() -> float:
        blocker = asyncio.ensure_future(brief.submit(10))
        while not blocking.is_set():
            await asyncio.sleep(0.01)
        pair = asyncio.gather(brief.submit(1), brief.submit(2))
        await asyncio.sleep(0.05)
        release.set()
        assert [await blocker, await pair] == [10, [1, 2]]
        started = time.monotonic()
        assert await brief.submit(3) == 3
        return time.monotonic() - started

    waited_s = asyncio.run(company_never_comes())
    assert groups == [[10], [1, 2], [3]] and 0.15 <= waited_s < 5  # waited, then went on


def store_files(pid: int, folder: Path) -> int:
    """How many files under ``folder`` (the SQLite stores and their logs) process ``pid`` has
    open."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(folder))
    return count


def test_served_transfers_sent_at_once_each_get_their_own_answer_and_actor(tmp_path):
    """A real ``eventbank serve``: 60 transfers from 12 threads under two tokens, some refused,
    some keys sent twice at once. Money is conserved, every event names its own token, and the
    server holds no more files open than before."""
    for server in serve(tmp_path):
        with server.client(server.admin) as admin, server.client(TELLER) as teller:
            for account, amount in (("a", {"initial_deposit": "30.00"}), ("b", {})):
                body = {"account_id": account, "owner": "O", "type": "CHECKING", **amount}
                assert admin.post("/accounts", json=body).status_code == 201
            jobs = []
            for n in range(60):
                key = f"k-{n % 50}"  # keys 0-9 are each sent twice, at about the same time
                who = admin if n % 2 else teller
                jobs.append((who, key, {"from_account_id": "a", "to_account_id": "b",
                                        "amount": "1.00"}))  # fmt: skip

            def send(job: tuple[httpx.Client, str, dict]) -> httpx.Response:
                who, key, body = job
                return who.post("/transfers", json=body, headers={"Idempotency-Key": key})

            with ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(send, jobs))
            statuses = [a.status_code for a in answers]
            assert set(statuses) <= {201, 409}, [a.text for a in answers if a.status_code >= 500]
            moved = {a.json()["command_id"] for a in answers if a.status_code == 201}
            refused = [a.json()["code"] for a in answers if a.status_code == 409]
            assert len(moved) == 30 and set(refused) == {"insufficient_funds"}
            assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == (
                sum(1 for a in answers if a.status_code == 201) - 30
            )
            account = teller.get("/accounts/b", params={"min_version": 31}).json()
            assert (account["balance"], account["version"]) == ("30.00", 31)
            events = admin.get("/events", params={"limit": 500}).json()["items"]
            actors = {e["metadata"]["command_id"]: e["metadata"]["actor"] for e in events
                      if e["event_type"] == "TransferredOut"}  # fmt: skip
            assert set(actors) == moved
            opener = events[0]["metadata"]["actor"]  # the admin token's name
            once = [(who, key) for who, key, _ in jobs[10:50] if key in actors]  # sent once
            by_teller = {actors[key] for who, key in once if who is teller}
            by_admin = {actors[key] for who, key in once if who is admin}
            assert by_admin == {opener} and len(by_teller) == 1 and by_teller != by_admin

            # The threads that ran those are kept for the next, with their connections: as
            # many transfers again open no more files (before, each group started a thread that
            # left its SQLite connections open: about 30 more files for these 60 transfers)
            files = store_files(server.process.pid, tmp_path)
            back = [(teller, f"back-{n}", {"from_account_id": "b", "to_account_id": "a",
                                           "amount": "0.01"}) for n in range(60)]  # fmt: skip
            with ThreadPoolExecutor(12) as pool:
                assert {a.status_code for a in pool.map(send, back)} == {201}
            assert store_files(server.process.pid, tmp_path) - files <= 2
    assert current_actor.get() == "local"


def test_a_key_sent_alone_and_then_together_is_one_transfer(ordered_store):
    service = LedgerService(ordered_store)
    opened(service, alice="10.00", bob=None)
    key = f"k-{uuid.uuid4().hex}"
    (together,) = service.transfer_each([BatchItem("alice", "bob", "2.00", key)])
    alone = service.transfer("alice", "bob", "2.00", command_id=key)
    assert isinstance(together, Receipt) and alone.replayed
    assert alone.outcome == together.outcome
    assert balance(service, "bob") == "2.00"
    with pytest.raises(EventbankError, match="different request"):
        service.transfer("alice", "bob", "3.00", command_id=key)


def test_a_key_recorded_before_among_new_ones_is_replayed_and_the_others_run(ordered_store):
    """Distinct keys are decided together and written in one append (transfer_batches.py,
    ``_batch_together``); one recorded before makes that append fail, and each is then run
    on its own: the recorded one replayed, the others written once."""
    service = LedgerService(ordered_store)
    opened(service, alice="10.00", bob=None)
    first = service.transfer("alice", "bob", "1.00", command_id="k-before")
    answers = service.transfer_each([
        BatchItem("alice", "bob", "1.00", "k-new-1"),
        BatchItem("alice", "bob", "1.00", "k-before"),
        BatchItem("alice", "bob", "1.00", "k-new-2"),
    ])  # fmt: skip
    assert [a.replayed for a in answers if isinstance(a, Receipt)] == [False, True, False]
    assert answers[1].outcome == first.outcome  # type: ignore[union-attr]
    assert [balance(service, a) for a in ("alice", "bob")] == ["7.00", "3.00"]
