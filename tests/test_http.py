"""The HTTP service as a user meets it: a real `eventbank serve` process on loopback, via httpx."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from eventbank.application.projections import accounts
from eventbank.application.write_path import current_actor
from eventbank.engines.urls import open_read_store
from eventbank.http.audits import AuditJobs
from eventbank.ports.read_store import Failure
from eventbank.wiring import open_ledger
from reliability.serve import ServeProcess
from reliability.servers import PostgresCluster
from tests.serving import AUDITOR, TELLER, Server, serve, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("http"))


@pytest.fixture
def teller(server) -> Iterator[httpx.Client]:
    with server.client(TELLER) as client:
        yield client


def new_id() -> str:
    return f"acc-{uuid.uuid4().hex[:12]}"


def open_account(client: httpx.Client, balance: str | None = "100.00", **fields) -> str:
    account_id = fields.pop("account_id", new_id())
    body = {"account_id": account_id, "owner": "Ada", "type": "CHECKING", **fields}
    if balance:
        body["initial_deposit"] = balance
    response = client.post("/accounts", json=body)
    assert response.status_code == 201, response.text
    return account_id


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["detail"] and body["instance"] and body["type"].endswith(code)
    return body


# ------------------------------------------------------------------ first start and tokens


def test_first_start_prints_an_admin_token_once_and_keeps_only_its_hash(server, tmp_path):
    stored = server.tokens_file.read_text()
    assert server.admin not in stored
    assert json.loads(stored)["tokens"][0]["role"] == "admin"
    with server.client(server.admin) as admin:
        assert admin.get("/events").status_code == 200
    assert oct(server.tokens_file.stat().st_mode & 0o777) == "0o600"


def test_a_second_start_does_not_print_a_new_token(tmp_path):
    first, _, startup = start_server(tmp_path)
    stop_server(first)
    assert "admin token" in startup
    second, _, startup = start_server(tmp_path)
    stop_server(second)
    assert "admin token" not in startup and "eb_" not in startup


# ------------------------------------------------------------------ each endpoint


def test_accounts_money_and_transfers_end_to_end(server, teller):
    a = open_account(teller, "100.00")
    b = open_account(teller, None, type="SAVINGS")
    assert teller.get(f"/accounts/{a}").json() == {
        "account_id": a, "owner": "Ada", "type": "CHECKING", "currency": "USD",
        "balance": "100.00", "pending_debits": "0.00", "pending_credits": "0.00",
        "overdraft_limit": "0.00", "available": "100.00", "version": 2,
        "status": "OPEN"}  # fmt: skip

    deposit = teller.post(f"/accounts/{a}/deposits", json={"amount": "0.50"})
    assert deposit.status_code == 201 and deposit.json()["account"]["balance"] == "100.50"
    withdrawal = teller.post(f"/accounts/{a}/withdrawals", json={"amount": "20.50"})
    assert withdrawal.status_code == 201 and withdrawal.json()["amount"] == "20.50"
    moved = teller.post("/transfers", json={"from_account_id": a, "to_account_id": b,
                                            "amount": "80"})  # fmt: skip
    assert moved.status_code == 201
    transfer_id = moved.json()["transfer_id"]
    assert (moved.json()["from"]["balance"], moved.json()["to"]["balance"]) == ("0.00", "80.00")

    found = teller.get(f"/transfers/{transfer_id}").json()
    assert (found["from_account_id"], found["to_account_id"], found["amount"]) == (a, b, "80.00")

    page = teller.get(f"/accounts/{a}/transactions", params={"limit": 2}).json()
    assert [m["kind"] for m in page["items"]] == ["deposit", "deposit"]
    rest = teller.get(f"/accounts/{a}/transactions",
                      params={"after_version": page["next_after_version"]}).json()  # fmt: skip
    assert [m["kind"] for m in rest["items"]] == ["withdrawal", "transfer_out"]
    assert rest["next_after_version"] is None and rest["items"][-1]["balance_after"] == "0.00"

    closed = teller.post(f"/accounts/{a}/close")
    assert closed.status_code == 200 and closed.json()["account"]["status"] == "CLOSED"

    with server.client(AUDITOR) as auditor:
        events = auditor.get("/events", params={"limit": 1000}).json()["items"]
    mine = [e for e in events if e["aggregate_id"] == a]
    assert [e["event_type"] for e in mine] == ["AccountOpened", "FundsDeposited",
                                               "FundsDeposited", "FundsWithdrawn",
                                               "TransferredOut", "AccountClosed"]  # fmt: skip
    assert mine[0]["metadata"]["actor"] == "env-0"  # the teller token from EVENTBANK_TOKENS


def test_health_readiness_metrics_and_openapi(server):
    with server.client(None) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok", "checks": {}}
        ready = anonymous.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "parked_streams": 0,
            "checks": {"event_store": "ok", "projections": "ok"},
        }
        spec = anonymous.get("/openapi.json").json()
    transfer_body = spec["paths"]["/transfers"]["post"]["requestBody"]["content"]
    schema_ref = transfer_body["application/json"]["schema"]["$ref"].split("/")[-1]
    assert spec["components"]["schemas"][schema_ref]["examples"]
    assert "Problem" in spec["components"]["schemas"]
    assert "409" in spec["paths"]["/transfers"]["post"]["responses"]


def scrape(server: Server) -> str:
    with server.client(None) as anonymous:
        return anonymous.get("/metrics").text


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus exposition, 0 if it has not appeared yet."""
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_series_move_when_requests_are_made(server, teller):
    account = open_account(teller)
    before = scrape(server)
    teller.post(f"/accounts/{account}/withdrawals", json={"amount": "1"})
    teller.post(f"/accounts/{account}/withdrawals", json={"amount": "1000"})  # refused
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = {"method": "POST", "route": "/accounts/{account_id}/withdrawals"}
    assert moved("eventbank_http_requests_total", **route, status="201") == 1
    assert moved("eventbank_http_requests_total", **route, status="409") == 1
    assert moved("eventbank_appends_total", engine="sqlite", outcome="ok") == 1
    assert moved("eventbank_append_duration_seconds_count", engine="sqlite") == 1
    assert moved("eventbank_command_duration_seconds_count", command="withdraw", outcome="ok") == 1
    assert moved("eventbank_command_duration_seconds_count", command="withdraw",
                 outcome="refused") == 1  # fmt: skip
    assert "eventbank_command_retries_total" in after
    for gauge in ("eventbank_projection_lag_events", "eventbank_projection_lag_seconds"):
        assert f'{gauge}{{projection="accounts"}} 0.0' in after


