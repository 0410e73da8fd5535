"""Webhooks as an operator runs them: managed over HTTP and from the command line, delivered by
a real `eventbank serve` process to a real receiver on loopback, and a server SIGKILLed again
and again during delivery (the bank test's nemesis) losing nothing and reordering nothing."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbank.engines.urls import open_store
from eventbank.webhooks import SIGNATURE_HEADER, verify
from reliability.serve import EVENTBANK, ServeProcess
from tests.test_http import problem
from tests.test_webhooks import Receiver

ADMIN, TELLER = "admin-secret-webhooks", "teller-secret-webhooks"
WEBHOOK_STREAMS = ("Webhook", "WebhookRegistry")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def started(store_url: str, folder: Path) -> ServeProcess:
    server = ServeProcess(store_url, folder, {"admin": ADMIN, "teller": TELLER})
    server.argv += ["--allow-http-webhooks"]  # the receiver is on loopback, over http
    server.start()
    return server


def client(server: ServeProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def expected(store_url: str) -> list[str]:
    """The ids of every event a subscription made before any money moved is to receive."""
    store = open_store(store_url)
    try:
        events, after = [], 0
        while batch := store.read_all(after, 1_000):
            events += batch
            after = batch[-1].position or after
        first = next(e.position for e in events if e.aggregate_type == "Webhook")
        ledger = [e for e in events if e.aggregate_type not in WEBHOOK_STREAMS]
        return [e.event_id for e in ledger if (e.position or 0) > first]
    finally:
        store.close()


def received(receiver: Receiver, secret: str) -> list[str]:
    """The event ids of every request it answered 2xx, in order, each signature checked."""
    ids = []
    for headers, body in receiver.accepted():
        verify(body, headers[SIGNATURE_HEADER], secret)
        ids += [event["event_id"] for event in json.loads(body)["events"]]
    return ids


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def once_each(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    return [i for i in ids if not (i in seen or seen.add(i))]


def money(teller: httpx.Client, rng: random.Random, accounts: list[str], count: int) -> None:
    for _ in range(count):
        a, b = rng.sample(accounts, 2)
        body = {"from_account_id": a, "to_account_id": b, "amount": f"{rng.randint(1, 500)}.00"}
        with contextlib.suppress(httpx.HTTPError):  # the server is being killed: no retry
            teller.post("/transfers", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})


def test_webhooks_are_managed_over_http_and_the_cli_and_delivered_by_serve(
    tmp_path, receiver: Receiver
):
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    server = started(store_url, tmp_path)
    try:
        with client(server, ADMIN) as admin, client(server, TELLER) as teller:
            problem(teller.get("/webhooks"), 403, "forbidden")
            for body, code in [
                ({"url": "ftp://example.com/x"}, "invalid_webhook_url"),
                ({"url": "https://10.1.2.3/hook"}, "webhook_address_refused"),
                ({"url": "https://169.254.169.254/latest"}, "webhook_address_refused"),
                ({"url": receiver.url, "event_types": ["NoSuchEvent"]}, "unknown_event_type"),
            ]:
                problem(admin.post("/webhooks", json=body), 422, code)
            assert admin.get("/webhooks").json() == {"items": []}  # nothing stored
            made = admin.post("/webhooks", json={"url": receiver.url, "description": "books"})
            assert made.status_code == 201, made.text
            assert made.headers["cache-control"] == "no-store"
            hook, secret = made.json()["webhook_id"], made.json()["secret"]
            assert secret not in admin.get(f"/webhooks/{hook}").text  # shown once
            for n in range(3):
                body = {"account_id": f"w-{n}", "owner": "W", "type": "CHECKING",
                        "initial_deposit": "100.00"}  # fmt: skip
                assert teller.post("/accounts", json=body).status_code == 201
            money(teller, random.Random(7), ["w-0", "w-1", "w-2"], 10)
            want = expected(store_url)
            wait_for(lambda: received(receiver, secret) == want, 20, "serve did not deliver")

            # The receiver answers before the checkpoint commits, and the success is recorded
            # after it: wait for both.
            def caught_up() -> bool:
                status = admin.get(f"/webhooks/{hook}").json()["status"]
                return status["lag_events"] == 0 and bool(status["last_success_at"])

            wait_for(caught_up, 10, "checkpoint or success not recorded")

            paused = admin.patch(f"/webhooks/{hook}", json={"paused": True})
            assert paused.status_code == 200 and paused.json()["paused"], paused.text
            replayed = admin.post(f"/webhooks/{hook}/replay", json={"from_position": 0})
            assert replayed.status_code == 200, replayed.text
            listed = subprocess.run(
                [EVENTBANK, "--store", store_url, "webhooks", "list", "--json",
                 "--webhook-key-file", str(tmp_path / "eventbank-webhook.key")],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            assert [(w["webhook_id"], w["paused"]) for w in json.loads(listed.stdout)] == [
                (hook, True)]  # fmt: skip
            time.sleep(1.5)
            assert received(receiver, secret) == want  # paused: nothing more
            admin.patch(f"/webhooks/{hook}", json={"paused": False})
            wait_for(lambda: received(receiver, secret) == want + want, 20, "no replay")
            assert admin.delete(f"/webhooks/{hook}").status_code == 204
            problem(admin.get(f"/webhooks/{hook}"), 404, "webhook_not_found")
    finally:
        server.stop()


def test_serve_without_delivery_leaves_it_to_a_separate_webhooks_run(tmp_path, receiver: Receiver):
    """The deployment with delivery apart: `serve --no-webhook-delivery` sends nothing, and
    `eventbank webhooks run` on the same store and key delivers all of it."""
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    server = ServeProcess(store_url, tmp_path, {"admin": ADMIN, "teller": TELLER})
    server.argv += ["--allow-http-webhooks", "--no-webhook-delivery"]
    server.start()
    try:
        with client(server, ADMIN) as admin, client(server, TELLER) as teller:
            made = admin.post("/webhooks", json={"url": receiver.url}).json()
            hook, secret = made["webhook_id"], made["secret"]
            for n in range(2):
                body = {"account_id": f"d-{n}", "owner": "D", "type": "CHECKING",
                        "initial_deposit": "10.00"}  # fmt: skip
                assert teller.post("/accounts", json=body).status_code == 201
            want = expected(store_url)
            time.sleep(1.5)  # serve's own delivery would have sent these by now
            assert receiver.requests == []
            assert admin.get(f"/webhooks/{hook}").json()["status"]["lag_events"] == len(want)
            runner = subprocess.Popen(
                [EVENTBANK, "--store", store_url, "webhooks", "run", "--allow-http",
                 "--webhook-key-file", str(tmp_path / "eventbank-webhook.key")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                wait_for(lambda: received(receiver, secret) == want, 20, "run did not deliver")
            finally:
                runner.terminate()
                assert runner.wait(timeout=10) == 0
    finally:
        server.stop()


def test_serve_sigkilled_during_delivery_loses_nothing_and_reorders_nothing(
    tmp_path, receiver: Receiver
):
    """Every event delivered at least once, first deliveries in feed order; a duplicate only
    of a batch whose 2xx the crash kept from being recorded (at most a batch per crash)."""
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    server = started(store_url, tmp_path)
    accounts = [f"k-{n}" for n in range(4)]
    try:
        with client(server, ADMIN) as admin, client(server, TELLER) as teller:
            secret = admin.post("/webhooks", json={"url": receiver.url}).json()["secret"]
            for account in accounts:
                body = {"account_id": account, "owner": "K", "type": "CHECKING",
                        "initial_deposit": "1000.00"}  # fmt: skip
                assert teller.post("/accounts", json=body).status_code == 201
        receiver.delay_s = 0.05  # deliveries in flight when the crash comes
        stop = threading.Event()

        def load() -> None:
            rng = random.Random(11)
            while not stop.is_set():
                with client(server, TELLER) as teller:
                    money(teller, rng, accounts, 5)

        loader = threading.Thread(target=load)
        loader.start()
        crashes = 3
        for _ in range(crashes):
            time.sleep(1.5)
            server.kill()
            time.sleep(0.3)
            server.start()
        stop.set()
        loader.join()
        want = expected(store_url)
        wait_for(lambda: set(received(receiver, secret)) >= set(want), 60, "events missing")
        got = received(receiver, secret)
        assert once_each(got) == want  # nothing lost, first deliveries in feed order
        assert len(got) - len(want) <= crashes * 100  # duplicates: a batch per crash at most
    finally:
        server.stop()


def test_with_two_workers_on_postgres_one_delivers_each_event_once_in_order(
    postgres_store_url: str, tmp_path, receiver: Receiver
):
    """`serve --workers 2`: both answer, the one elected to run the projections delivers, so a
    receiver gets every event once (no crash here: no duplicate) and in feed order."""
    server = ServeProcess(postgres_store_url, tmp_path, {"admin": ADMIN, "teller": TELLER},
                          workers=2)  # fmt: skip
    server.argv += ["--allow-http-webhooks"]
    server.start()
    accounts = [f"p-{n}" for n in range(3)]
    try:
        fresh = httpx.Limits(max_keepalive_connections=0)  # each request to either worker
        with httpx.Client(base_url=server.url, timeout=30, limits=fresh,
                          headers={"Authorization": f"Bearer {ADMIN}"}) as admin:  # fmt: skip
            secret = admin.post("/webhooks", json={"url": receiver.url}).json()["secret"]
            served_by = set()
            for account in accounts:
                body = {"account_id": account, "owner": "P", "type": "CHECKING",
                        "initial_deposit": "100.00"}  # fmt: skip
                opened = admin.post("/accounts", json=body)
                assert opened.status_code == 201, opened.text
                served_by.add(opened.headers["x-served-by"])
            money(admin, random.Random(5), accounts, 20)
            deadline = time.monotonic() + 30  # on a loaded machine the second may start late
            while len(served_by) < 2:  # both workers take requests
                assert time.monotonic() < deadline, f"only worker {served_by} answered"
                served_by.add(admin.get("/healthz").headers["x-served-by"])
        want = expected(postgres_store_url)
        wait_for(lambda: len(received(receiver, secret)) >= len(want), 30, "events missing")
        time.sleep(1)  # a second deliverer, were there one, would have sent its copies by now
        assert received(receiver, secret) == want
    finally:
        server.stop()
