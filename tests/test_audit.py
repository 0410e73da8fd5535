"""The audit finds every kind of tampering, on every engine, and says where."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter

import pytest

from eventbank.application.auditor import AUDIT_STREAM, Auditor, AuditReport
from eventbank.application.queries import AccountQueries
from eventbank.application.write_path import current_actor
from eventbank.cli import main
from eventbank.domain.errors import Conflict
from eventbank.ports.event_store import ConcurrencyConflict, chained, recorded
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


class CountingReads:
    """Wraps a real store and counts the events its read_stream calls return, per stream."""

    def __init__(self, store):
        self._store, self.read = store, Counter()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_stream(self, aggregate_id, after_version=0, **bounds):
        found = self._store.read_stream(aggregate_id, after_version, **bounds)
        self.read[aggregate_id] += len(found)
        return found


def test_recording_an_audit_and_reading_the_latest_read_one_event_however_long_the_trail(ledger):
    counting = CountingReads(ledger.events)
    auditor, queries = Auditor(counting), AccountQueries(ledger.reads, counting)
    read_per_run = []
    for earlier_runs in (1, 20):
        for _ in range(earlier_runs):
            auditor.record(AuditReport())  # the trail grows
        counting.read.clear()
        auditor.record(AuditReport())
        latest = queries.latest_audit()
        read_per_run.append(counting.read[AUDIT_STREAM])
    assert latest["version"] == 1 + 1 + 20 + 1
    assert read_per_run == [2, 2]  # the head before appending, the head for latest_audit


def test_a_page_of_account_events_reads_only_that_page(ledger):
    counting = CountingReads(ledger.events)
    page = AccountQueries(ledger.reads, counting).account_events("a", after_version=1, limit=2)
    assert [e.version for e in page] == [2, 3]
    assert counting.read["a"] == 2  # not every event after version 1


class AlwaysConflicting:
    """Wraps a real store whose every append loses a race."""

    def __init__(self, store):
        self._store, self.appends = store, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def append(self, events, expected_versions, command=None):
        self.appends += 1
        raise ConcurrencyConflict(list(expected_versions))


def test_an_audit_that_loses_every_race_for_the_trail_says_so_instead_of_vanishing(ledger):
    losing = AlwaysConflicting(ledger.events)
    with pytest.raises(ConcurrencyConflict, match="not recorded") as caught:
        Auditor(losing).record(AuditReport())
    assert isinstance(caught.value, Conflict) and caught.value.code == "audit_not_recorded"
    assert caught.value.aggregate_ids == (AUDIT_STREAM,)
    assert losing.appends == 10  # bounded retries, then the error
    assert ledger.events.read_stream(AUDIT_STREAM) == []


class TrimmedFeed:
    """Wraps a real store whose feed no longer holds the events up to ``kept_after`` (as
    DynamoDB Streams after 24 hours): ``read_all`` starts at the oldest record still held."""

    def __init__(self, store, kept_after: int):
        self._store, self.kept_after = store, kept_after

    def __getattr__(self, name):
        return getattr(self._store, name)

    def read_all(self, after_position=0, limit=1000):
        return self._store.read_all(max(after_position, self.kept_after), limit)


def test_the_audit_covers_streams_whose_events_have_left_the_feed(ledger):
    trimmed = TrimmedFeed(ledger.events, ledger.events.read_all(0, 10_000)[-1].position)
    ledger.service.open_account("c", owner="Cy", account_type="CHECKING", initial_deposit="7")
    assert {e.aggregate_id for e in trimmed.read_all()} == {"c"}  # a and b left the feed
    report = Auditor(trimmed, ledger.reads).run()
    assert report.clean, report.findings  # no read-model row "for a stream with no events"
    assert (report.streams, report.events, set(report.heads)) == (3, 5 + 2 + 2, {"a", "b", "c"})
    assert report.books["USD"].balances_minor == 10_000 + 1_000 - 500 + 700


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

    assert run("init") == 0  # only init (and serve) create a store
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
