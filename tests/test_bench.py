"""Smoke test of the benchmark harness in its smallest mode: SQLite, eventbank and the raw
floors (no peer library; PostgreSQL only where a test names it), and the HTTP scenario
(eventbank serve and the FastAPI floor, driven by wrk). It checks the report's shape and what
was written, never a timing."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading

import psycopg
import pytest
from bench.__main__ import main
from bench.batch_in_process import IN_PROCESS, NOT_PROJECTED, measure_in_process_batch
from bench.ceiling import WITH_READ_MODEL, Ceiling, measure_ceiling
from bench.command_floor import CommandFloor, measure_command_floor
from bench.http_load import (
    EVENTBANK,
    FLOOR,
    HTTP,
    HTTP_BATCH,
    LEDGER_PROCESS,
    NOT_INLINE,
    WORKERS_2,
    HttpMeasurement,
    HttpScenario,
    measure_http,
)
from bench.report import (
    Report,
    bars_table,
    batch_bars,
    in_process_bars,
    served_bars,
    workers_bars,
)
from bench.run import RAW_SQL
from bench.targets.free_store import FreeStore
from bench.targets.raw_sql import RawSqlite
from bench.workload import (
    ACCOUNTS,
    CONCURRENT,
    HOT,
    SCENARIOS,
    Measurement,
    client_cpu,
    measure,
    plan,
)

from eventbank.application.service import LedgerService
from eventbank.engines.urls import default_read_store_url, sqlite_path
from eventbank.ports.event_store import (
    CommandRecord,
    ConcurrencyConflict,
    DuplicateCommand,
    NewEvent,
)
from eventbank.wiring import open_ledger


def test_smallest_run_writes_a_full_report(tmp_path, capsys):
    main(
        [
            "--quick",
            "--engines",
            "sqlite",
            "--systems",
            "eventbank,raw",
            "--transfers",
            "40",
            "--load-events",
            "300",
            "--payroll-lines",
            "30",
            "--webhook-transfers",
            "150",
            "--out",
            str(tmp_path),
        ]
    )

    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "quick.json").read_text())
    assert (tmp_path / "quick.png").stat().st_size > 0
    rows = report["measurements"]
    expected = {
        (system, variant, scenario.name)
        for system, variant in [
            ("eventbank", "LedgerService"),
            ("raw", "1 tx per transfer"),
            ("raw", "batched, 128/tx"),
        ]
        for scenario in SCENARIOS
    }
    assert {(r["system"], r["variant"], r["scenario"]) for r in rows} == expected
    assert report["meta"]["cpu"] == client_cpu()
    for row in rows:
        assert row["engine"] == "sqlite" and row["cpu"] == client_cpu()
        assert row["ok"] == 40 and row["failed"] == {}
        assert row["transfers_per_s"] > 0 and row["events_per_s"] > 0 and row["p99_ms"] > 0
        assert row["cpu_us"] > 0
        assert row["ratios"]["raw 1 tx"] > 0 and row["ratios"]["eventsourcing"] is None
        assert f"{row['transfers_per_s']:,.0f}" in printed
    assert [load["events"] for load in report["reconstitution"]] == [100, 300]
    assert all(load["snapshot_ms"] > 0 for load in report["reconstitution"])
    (rebuild,) = report["projection_rebuild"]
    assert rebuild["events"] == 2 * (1_000 + 40) and rebuild["events_per_s"] > 0
    alone = {(c["scenario"], c["per_transaction"]) for c in report["engine_alone"]}
    assert alone == {(CONCURRENT.name, 16), (CONCURRENT.name + WITH_READ_MODEL, 16), (HOT.name, 4)}
    assert all(c["transfers"] == 40 and c["transfers_per_s"] > 0 for c in report["engine_alone"])
    (floor,) = report["command_floor"]
    assert (floor["engine"], floor["scenario"], floor["transfers"]) == (
        "sqlite",
        CONCURRENT.name,
        40,
    )
    assert floor["cpu_us_per_transfer"] > 0
    (payroll,) = report["payroll"]
    assert (payroll["engine"], payroll["lines"], payroll["status"]) == ("sqlite", 30, "completed")
    assert payroll["seconds"] >= payroll["start_seconds"] > 0 and payroll["lines_per_s"] > 0
    assert report["meta"]["payroll_lines"] == 30
    (row,) = [line for line in printed.splitlines() if line.startswith("validated, recorded")]
    assert "sqlite" in row and f"{payroll['seconds']:.1f}" in row
    assert row.endswith(f"{payroll['lines_per_s']:,.0f}")
    (hooks,) = report["webhooks"]
    # every event after the subscription was made: 20 openings with their deposits, 2 per transfer
    assert (hooks["engine"], hooks["events"], hooks["requests"]) == ("sqlite", 340, 4)
    assert hooks["events_per_s"] > 0 and hooks["floor_events_per_s"] > 0
    assert hooks["ratio_to_floor"] == hooks["events_per_s"] / hooks["floor_events_per_s"]
    assert report["meta"]["webhook_transfers"] == 150
    (row,) = [line for line in printed.splitlines() if line.startswith("read, signed, POSTed")]
    assert f"{hooks['events_per_s']:,.0f}" in row and f"{hooks['floor_events_per_s']:,.0f}" in row
    by_name = {bar["name"]: bar for bar in report["bars"]}
    assert "(engine alone, 16/tx: " in by_name["SQLite, 16 clients, durable"]["measured"]
    assert {bar["name"] for bar in report["bars"] if bar["passed"] is not None} == {
        "SQLite, 16 clients, durable",
        "hot accounts, 4 clients, 10 accounts (sqlite)",
        "SQLite, 16 clients, p99 latency",
        "in process, 16 clients, over the engine alone (sqlite)",
    }


class AffinityProbe:
    """A target that records the CPUs each calling thread may run on."""

    system, engine, variant, batch_size, events_per_transfer = "probe", "none", "-", 1, 2

    def __init__(self) -> None:
        self.seen: set[frozenset[int]] = set()
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def open_accounts(self, account_ids, initial_minor) -> None:
        pass

    def transfer_batch(self, transfers) -> int:
        with self._lock:
            self.seen.add(frozenset(os.sched_getaffinity(0)))
            self.threads.add(threading.get_ident())
        return 0

    def close(self) -> None:
        pass


def test_without_cpu_affinity_the_benchmark_leaves_threads_where_the_system_puts_them(
    monkeypatch,
):
    monkeypatch.delattr(os, "sched_getaffinity")
    assert client_cpu() is None


def test_a_scenario_runs_all_its_client_threads_on_the_cpu_given_and_then_lets_go():
    before = os.sched_getaffinity(0)
    cpu = max(before)
    probe = AffinityProbe()
    measured = measure(probe, HOT, 40, 1, cpu)
    assert len(probe.threads) == HOT.clients
    assert probe.seen == {frozenset({cpu})}
    assert measured.cpu == cpu and measured.ok == 40
    assert os.sched_getaffinity(0) == before  # the caller's own affinity is restored

    unpinned = AffinityProbe()
    assert measure(unpinned, HOT, 40, 1).cpu is None
    assert unpinned.seen == {frozenset(before)}


class CountingRawSqlite(RawSqlite):
    """The SQLite floor, noting how many transfers each transaction held."""

    def __init__(self, url: str, batch_size: int):
        super().__init__(url, batch_size)
        self.sizes: list[int] = []

    def write(self, events, commands) -> None:
        self.sizes.append(len(commands))
        super().write(events, commands)


def test_engine_alone_writes_every_planned_transfer_as_many_per_transaction_as_clients(tmp_path):
    path = tmp_path / "alone.db"
    raw = CountingRawSqlite(f"sqlite:///{path}", CONCURRENT.clients)
    try:
        ceiling = measure_ceiling(raw, CONCURRENT, 40, seed=1)
    finally:
        raw.close()

    assert raw.sizes[0] == ACCOUNTS  # the accounts, opened in one transaction before timing
    assert raw.sizes[1:] == [16, 16, 8]
    assert (ceiling.per_transaction, ceiling.transfers) == (16, 40)
    assert ceiling.transfers_per_s > 0 and ceiling.ms_per_transaction > 0
    with sqlite3.connect(path) as conn:
        written = conn.execute(
            "SELECT aggregate_id, json_extract(data, '$.to_account_id'),"
            " json_extract(data, '$.amount_minor') FROM events"
            " WHERE event_type = 'TransferredOut' ORDER BY position"
        ).fetchall()
        (commands,) = conn.execute("SELECT count(*) FROM commands").fetchone()
    planned = sorted(
        (t.source, t.target, t.amount_minor) for c in plan(CONCURRENT, 40, 1) for t in c
    )
    assert sorted(written) == planned and commands == ACCOUNTS + 40


TINY = HttpScenario("tiny: 16 connections, 10 accounts", accounts=10, opened=10)


def test_the_http_scenario_serves_eventbank_and_the_floor_and_reports_every_field(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr("bench.run.HTTP_SCENARIOS", (TINY,))
    monkeypatch.setattr("bench.run.BATCH_ENGINES", ())
    main(["--quick", "--engines", "sqlite", "--systems", "http", "--http-seconds", "2",
          "--out", str(tmp_path)])  # fmt: skip

    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "quick.json").read_text())
    assert (tmp_path / "quick.png").stat().st_size > 0
    assert report["measurements"] == [] and report["meta"]["http"]["seconds"] == 2
    assert report["meta"]["http"]["load"].startswith("wrk -t2 -c16 -d2s --latency")
    floor, served = report["http"]
    assert (floor["system"], served["system"]) == (FLOOR, EVENTBANK)
    for row in (floor, served):
        assert (row["engine"], row["scenario"], row["connections"]) == ("sqlite", TINY.name, 16)
        assert row["ok"] > 0 and row["requests"] == row["ok"] + row["refused"]
        assert row["transfers_per_s"] > 0 and 1.5 < row["seconds"] < 4
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["server_cpu_us"] > 0 and row["server_cpu_s"] > 0
        # the event loop's share: some of the server's CPU, not all (other threads work too)
        assert 0 < row["loop_cpu_us"] < row["server_cpu_us"]
        assert row["wrk"].startswith("wrk -t2 -c16 -d2s --latency")
        assert f"{row['transfers_per_s']:,.0f}" in printed
    assert floor["non_2xx"] == {} and floor["refused"] == 0 and floor["socket_errors"] == {}
    assert floor["ratio_to_floor"] == 1.0 and floor["lag_events"] is None
    assert served["ratio_to_floor"] == served["transfers_per_s"] / floor["transfers_per_s"]
    assert served["non_2xx"] == {}  # enough money everywhere: nothing refused
    assert served["lag_events"] >= 0 and served["lag_zero_s"] is not None
    assert served["lag_ok"] == (served["lag_zero_s"] <= 2)
    (bar,) = [b for b in report["bars"] if b["name"].startswith("HTTP: projection lag")]
    assert bar["passed"] == served["lag_ok"] and f"{served['lag_zero_s']:.2f} s" in bar["measured"]
    (row,) = [line for line in printed.splitlines() if line.startswith(EVENTBANK)]
    assert f"{served['ratio_to_floor']:.2f}x" in row and "events, 0 after" in row


def test_the_http_scenario_counts_every_refused_transfer(tmp_path):
    # No account opened: every transfer is refused (404), and counted as such.
    refused = HttpScenario("refused", accounts=10, opened=0)
    m = measure_http(EVENTBANK, "sqlite", refused, 1, 1, f"sqlite:///{tmp_path / 'events.db'}")
    assert m.requests > 0 and m.ok == 0 and m.transfers_per_s == 0
    assert m.non_2xx == {"404": m.requests} and m.refused == m.requests
    assert m.server_cpu_us == 0 and m.server_cpu_s > 0


def test_the_batch_scenario_counts_the_transfers_each_batch_did(tmp_path):
    batches = HttpScenario("batches", accounts=10, opened=10, batch=25, connections=2)
    served = measure_http(EVENTBANK, "sqlite", batches, 1, 1, f"sqlite:///{tmp_path / 'a.db'}")
    floor = measure_http(FLOOR, "sqlite", batches, 1, 1)
    for m in (served, floor):
        assert m.connections == 2 and m.requests > 0 and m.refused == 0
        assert m.ok == 25 * m.requests  # every item of every batch succeeded, and is counted
        assert "-c2 " in m.wrk and m.server_cpu_us > 0
    assert served.lag_ok is not None
    # Served, the figures are per transfer the store recorded while wrk ran: every answered
    # one, and at most the two batches in flight when it stopped besides.
    assert served.recorded is not None and served.ok <= served.recorded <= served.ok + 2 * 25
    assert served.transfers_per_s == pytest.approx(served.recorded / served.seconds, rel=1e-3)
    assert served.server_cpu_us == pytest.approx(
        served.server_cpu_s / served.recorded * 1e6, rel=1e-3
    )
    assert floor.recorded is None and floor.done == floor.ok

    alone = measure_in_process_batch("sqlite", batches, 1, 1, f"sqlite:///{tmp_path / 'b.db'}")
    assert alone.system == IN_PROCESS and alone.requests > 0
    assert alone.ok == 25 * alone.requests and alone.transfers_per_s > 0
    assert 0 < alone.p50_ms <= alone.p99_ms <= alone.max_ms and alone.lag_ok is None


def test_the_batch_scenario_without_projection_writes_the_commands_and_projects_nothing(tmp_path):
    batches = HttpScenario("batches", accounts=10, opened=10, batch=25, connections=2)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    bare = measure_in_process_batch("sqlite", batches, 1, 1, url, projected=False)
    assert bare.system == NOT_PROJECTED and bare.requests > 0
    assert bare.ok == 25 * bare.requests and bare.transfers_per_s > 0
    ledger = open_ledger(url, inline=False)
    try:  # every transfer is in the event store, and nothing was read back into the read model
        events, page = [], ledger.events.read_all(0, 10_000)
        while page:
            events += page
            page = ledger.events.read_all(page[-1].position, 10_000)
        assert sum(e.event_type == "TransferredOut" for e in events) == bare.ok
        assert ledger.reads.checkpoint("accounts") == 0 and ledger.reads.all_balances() == []
    finally:
        ledger.close()


def test_the_batch_bar_shows_the_service_in_process_beside_the_served_batches():
    def row(system: str, per_s: float) -> HttpMeasurement:
        return _row(system, per_s, "sqlite", HTTP_BATCH.name)

    for served, passed in ((2_200.0, False), (8_000.0, True)):
        (bar,) = batch_bars(Report({}, [], http=[row(EVENTBANK, served), row(IN_PROCESS, 2_500)]))
        assert bar.passed is passed
        assert bar.measured == f"{served:,.0f}/s (in process, no HTTP: 2,500/s)"
    rows = [row(EVENTBANK, 2_200), row(IN_PROCESS, 2_500), row(NOT_PROJECTED, 4_100)]
    (bar,) = batch_bars(Report({}, [], http=rows))
    assert bar.measured == "2,200/s (in process, no HTTP: 2,500/s; not projected either: 4,100/s)"
    (bar,) = batch_bars(Report({}, [], http=[*rows, row(LEDGER_PROCESS, 2_600)]))
    assert bar.passed is False and bar.measured.startswith(  # the bar is plain serve's
        "2,200/s (serve --ledger-process: 2,600/s; in process"
    )
    assert batch_bars(Report({}, [], http=[row(IN_PROCESS, 2_500)])) == []


def test_the_verdicts_stand_in_one_column_however_long_what_was_measured():
    rows = [
        _row(system, per_s, "sqlite", HTTP_BATCH.name)
        for system, per_s in ((EVENTBANK, 2_200), (IN_PROCESS, 2_500), (NOT_PROJECTED, 4_100))
    ]
    (long,) = batch_bars(Report({}, [], http=rows))
    short = dataclasses.replace(long, measured="9,000/s", passed=True)
    assert len(long.measured) > 50
    head, *lines = bars_table([short, long])
    assert [line[-4:] for line in lines] == ["PASS", "MISS"]
    assert len({len(line) for line in lines}) == 1 and lines[1][-5] == " "


def test_two_worker_processes_are_measured_with_the_cpu_of_both(postgres_store_url):
    scenario = HttpScenario("workers", accounts=20, opened=20)
    m = measure_http(WORKERS_2, "postgresql", scenario, 1, 1, postgres_store_url)
    assert m.ok > 0 and m.refused == 0 and m.lag_ok is not None
    # The supervisor answers nothing itself: without its workers' CPU this would be near 0.
    assert m.server_cpu_us > 100
    assert m.loop_cpu_us is None  # its main thread runs no event loop: no split is reported


def test_a_server_with_a_ledger_process_is_measured_with_the_cpu_of_both(tmp_path):
    scenario = HttpScenario("ledger process", accounts=20, opened=20)
    url = f"sqlite:///{tmp_path / 'events.db'}"
    m = measure_http(LEDGER_PROCESS, "sqlite", scenario, 1, 1, url)
    assert m.ok > 0 and m.refused == 0 and m.lag_ok is True
    # the transfers are decided and written in the child: its CPU is counted beside the loop's
    assert m.loop_cpu_us is not None and m.server_cpu_us > 1.5 * m.loop_cpu_us


def test_the_workers_bar_compares_two_processes_with_one_of_the_same_run():
    def row(system: str, per_s: float) -> HttpMeasurement:
        return _row(system, per_s, "postgresql", "s")

    for one, two, passed in ((300.0, 320.0, True), (300.0, 280.0, False)):
        (bar,) = workers_bars(Report({}, [], http=[row(EVENTBANK, one), row(WORKERS_2, two)]))
        assert (bar.passed, bar.measured) == (passed, f"{two:,.0f} against {one:,.0f}/s")
    (alone,) = workers_bars(Report({}, [], http=[row(WORKERS_2, 320.0)]))
    assert (alone.passed, alone.measured) == (None, "not run")


def test_the_served_bars_read_serve_against_the_floor_its_p99_and_no_inline_projection():
    def row(system: str, per_s: float, engine: str = "sqlite", p99: float = 1.0):
        return dataclasses.replace(_row(system, per_s, engine, HTTP.name), p99_ms=p99)

    run = [row(FLOOR, 3_000, p99=36.0), row(EVENTBANK, 1_000, p99=58.0), row(NOT_INLINE, 1_100),
           row(FLOOR, 3_000, "postgresql"), row(EVENTBANK, 1_250, "postgresql")]  # fmt: skip
    floor, p99, inline, pg_floor = served_bars(Report({}, [], http=run))
    assert (floor.passed, floor.measured) == (False, "0.33x (1,000 against 3,000/s), 0 non-2xx")
    split = [
        dataclasses.replace(row(FLOOR, 3_000), server_cpu_us=250.0, loop_cpu_us=200.0),
        dataclasses.replace(row(EVENTBANK, 1_000), server_cpu_us=950.0, loop_cpu_us=430.0),
    ]
    assert served_bars(Report({}, [], http=split))[0].measured == (
        "0.33x (1,000 against 3,000/s), 0 non-2xx; server CPU per transfer 950 us, event loop "
        "430 us (the floor's: 250 us, event loop 200 us)"
    )
    assert (p99.passed, p99.measured) == (False, "58.0 ms (the floor's own: 36.0 ms)")
    assert (inline.passed, inline.measured) == (True, "1,000 against 1,100/s (9%)")
    assert pg_floor.goal.startswith(">= 0.40x") and pg_floor.passed is True  # 1,250 / 3,000
    refused = dataclasses.replace(row(EVENTBANK, 1_600), non_2xx={"503": 3})
    (fast, fast_p99) = served_bars(Report({}, [], http=[row(FLOOR, 3_000), refused]))
    assert fast.passed is False and fast.measured.endswith(", 3 non-2xx")  # 0.53x, not all 2xx
    assert fast_p99.passed is True
    beside = served_bars(Report({}, [], http=[*run[:2], row(LEDGER_PROCESS, 1_500)]))[0]
    assert beside.passed is False and beside.measured.endswith(  # the bar is plain serve's
        "0 non-2xx; serve --ledger-process: 0.50x (1,500/s, 0 non-2xx)"
    )
    slow_without = served_bars(Report({}, [], http=[row(EVENTBANK, 800), row(NOT_INLINE, 1_000)]))
    assert [(b.passed, b.measured) for b in slow_without] == [(False, "800 against 1,000/s (20%)")]


def test_the_in_process_bar_reads_eventbank_against_the_engine_alone_of_the_same_run():
    def ours(engine: str, per_s: float) -> Measurement:
        return Measurement("eventbank", engine, "LedgerService", CONCURRENT.name, 16, 1000,
                           500, 500, {}, "", 0, 0.0, 1.0, per_s, 2 * per_s, 1.0, 2.0, 200.0,
                           0.5)  # fmt: skip

    def alone(engine: str, per_s: float, scenario: str = CONCURRENT.name) -> Ceiling:
        return Ceiling(engine, scenario, 16, 500, per_s, 1.0, 40.0)

    rows_alone = alone("sqlite", 8_000, CONCURRENT.name + WITH_READ_MODEL)
    ceilings = [alone("sqlite", 20_000), alone("postgresql", 13_000), rows_alone]
    report = Report({}, [ours("sqlite", 5_000), ours("postgresql", 7_000)], ceilings=ceilings)
    sqlite, postgres = in_process_bars(report)
    assert (sqlite.passed, sqlite.measured) == (
        False,
        "0.25x (5,000 against 20,000/s); engine alone + read model rows: 0.40x",
    )
    assert (postgres.passed, postgres.measured) == (True, "0.54x (7,000 against 13,000/s)")
    assert in_process_bars(Report({}, [], ceilings=[alone("sqlite", 20_000)])) == []
    # with the command path's own CPU (160 us) beside the engine's (40 us): 5,000/s at most
    report.command_floors = [CommandFloor("sqlite", CONCURRENT.name, 500, 160.0)]
    sqlite, _ = in_process_bars(report)
    assert (sqlite.passed, sqlite.measured.split("; ")[-1]) == (
        False,
        "at most 0.25x on one CPU (the command path alone 160 us + the engine's 40 us per "
        "transfer)",
    )


def test_the_command_floor_makes_every_planned_transfer_through_the_service():
    floor = measure_command_floor("sqlite", CONCURRENT, 300, seed=3)
    assert (floor.engine, floor.scenario, floor.transfers) == ("sqlite", CONCURRENT.name, 300)
    assert floor.cpu_us_per_transfer > 0
    assert floor.ceiling_per_s(50.0) == pytest.approx(1e6 / (floor.cpu_us_per_transfer + 50.0))


def test_the_free_store_keeps_the_checks_the_command_path_relies_on():
    """A store that skipped them would let the floor skip work every real engine makes it do."""
    service = LedgerService(FreeStore())
    service.open_account("a", owner="A", account_type="CHECKING", initial_deposit="10.00")
    service.open_account("b", owner="B", account_type="CHECKING")
    service.transfer("a", "b", "2.50", command_id="k1")
    again = service.transfer("a", "b", "2.50", command_id="k1")
    assert again.replayed and service.get_account("b").balance_minor == 250
    store = service.store
    (head,) = store.read_stream("a", limit=1, backwards=True)
    moved = NewEvent("e-x", "a", "Account", head.version, "FundsDeposited", 1, {}, {})
    with pytest.raises(ConcurrencyConflict):
        store.append([moved], {"a": head.version - 1})
    with pytest.raises(DuplicateCommand):
        store.append([], {}, CommandRecord("k1", "f", {}))


def _row(system: str, per_s: float, engine: str, scenario: str) -> HttpMeasurement:
    """An HTTP row of ``per_s`` transfers in a second, for the bars to judge."""
    done = int(per_s)
    return HttpMeasurement(system, engine, scenario, 16, 10, 0.0, 1.0, done, done, {}, {}, per_s,
                           1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0.1, 0.5)  # fmt: skip


def read_model_counts(read_url: str) -> tuple[int, int, int, int]:
    """Movements, transfer rows, index entries and the checkpoint in a read store."""
    queries = [
        "SELECT count(*) FROM account_transactions",
        "SELECT count(*) FROM transfers",
        "SELECT count(*) FROM transfers_by_account",
        "SELECT position FROM projection_checkpoints WHERE projection = 'accounts'",
    ]
    if read_url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(read_url)) as conn:
            return tuple(conn.execute(q).fetchone()[0] for q in queries)  # type: ignore[return-value]
    with psycopg.connect(read_url) as conn:
        return tuple(conn.execute(q).fetchone()[0] for q in queries)  # type: ignore[return-value]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_engine_alone_with_the_read_model_writes_each_transfers_read_rows(
    engine, tmp_path, postgres_store_url
):
    url = f"sqlite:///{tmp_path / 'alone.db'}" if engine == "sqlite" else postgres_store_url
    raw = RAW_SQL[engine](url, CONCURRENT.clients)
    try:
        ceiling = measure_ceiling(raw, CONCURRENT, 40, seed=1, read_model=True)
    finally:
        raw.close()
    assert (ceiling.scenario, ceiling.transfers) == (CONCURRENT.name + WITH_READ_MODEL, 40)
    assert ceiling.transfers_per_s > 0
    # two movements, a transfer row and two index entries per transfer; the checkpoint past
    # the accounts' openings (two events each) and the transfers' events
    counts = read_model_counts(default_read_store_url(url))
    assert counts == (80, 40, 80, 2 * ACCOUNTS + 80)
