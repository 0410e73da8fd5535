"""Smoke test of the benchmark harness in its smallest mode: SQLite, eventbank and the raw
floors (no peer library, no servers). It checks the report's shape, never a timing."""

from __future__ import annotations

import json

from bench.__main__ import main
from bench.workload import SCENARIOS


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
    for row in rows:
        assert row["engine"] == "sqlite"
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