def test_a_parked_stream_is_reported_but_only_an_unreachable_store_makes_it_unready(tmp_path):
    with PostgresCluster() as pg:
        url = pg.create_database()
        reads = open_read_store(url)
        # What the runner records when a handler keeps failing on one stream's event.
        reads.save_failure(
            Failure(
                accounts.NAME,
                "poisoned",
                2,
                "RuntimeError: handler bug",
                1,
                "2026-01-01T00:00:00+00:00",
                "2999-01-01T00:00:00+00:00",
            )
        )
        reads.close()
        server = ServeProcess(url, tmp_path, {"auditor": AUDITOR})
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=60) as anonymous:
                ready = anonymous.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json() == {
                    "status": "degraded",
                    "parked_streams": 1,
                    "checks": {"event_store": "ok", "projections": "ok"},
                }
                metrics = anonymous.get("/metrics").text
                assert sample(metrics, "eventbank_projection_parked_streams") == 1
                pg.stop("fast")
                down = anonymous.get("/readyz")
                assert down.status_code == 503, down.text
                assert down.json()["status"] == "unavailable"
                assert down.json()["checks"]["event_store"].startswith("unreachable")
        finally:
            server.stop()


# ------------------------------------------------------------------ every documented error


def test_each_documented_error(server, teller):
    a = open_account(teller, "10.00")
    eur = open_account(teller, None, currency="EUR")
    gone = open_account(teller, None)
    teller.post(f"/accounts/{gone}/close")
    refused = problem(teller.post(f"/accounts/{a}/withdrawals", json={"amount": "10.01"}), 409,
                      "insufficient_funds")  # fmt: skip
    assert refused["title"] == "Insufficient funds"  # what happened, not the status's name
    missing = problem(teller.get("/accounts/nobody"), 404, "account_not_found")
    assert missing["title"] == "Account not found"
    problem(teller.post("/accounts/nobody/deposits", json={"amount": "1"}), 404,
            "account_not_found")  # fmt: skip
    problem(teller.post(f"/accounts/{gone}/deposits", json={"amount": "1"}), 409,
            "account_closed")  # fmt: skip
    problem(teller.post("/transfers", json={"from_account_id": a, "to_account_id": eur,
                                            "amount": "1"}), 409, "currency_mismatch")  # fmt: skip
    problem(teller.post("/transfers", json={"from_account_id": a, "to_account_id": a,
                                            "amount": "1"}), 409, "self_transfer")  # fmt: skip
    problem(teller.post(f"/accounts/{a}/deposits", json={"amount": "1.001"}), 422,
            "invalid_amount")  # fmt: skip
    body = problem(teller.post(f"/accounts/{a}/deposits", json={"amount": 5}), 422,
                   "validation_error")  # fmt: skip
    assert "not a JSON number" in body["detail"]
    problem(teller.post(f"/accounts/{a}/deposits", json={"amount": "5", "extra": 1}), 422,
            "validation_error")  # fmt: skip
    problem(teller.post("/accounts", json={"account_id": a, "owner": "X", "type": "CHECKING"}),
            409, "account_exists")  # fmt: skip
    problem(teller.post("/accounts", json={"account_id": new_id(), "owner": "X",
                                           "type": "CHECKING", "currency": "XYZ"}), 422,
            "invalid_currency")  # fmt: skip
    problem(teller.post(f"/accounts/{a}/close"), 409, "balance_not_zero")
    problem(teller.get("/transfers/unknown-transfer"), 404, "transfer_not_found")
    malformed = problem(teller.post(f"/accounts/{a}/deposits", content=b"{not json",
                                    headers={"content-type": "application/json"}), 400,
                        "malformed_json")  # fmt: skip
    assert malformed["title"] == "Malformed JSON"
    problem(teller.post(f"/accounts/{a}/deposits", content=b"[" * 20_000 + b"]" * 20_000,
                        headers={"content-type": "application/json"}), 400,
            "malformed_json")  # fmt: skip
    problem(teller.post(f"/accounts/{a}/deposits", content=b"{" + b" " * 70_000 + b"}",
                        headers={"content-type": "application/json"}), 413,
            "request_too_large")  # fmt: skip
    problem(teller.get("/no/such/route"), 404, "not_found")
    assert teller.get(f"/accounts/{a}").json()["balance"] == "10.00"  # nothing moved


