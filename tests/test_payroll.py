"""Payroll sagas on every engine: big batches complete, crashes resume, bad input moves nothing."""

from __future__ import annotations

import contextlib
import hashlib
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

from eventbank.application.auditor import Auditor
from eventbank.application.payroll_service import PayrollRejected, PayrollService
from eventbank.domain.errors import BalanceNotZero
from eventbank.domain.events import ACCOUNT, AccountOpened
from eventbank.ports.event_store import NewEvent, chained
from eventbank.wiring import open_ledger

EVENTBANK = str(Path(sys.executable).parent / "eventbank")


@pytest.fixture
def ledger(store_url, tmp_path):
    opened = open_ledger(store_url, f"sqlite:///{tmp_path / 'payroll.read.db'}")
    yield opened
    opened.close()


def open_staff(ledger, count: int, prefix: str) -> list[str]:
    """Open ``count`` empty accounts, 40 per append (well inside every engine's limit)."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for start in range(0, count, 40):
        chunk = ids[start : start + 40]
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
    assert sum(balance(ledger, a) for a in staff) == total
    ledger.runner.catch_up()
    report = Auditor(ledger.events, ledger.reads).run()
    assert report.clean, report.findings[:5]


def test_every_invalid_line_is_reported_before_any_money_moves(ledger):
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
        PayrollService(ledger.service).start("employer", text)
    problems = {p["line"]: p["problem"] for p in refused.value.problems}
    assert sorted(problems, key=lambda n: n or 0) == [None, 3, 4, 5, 6, 7, 8, 9]
    assert "insufficient funds" in problems[None]  # the one valid line, 60.00 > 50.00 held
    assert "duplicate of line 2" in problems[7]
    assert len(ledger.events.read_all(0, 10_000)) == before


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


def saga_id_for(key: str) -> str:
    return "payroll#" + hashlib.sha256(key.encode()).hexdigest()[:24]


@pytest.mark.parametrize("policy", ["best-effort", "all-or-nothing"])
def test_a_payroll_process_killed_at_random_points_resumes_exactly_once(
    ledger, store_url, tmp_path, policy
):
    rng = random.Random(policy)
    ledger.service.open_account("employer", owner="Co", account_type="CHECKING",
                                initial_deposit="100000.00")  # fmt: skip
    env = {**os.environ, "EVENTBANK_STORE": store_url,
           "EVENTBANK_READ_STORE": f"sqlite:///{tmp_path / 'payroll.read.db'}"}  # fmt: skip
    # DynamoDB Local pays about 25 lines a second here, so a third of the lines still leaves
    # the kill mid-run while keeping the test under a minute; the SQL engines pay 120.
    size = 40 if store_url.startswith("dynamodb") else 120
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
        time.sleep(rng.uniform(0, 0.15))
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
