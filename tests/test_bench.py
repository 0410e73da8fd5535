"""Smoke test of the benchmark harness in its smallest mode: SQLite, eventbank and the raw
floors (no peer library, no servers). It checks the report's shape, never a timing."""

from __future__ import annotations

import json
import os
import threading

from bench.__main__ import main
from bench.workload import HOT, SCENARIOS, client_cpu, measure


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
        assert row["ratios"]["raw 1 tx"] > 0 and row["ratios"]["eventsourcing"] is None
        assert f"{row['transfers_per_s']:,.0f}" in printed
    assert [load["events"] for load in report["reconstitution"]] == [100, 300]
    assert all(load["snapshot_ms"] > 0 for load in report["reconstitution"])
    (rebuild,) = report["projection_rebuild"]
    assert rebuild["events"] == 2 * (1_000 + 40) and rebuild["events_per_s"] > 0
    assert {bar["name"] for bar in report["bars"] if bar["passed"] is not None} == {
        "SQLite, 16 clients, durable",
        "hot accounts, 4 clients, 10 accounts (sqlite)",
        "SQLite, 16 clients, p99 latency",
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