def test_a_reused_idempotency_key_with_another_body_is_refused(teller):
    a = open_account(teller)
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    assert (
        teller.post(f"/accounts/{a}/deposits", json={"amount": "1"}, headers=key).status_code == 201
    )
    problem(teller.post(f"/accounts/{a}/deposits", json={"amount": "2"}, headers=key), 422,
            "idempotency_key_reused")  # fmt: skip
    assert teller.get(f"/accounts/{a}").json()["balance"] == "101.00"


# ------------------------------------------------------------------ authentication


def secured_routes(server: Server) -> list[tuple[str, str, str]]:
    """(method, path, permission) of every route that needs a token, from the OpenAPI document."""
    with server.client(None) as anonymous:
        spec = anonymous.get("/openapi.json").json()
    routes = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                needs = ("events" if path.endswith("/events")
                         else "audit" if path in ("/audits", "/audits/{job_id}")
                         else "admin" if path.endswith(("/freeze", "/unfreeze", "/limits"))
                         or path.startswith(("/tokens", "/webhooks"))
                         else "write" if method == "post" else "read")  # fmt: skip
                concrete = re.sub(r"\{[a-z_]+\}", "x", path)
                routes.append((method.upper(), concrete, needs))
    return routes


def test_every_route_refuses_missing_wrong_and_underprivileged_tokens(server):
    routes = secured_routes(server)
    assert len(routes) == 43
    role_lacking = {"write": AUDITOR, "events": TELLER, "audit": TELLER, "admin": TELLER}
    for method, path, needs in routes:
        for token, status in ((None, 401), ("wrong-token", 401), (role_lacking.get(needs), 403)):
            if status == 403 and token is None:
                continue  # every role may read
            with server.client(token) as client:
                response = client.request(method, path, json={})
            problem(response, status, "unauthorized" if status == 401 else "forbidden")


