"""The audit finds every kind of tampering, on every engine, and says where."""

from __future__ import annotations

import json
import random
import sys

import pytest

from eventbank.application.auditor import AUDIT_STREAM, Auditor
from eventbank.application.service import current_actor
from eventbank.cli import main
from eventbank.ports.event_store import chained, recorded
from eventbank.wiring import open_ledger
from tests.tamper import Tamperer
from tests.test_projections import run_workload


@pytest.fixture
def ledger(store_url, tmp_path):
    opened = open_ledger(store_url, f"sqlite:///{tmp_path / 'audit.read.db'}")
    opened.service.open_account("a", owner="Ann", account_type="CHECKING", initial_deposit="100")
    opened.service.open_account("b", owner="Bob", account_type="SAVINGS")
    opened.service.deposit("a", "10")  # a: v1 open, v2 deposit 100, v3 deposit 10
    opened.service.transfer("a", "b", "30")  # a: v4 out; b: v2 in
    opened.service.withdraw("a", "5")  # a: v5
    yield opened
    opened.close()


@pytest.fixture
def tamper(store_url, ledger):
    return Tamperer(store_url, ledger.events)


def audit(ledger) -> set[tuple[str, str | None, int | None]]:
    report = Auditor(ledger.events, ledger.reads).run()
    return {(f.kind, f.stream, f.version) for f in report.findings}


def test_an_untampered_store_is_clean_and_the_run_is_recorded(ledger):
    run_workload(ledger.service, random.Random(3), ops=40)
    auditor = Auditor(ledger.events, ledger.reads)
    report = auditor.run()
    assert report.clean, report.findings
    assert report.books["USD"].balances_minor == (
        report.books["USD"].deposits_minor - report.books["USD"].withdrawals_minor
    )
    token = current_actor.set("auditor-7")
    try:
        auditor.record(report)
        auditor.record(report)
    finally:
        current_actor.reset(token)
    recorded = ledger.events.read_stream(AUDIT_STREAM)
    assert [e.event_type for e in recorded] == ["AuditCompleted"] * 2
    assert recorded[0].metadata["actor"] == "auditor-7"
    assert recorded[0].data["clean"] is True and recorded[0].data["digest"] == report.digest
    assert auditor.run().clean  # the audit stream's own chain verifies too


def test_a_changed_amount_breaks_the_chain_at_that_event(ledger, tamper):
    deposit = ledger.events.read_stream("a")[1]
    tamper.rewrite(deposit, data={**deposit.data, "amount_minor": 1_000_000})
    assert ("chain_break", "a", 2) in audit(ledger)


def test_a_deleted_event_is_a_version_gap(ledger, tamper):
    tamper.delete("a", 3)
    findings = audit(ledger)
    assert ("version_gap", "a", 3) in findings
    assert ("chain_break", "a", 4) in findings


def test_swapped_events_break_the_chain(ledger, tamper):
    second, third = ledger.events.read_stream("a")[1:3]
    tamper.delete("a", 2)
    tamper.delete("a", 3)
    tamper.write(third.__class__(**{**vars_of(third), "version": 2}))
    tamper.write(second.__class__(**{**vars_of(second), "version": 3}))
    findings = audit(ledger)
    assert ("chain_break", "a", 2) in findings and ("chain_break", "a", 3) in findings


def test_a_forged_event_is_caught(ledger, tamper):
    last = ledger.events.read_stream("b")[-1]
    forged = {**vars_of(last), "event_id": "forged-1", "version": last.version + 1,
              "event_type": "FundsDeposited", "hash": "f" * 64,
              "data": {"account_id": "b", "amount_minor": 99_900, "currency": "USD",
                       "channel": "api"}}  # fmt: skip
    tamper.write(last.__class__(**forged))
    assert ("chain_break", "b", last.version + 1) in audit(ledger)


def test_a_transfer_missing_its_credit_is_a_conservation_break(ledger, tamper):
    tamper.delete("b", 2)  # the credit half, at the head of b's stream: no version gap
    kinds = {kind for kind, _, _ in audit(ledger)}
    assert {"conservation_break", "transfer_unbalanced"} <= kinds


def test_a_rewritten_whole_chain_passes_the_chain_check_but_not_a_published_digest(ledger, tamper):
    auditor = Auditor(ledger.events)
    published = auditor.run().heads
    original = ledger.events.read_stream("a")
    forged = [e.__class__(**{**vars_of(e), "data": {**e.data, "amount_minor": 1}})
              if "amount_minor" in e.data else e for e in original]  # fmt: skip
    rechained = chained(forged, {})  # an attacker recomputes every hash
    for event in original:
        tamper.delete("a", event.version)
    for event in rechained:
        tamper.write(recorded(event, None))
    report = auditor.run()
    assert not any(f.kind in ("chain_break", "version_gap") for f in report.findings)
    mismatches = auditor.verify_digest(published)
    assert [(f.kind, f.stream) for f in mismatches] == [("digest_mismatch", "a")]


def test_a_tampered_read_model_is_reported(ledger, tmp_path):
    import sqlite3

    with sqlite3.connect(tmp_path / "audit.read.db") as conn:
        conn.execute("UPDATE account_balances SET balance_minor = 1 WHERE account_id = 'b'")
    assert ("read_model_mismatch", "b", 2) in audit(ledger)


def test_the_cli_exits_5_with_findings_and_0_when_clean(tmp_path, capsys, monkeypatch):
    store = f"sqlite:///{tmp_path / 'cli.db'}"

    def run(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["eventbank", "--store", store, *args])
        try:
            main()
        except SystemExit as exit_:
            return exit_.code or 0
        return 0

    run("open", "a", "--owner", "A", "--type", "CHECKING", "--initial-deposit", "5")
    capsys.readouterr()
    assert run("audit", "--json") == 0
    assert json.loads(capsys.readouterr().out)["clean"] is True
    assert run("audit", "--digest") == 0
    digest_file = tmp_path / "digest.json"
    digest_file.write_text(capsys.readouterr().out)
    assert run("audit", "--verify-digest", str(digest_file)) == 0
    Tamperer(store, None).delete("a", 2)  # the head event: no gap, and the chain still holds
    capsys.readouterr()
    assert run("audit", "--json", "--verify-digest", str(digest_file)) == 5
    kinds = {f["kind"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert kinds == {"digest_mismatch", "read_model_mismatch"}


def vars_of(event) -> dict:
    return {f: getattr(event, f) for f in event.__slots__}