# ------------------------------------------------------------------ concurrency over HTTP


def test_50_concurrent_withdrawals_never_overdraw(teller):
    account = open_account(teller, "1000.00")

    def withdraw(_: int) -> int:
        return teller.post(f"/accounts/{account}/withdrawals", json={"amount": "30.00"}).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(withdraw, range(50)))
    assert set(statuses) <= {201, 409}, statuses
    succeeded = statuses.count(201)
    assert succeeded <= 33
    balance = teller.get(f"/accounts/{account}").json()["balance"]
    assert balance == f"{1000 - 30 * succeeded}.00"


def test_concurrent_transfers_in_a_ring_conserve_the_total(teller):
    ring = [open_account(teller, "100.00") for _ in range(5)]

    def send(n: int) -> int:
        body = {"from_account_id": ring[n % 5], "to_account_id": ring[(n + 1) % 5],
                "amount": f"{(n % 7) * 10 + 5}.00"}  # fmt: skip
        return teller.post("/transfers", json=body).status_code

    with ThreadPoolExecutor(50) as pool:
        statuses = list(pool.map(send, range(50)))
    assert set(statuses) <= {201, 409} and 201 in statuses
    balances = [teller.get(f"/accounts/{a}").json()["balance"] for a in ring]
    assert sum(int(b.replace(".", "")) for b in balances) == 500_00
    assert all(not b.startswith("-") for b in balances)


def test_retried_posts_with_one_key_move_money_once_even_concurrently(teller):
    source, target = open_account(teller, "100.00"), open_account(teller, None)
    headers = {"Idempotency-Key": f"pay-{uuid.uuid4()}"}
    body = {"from_account_id": source, "to_account_id": target, "amount": "10.00"}

    def send(_: int) -> httpx.Response:
        return teller.post("/transfers", json=body, headers=headers)

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(send, range(10)))
    responses.append(send(0))  # and once more, later
    assert {r.status_code for r in responses} == {201}
    assert len({r.text for r in responses}) == 1  # the first response, replayed byte for byte
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 10
    assert teller.get(f"/accounts/{target}").json()["balance"] == "10.00"


# ------------------------------------------------------------------ generated requests


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path):
    # The coverage phase's cases are most of them: 1,865 at 10 examples per fuzzed operation
    # (11 s), 2,420 at 25 (30 s).
    done = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run", f"{server.url}/openapi.json",
         "-H", f"Authorization: Bearer {server.admin}", "--max-examples", "10",
         "--phases", "examples,coverage,fuzzing", "--seed", "1", "--checks",
         "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance,negative_data_rejection"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
             "PYTHONPATH": str(Path(__file__).parent.parent)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:]
    generated = re.search(r"(\d+) generated", done.stdout)
    assert generated and int(generated.group(1)) >= 300, done.stdout[-2000:]


# ------------------------------------------------------------------ payroll


def test_a_payroll_over_http_is_validated_then_paid_in_the_background(teller):
    employer = open_account(teller, "1000.00")
    staff = [open_account(teller, None) for _ in range(3)]
    csv_body = "account_id,amount,reference\n" + "".join(
        f"{a},{n + 1}00.00,nov\n" for n, a in enumerate(staff)
    )
    csv_headers = {"content-type": "text/csv", "Idempotency-Key": f"pay-{uuid.uuid4()}"}
    started = teller.post("/payrolls", params={"from_account_id": employer}, content=csv_body,
                          headers=csv_headers)  # fmt: skip
    assert started.status_code == 202, started.text
    location = started.headers["Location"]
    deadline = time.monotonic() + 30
    while (view := teller.get(location).json())["status"] == "running":
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert (view["status"], view["paid"], view["moved_minor"]) == ("completed", 3, 600_00)
    again = teller.post("/payrolls", params={"from_account_id": employer}, content=csv_body,
                        headers=csv_headers)  # fmt: skip
    assert again.json()["saga_id"] == started.json()["saga_id"]  # the same key pays once
    assert teller.get(f"/accounts/{employer}").json()["balance"] == "400.00"

    bad = "\n".join([f"{staff[0]},1.00,dec", "nobody,1.00,dec", f"{staff[1]},abc,dec"])
    refused = teller.post("/payrolls", params={"from_account_id": employer}, content=bad,
                          headers={"content-type": "text/csv",
                                   "Idempotency-Key": "bad-1"})  # fmt: skip
    body = problem(refused, 422, "payroll_rejected")
    assert [e["line"] for e in body["errors"]] == [2, 3]
    problem(teller.get("/payrolls/unknown"), 404, "payroll_not_found")
    assert teller.get(f"/accounts/{employer}").json()["balance"] == "400.00"


# ------------------------------------------------------------------ audits in the background


def test_an_audit_is_a_background_job_answered_202_and_polled_until_done(server, teller):
    open_account(teller, "12.00")
    with server.client(AUDITOR) as auditor:
        started = auditor.post("/audits")
        assert started.status_code == 202, started.text
        job = started.json()
        assert job["status"] in ("running", "done") and job["actor"] == "env-1"
        location = started.headers["Location"]
        assert location == f"/audits/{job['id']}"
        deadline = time.monotonic() + 30
        while (job := auditor.get(location).json())["status"] == "running":
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
        assert job["status"] == "done" and job["finished_at"] and "error" not in job
        report = job["report"]
        assert report["clean"] and report["streams"] >= 1 and "USD" in report["books"]
        latest = auditor.get("/audits/latest").json()
        assert (latest["digest"], latest["actor"]) == (report["digest"], "env-1")
        problem(auditor.get("/audits/no-such-job"), 404, "audit_job_not_found")
    problem(teller.get(location), 403, "forbidden")  # the report is the audit role's


class _HeldRunner:
    """A projection runner whose catch_up waits until released (or raises ``fail``)."""

    def __init__(self, runner, fail: Exception | None = None):
        self.runner, self.fail, self.release = runner, fail, threading.Event()

    def catch_up(self):
        assert self.release.wait(30)
        if self.fail is not None:
            raise self.fail
        return self.runner.catch_up()


def _finished(jobs: AuditJobs, job_id: str):
    deadline = time.monotonic() + 30
    while (job := jobs.get(job_id)).status == "running":
        assert time.monotonic() < deadline, job
        time.sleep(0.01)
    return job


def test_one_audit_runs_at_a_time_failures_are_reported_and_few_jobs_are_kept(tmp_path):
    ledger = open_ledger(f"sqlite:///{tmp_path / 'audits.db'}")
    try:
        ledger.service.open_account("a", owner="Ann", account_type="CHECKING")
        held = ledger.runner = _HeldRunner(ledger.runner)
        jobs = AuditJobs(ledger, keep=2)
        token = current_actor.set("auditor-7")
        try:
            first, started = jobs.start()
        finally:
            current_actor.reset(token)
        assert started and first.status == "running"
        again, started_again = jobs.start()  # while it runs: the same job, nothing new
        assert (again.id, started_again) == (first.id, False)
        held.release.set()
        done = _finished(jobs, first.id)
        assert done.status == "done" and done.report["clean"] and done.error is None
        assert ledger.queries.latest_audit()["actor"] == "auditor-7"  # the caller's context

        ledger.runner = _HeldRunner(held.runner, fail=RuntimeError("disk on fire"))
        ledger.runner.release.set()
        failed = _finished(jobs, jobs.start()[0].id)
        assert (failed.status, failed.report) == ("failed", None)
        assert failed.error == "RuntimeError: disk on fire"
        third = _finished(jobs, jobs.start()[0].id)
        assert jobs.get(first.id) is None  # only the last two are kept
        assert [jobs.get(j.id) is not None for j in (failed, third)] == [True, True]
    finally:
        ledger.close()
