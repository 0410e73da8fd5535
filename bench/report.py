"""The report: one table, the bars with PASS/MISS, and the same as JSON and a PNG chart.

Every row carries its ratio to the eventsourcing row and to the raw floors of the same engine
and scenario (transfers/s over theirs), so a figure is always read against a reference; an HTTP
row (bench/http_load.py), its ratio to the bare FastAPI floor of the same engine and scenario.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.batch_in_process import IN_PROCESS, NOT_PROJECTED
from bench.ceiling import WITH_READ_MODEL, Ceiling
from bench.command_floor import CommandFloor
from bench.http_load import EVENTBANK as SERVE
from bench.http_load import (
    FLOOR,
    HTTP,
    HTTP_BATCH,
    LAG_GOAL_S,
    LAG_WAIT_S,
    LEDGER_PROCESS,
    NOT_INLINE,
    SERVED,
    WORKERS_2,
    HttpMeasurement,
    lag_text,
)
from bench.payroll import PayrollTiming
from bench.reconstitution import LoadTimes, Rebuild
from bench.webhooks import WebhookTiming
from bench.workload import CONCURRENT, HOT, SCENARIOS, SINGLE, Measurement

RAW_TX, RAW_BATCHED = "raw 1 tx", "raw batched"


@dataclass
class Report:
    meta: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    loads: list[LoadTimes] = field(default_factory=list)
    rebuilds: list[Rebuild] = field(default_factory=list)
    ceilings: list[Ceiling] = field(default_factory=list)
    payrolls: list[PayrollTiming] = field(default_factory=list)
    webhooks: list[WebhookTiming] = field(default_factory=list)
    http: list[HttpMeasurement] = field(default_factory=list)
    command_floors: list[CommandFloor] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Bar:
    name: str
    goal: str
    measured: str
    passed: bool | None  # None: not measured in this run


def reference(m: Measurement) -> str:
    """Which column a row is the reference for."""
    if m.system == "raw":
        return RAW_TX if m.variant in ("1 tx per transfer", "TransactWriteItems") else RAW_BATCHED
    return m.system


def ratios(report: Report, m: Measurement) -> dict[str, float | None]:
    """``m``'s transfers/s over the eventsourcing row's and each raw floor's, same engine and
    scenario (None where that reference was not run)."""
    found = {
        reference(other): other.transfers_per_s
        for other in report.measurements
        if other.engine == m.engine and other.scenario == m.scenario
    }
    return {
        name: (m.transfers_per_s / found[name] if found.get(name) else None)
        for name in ("eventsourcing", RAW_TX, RAW_BATCHED)
    }


def floor_ratio(report: Report, m: HttpMeasurement) -> float | None:
    """``m``'s transfers/s over the FastAPI floor's, same engine and scenario (None: no floor)."""
    for floor in report.http:
        if (floor.system, floor.engine, floor.scenario) == (FLOOR, m.engine, m.scenario):
            return m.transfers_per_s / floor.transfers_per_s if floor.transfers_per_s else None
    return None


def _find(report: Report, system: str, engine: str, scenario: str) -> Measurement | None:
    return next(
        (
            m
            for m in report.measurements
            if m.system == system and m.engine == engine and m.scenario == scenario
        ),
        None,
    )


def _alone(report: Report, engine: str, scenario: str) -> str:
    """The engine-alone figure of the same engine and scenario, to read a goal against."""
    for c in report.ceilings:
        if c.engine == engine and c.scenario == scenario:
            return f" (engine alone, {c.per_transaction}/tx: {c.transfers_per_s:,.0f}/s)"
    return ""


def bars(report: Report) -> list[Bar]:
    """The issue's bars, each beside its measured figure (and, for throughput on SQL engines,
    what the engine alone did in the same run: bench/ceiling.py)."""

    def at_least(name: str, engine: str, minimum: float) -> Bar:
        m = _find(report, "eventbank", engine, CONCURRENT.name)
        goal = f">= {minimum:,.0f} transfers/s"
        if m is None:
            return Bar(name, goal, "not run", None)
        measured = f"{m.transfers_per_s:,.0f}/s{_alone(report, engine, CONCURRENT.name)}"
        return Bar(name, goal, measured, m.transfers_per_s >= minimum)

    result = [
        at_least("SQLite, 16 clients, durable", "sqlite", 10_000),
        at_least("PostgreSQL, 16 clients, fsync on", "postgresql", 5_000),
    ]
    for engine in ("sqlite", "postgresql", "dynamodb"):
        m = _find(report, "eventbank", engine, HOT.name)
        if m is not None:
            failed = sum(m.failed.values())
            result.append(
                Bar(
                    f"hot accounts, 4 clients, 10 accounts ({engine})",
                    ">= 2,000 ok/s, no command failed",
                    f"{m.transfers_per_s:,.0f}/s, {failed} failed"
                    + _alone(report, engine, HOT.name),
                    m.transfers_per_s >= 2_000 and failed == 0,
                )
            )
    for scenario in (SINGLE, CONCURRENT):
        ours = _find(report, "eventbank", "dynamodb", scenario.name)
        floor = _find(report, "raw", "dynamodb", scenario.name)
        name = f"DynamoDB Local overhead over raw TransactWriteItems ({scenario.name})"
        if ours is None or floor is None:
            result.append(Bar(name, "<= 15 %", "not run", None))
            continue
        overhead = floor.transfers_per_s / ours.transfers_per_s - 1
        result.append(Bar(name, "<= 15 %", f"{overhead:+.0%}", overhead <= 0.15))
    m = _find(report, "eventbank", "sqlite", CONCURRENT.name)
    result.append(
        Bar(
            "SQLite, 16 clients, p99 latency",
            "< 10 ms",
            "not run" if m is None else f"{m.p99_ms:.1f} ms",
            None if m is None else m.p99_ms < 10,
        )
    )
    for engine in dict.fromkeys(h.engine for h in report.http if h.system in SERVED):
        served = [h for h in report.http if h.system in SERVED and h.engine == engine]
        result.append(
            Bar(
                f"HTTP: projection lag back to 0 after the load ({engine})",
                f"<= {LAG_GOAL_S:.0f} s",
                ", ".join(
                    f"{h.lag_zero_s:.2f} s"
                    if h.lag_zero_s is not None
                    else f"not in {LAG_WAIT_S:.0f} s"
                    for h in served
                ),  # fmt: skip
                all(h.lag_ok for h in served),
            )
        )
    result += in_process_bars(report)
    result += served_bars(report)
    result += workers_bars(report)
    result += batch_bars(report)
    return result


IN_PROCESS_GOAL = 0.5  # eventbank in process, 16 clients, over the engine alone
FLOOR_GOALS = {"sqlite": 0.5, "postgresql": 0.4}  # eventbank serve over the FastAPI floor
P99_GOAL_MS = 30.0  # eventbank serve on SQLite, 16 connections
INLINE_GOAL = 0.15  # served with the inline projection and without it, at most this far apart


def in_process_bars(report: Report) -> list[Bar]:
    """eventbank in process at 16 clients over the engine alone (bench/ceiling.py), per SQL
    engine of the run: how much of what the machine allows the whole command path keeps; and,
    with the command path's own CPU measured (bench/command_floor.py), the most it could keep
    on one CPU."""
    bars = []
    for alone in (c for c in report.ceilings if c.scenario == CONCURRENT.name):
        m = _find(report, "eventbank", alone.engine, CONCURRENT.name)
        if m is None:
            continue
        ratio = m.transfers_per_s / alone.transfers_per_s
        measured = f"{ratio:.2f}x ({m.transfers_per_s:,.0f} against {alone.transfers_per_s:,.0f}/s)"
        with_rows = next((c for c in report.ceilings if c.engine == alone.engine
                          and c.scenario == CONCURRENT.name + WITH_READ_MODEL), None)  # fmt: skip
        if with_rows is not None:  # the engine alone writing the read model's rows too
            with_reads = with_rows.transfers_per_s / alone.transfers_per_s
            measured += f"; engine alone + read model rows: {with_reads:.2f}x"
        floor = next((f for f in report.command_floors if f.engine == alone.engine), None)
        if floor is not None:
            most = floor.ceiling_per_s(alone.cpu_us_per_transfer) / alone.transfers_per_s
            measured += (
                f"; at most {most:.2f}x on one CPU (the command path alone "
                f"{floor.cpu_us_per_transfer:,.0f} us + the engine's "
                f"{alone.cpu_us_per_transfer:,.0f} us per transfer)"
            )
        bars.append(Bar(
            f"in process, 16 clients, over the engine alone ({alone.engine})",
            f">= {IN_PROCESS_GOAL:.2f}x", measured, ratio >= IN_PROCESS_GOAL,
        ))  # fmt: skip
    return bars


def _cpu_split(m: HttpMeasurement, floor: HttpMeasurement) -> str:
    """Where each server's CPU per transfer went: its event loop (the main thread: HTTP,
    middleware, validation, answers) and its other threads (for eventbank, the ledger's)."""
    if m.loop_cpu_us is None or floor.loop_cpu_us is None:
        return ""
    return (
        f"; server CPU per transfer {m.server_cpu_us:,.0f} us, event loop "
        f"{m.loop_cpu_us:,.0f} us (the floor's: {floor.server_cpu_us:,.0f} us, event loop "
        f"{floor.loop_cpu_us:,.0f} us)"
    )


def _beside(report: Report, m: HttpMeasurement, floor: HttpMeasurement) -> str:
    """The same scenario served with the ledger process, over the same floor, if it was run."""
    other = _http_row(report, LEDGER_PROCESS, m.engine)
    if other is None:
        return ""
    return (
        f"; serve --ledger-process: {other.transfers_per_s / floor.transfers_per_s:.2f}x "
        f"({other.transfers_per_s:,.0f}/s, {other.refused} non-2xx)"
    )


def served_bars(report: Report) -> list[Bar]:
    """eventbank serve in the 16-connection scenario, per engine of the run: over the FastAPI
    floor (0 non-2xx), its p99 on SQLite beside the floor's own, and against the same server
    without the inline projection."""
    bars = []
    for m in (h for h in report.http if (h.system, h.scenario) == (SERVE, HTTP.name)):
        floor = _http_row(report, FLOOR, m.engine)
        goal = FLOOR_GOALS.get(m.engine)
        if floor is not None and goal is not None:
            ratio = m.transfers_per_s / floor.transfers_per_s
            bars.append(Bar(
                f"HTTP: serve over the FastAPI floor ({m.engine}, 16 connections)",
                f">= {goal:.2f}x, 0 non-2xx",
                f"{ratio:.2f}x ({m.transfers_per_s:,.0f} against {floor.transfers_per_s:,.0f}/s)"
                f", {m.refused} non-2xx{_cpu_split(m, floor)}{_beside(report, m, floor)}",
                ratio >= goal and m.refused == 0,
            ))  # fmt: skip
        if floor is not None and m.engine == "sqlite":
            bars.append(Bar(
                "HTTP: p99 latency (sqlite, 16 connections)",
                f"< {P99_GOAL_MS:.0f} ms",
                f"{m.p99_ms:.1f} ms (the floor's own: {floor.p99_ms:.1f} ms)",
                m.p99_ms < P99_GOAL_MS,
            ))  # fmt: skip
        off = _http_row(report, NOT_INLINE, m.engine)
        if off is not None and off.transfers_per_s:
            apart = abs(m.transfers_per_s - off.transfers_per_s) / off.transfers_per_s
            bars.append(Bar(
                f"HTTP: inline projection on against off ({m.engine})",
                f"<= {INLINE_GOAL:.0%} apart",
                f"{m.transfers_per_s:,.0f} against {off.transfers_per_s:,.0f}/s ({apart:.0%})",
                apart <= INLINE_GOAL,
            ))  # fmt: skip
    return bars


def _http_row(report: Report, system: str, engine: str) -> HttpMeasurement | None:
    """The 16-connection scenario's row of ``system`` on ``engine``, if it was run."""
    wanted = (system, engine, HTTP.name)
    return next((h for h in report.http if (h.system, h.engine, h.scenario) == wanted), None)


BATCH_GOAL = 8_000  # transfers/s in batches of 1,000 over HTTP


def batch_bars(report: Report) -> list[Bar]:
    """Batches over HTTP, per engine of the run, beside the service in process in the same run,
    with its projection and without (the most the server could do, and the most its commands
    alone could: where they are below the goal, that is what blocks it)."""
    bars = []
    for served in (h for h in report.http if (h.system, h.scenario) == (SERVE, HTTP_BATCH.name)):
        found = {h.system: h.transfers_per_s for h in report.http
                 if (h.engine, h.scenario) == (served.engine, served.scenario)}  # fmt: skip
        beside = [f"{label}: {found[system]:,.0f}/s"
                  for system, label in ((LEDGER_PROCESS, "serve --ledger-process"),
                                        (IN_PROCESS, "in process, no HTTP"),
                                        (NOT_PROJECTED, "not projected either"))
                  if system in found]  # fmt: skip
        core = f" ({'; '.join(beside)})" if beside else ""
        bars.append(
            Bar(
                f"HTTP: batches of {HTTP_BATCH.batch:,} ({served.engine})",
                f">= {BATCH_GOAL:,} transfers/s",
                f"{served.transfers_per_s:,.0f}/s{core}",
                served.transfers_per_s >= BATCH_GOAL,
            )
        )
    return bars


def workers_bars(report: Report) -> list[Bar]:
    """Two server processes on one PostgreSQL store against one, per scenario of the run."""
    bars = []
    for two in (h for h in report.http if h.system == WORKERS_2):
        one = next((h for h in report.http if (h.system, h.engine, h.scenario)
                    == (SERVE, two.engine, two.scenario)), None)  # fmt: skip
        bars.append(
            Bar(
                f"HTTP: two server processes over one ({two.engine}, {two.scenario.split(':')[0]})",
                "more transfers/s",
                "not run"
                if one is None
                else f"{two.transfers_per_s:,.0f} against {one.transfers_per_s:,.0f}/s",
                None if one is None else two.transfers_per_s > one.transfers_per_s,
            )
        )
    return bars


def load_summary(report: Report) -> str:
    """The machine's 1-minute load average over the run: others' work skews every figure."""
    load = report.meta["load_average"]
    peak = max((m.load_average for m in [*report.measurements, *report.http]),
               default=load["start"])  # fmt: skip
    return (
        f"load average {load['start']} at the start, up to {peak} during, {load['end']} at the end"
    )


def threads_summary(report: Report) -> str:
    """Where every system's client threads ran (bench/workload.py says why one CPU); an HTTP
    server process keeps its threads on the CPU it starts on, and wrk runs anywhere."""
    if not report.measurements and report.http:
        return "HTTP servers: each process on the CPU it started on; wrk: anywhere"
    cpu = report.meta.get("cpu")
    if cpu is None:
        return "client threads: wherever the system put them (--any-cpu, or no CPU affinity here)"
    return f"client threads: every system's on CPU {cpu} alone (a process runs one at a time)"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _in_process_table(report: Report) -> list[str]:
    head = (
        f"{'system':<14}{'variant':<22}{'engine':<11}{'scenario':<29}{'transfers/s':>12}"
        f"{'events/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'CPU us':>8}{'conflicts':>10}{'failed':>7}"
        f"{'x es':>7}{'x raw':>7}{'x batch':>8}"
    )
    lines = [head, "-" * len(head)]
    for scenario in SCENARIOS:
        for m in (m for m in report.measurements if m.scenario == scenario.name):
            r = ratios(report, m)
            lines.append(
                f"{m.system:<14}{m.variant:<22}{m.engine:<11}{m.scenario:<29}"
                f"{m.transfers_per_s:>12,.0f}{m.events_per_s:>10,.0f}{m.p50_ms:>8.2f}"
                f"{m.p99_ms:>8.2f}{m.cpu_us:>8.0f}{m.conflict_rate:>10.1%}{sum(m.failed.values()):>7}"
                f"{_ratio(r['eventsourcing']):>7}{_ratio(r[RAW_TX]):>7}{_ratio(r[RAW_BATCHED]):>8}"
            )
    lines += [
        "",
        "x es / x raw / x batch: transfers/s over the eventsourcing row, the raw floor "
        "(one transaction per transfer) and the batched raw floor, same engine and scenario.",
        "CPU us: the measuring process's CPU time (all its threads) per successful transfer; "
        "a database server's own is not in it.",
    ]
    return lines


def _http_table(report: Report) -> list[str]:
    """The HTTP rows: each server a process of its own, wrk its load (bench/http_load.py)."""
    meta = report.meta.get("http", {})
    head = (
        f"{'HTTP service':<24}{'engine':<12}{'scenario':<40}{'transfers/s':>12}{'p50 ms':>8}"
        f"{'p99 ms':>8}{'CPU us':>8}{'non-2xx':>8}{'errors':>7}{'x floor':>8}  lag after load"
    )
    lines = ["", head, "-" * len(head)]
    for m in report.http:
        lines.append(
            f"{m.system:<24}{m.engine:<12}{m.scenario:<40}{m.transfers_per_s:>12,.0f}"
            f"{m.p50_ms:>8.2f}{m.p99_ms:>8.2f}{m.server_cpu_us:>8.0f}{m.refused:>8}"
            f"{sum(m.socket_errors.values()):>7}{_ratio(floor_ratio(report, m)):>8}  {lag_text(m)}"
        )
    lines += [
        f"{m.system}, {m.engine}, {m.scenario}: non-2xx {m.non_2xx}, socket errors "
        f"{m.socket_errors}"
        for m in report.http
        if m.non_2xx or m.socket_errors
    ]
    lines += [
        "",
        f"load: {meta.get('load', 'wrk')} (its own process; 2xx responses over its run time); "
        f"servers: {meta.get('server', '-')}; a server process on the CPU it started on (serve "
        "--workers 2: any), wrk on any CPU.",
        f"{HTTP_BATCH.name}: the same with -c{HTTP_BATCH.connections}, POST /transfers/batch; "
        "served, transfers/s counts the transfers the store recorded while wrk ran (a batch "
        "takes seconds: its answered items alone would leave out the work of the batches in "
        "flight when wrk stops), the floor the items answered. Its row '"
        f"{IN_PROCESS}' calls LedgerService.transfer_batch in the benchmark's process; "
        f"'{NOT_PROJECTED}' the same with no projection (commands written, nothing read back).",
        f"'{NOT_INLINE}': eventbank serve --no-inline-projection (the background runner "
        "projects; commands are answered before their reads show them).",
        f"'{LEDGER_PROCESS}': eventbank serve --ledger-process (single transfers decided and "
        "written in a second process; its CPU is in the server's).",
        "CPU us: the server process's CPU time (all its threads) per transfer done while wrk "
        "ran; wrk's and PostgreSQL's own are not in it.",
        "x floor: transfers/s over the bare FastAPI endpoint's (same body, same server stack), "
        "same engine and scenario; lag after load: the projection lag (GET /stats) when wrk "
        f"ended, and when it was 0 again (goal: within {LAG_GOAL_S:.0f} s).",
    ]
    return lines


def format_report(report: Report) -> str:
    """The whole report as text: the table, reconstitution, projection, the engine alone,
    the payroll, webhook delivery, bars."""
    meta = report.meta
    lines = [
        f"eventbank benchmark, {meta['mode']} ({meta['transfers']:,} transfers per scenario, "
        f"{meta['accounts']:,} accounts), {meta['started']}",
        f"commit {meta['commit']}"
        + (
            f" + uncommitted changes in {', '.join(meta['uncommitted'])}"
            if meta["uncommitted"]
            else " (clean working tree)"
        ),
        f"machine: {meta['machine']}; {load_summary(report)}",
        threads_summary(report),
        *(f"durability, {engine}: {text}" for engine, text in meta["durability"].items()),
        "",
    ]
    if report.measurements or not report.http:
        lines += _in_process_table(report)
    if report.http:
        lines += _http_table(report)
    if report.loads:
        lines += [
            "",
            f"{'load one account':<34}{'engine':<12}{'snapshot + tail':>16}{'full replay':>13}",
        ]
        lines += [
            f"{f'{t.events:,} events':<34}{t.engine:<12}{t.snapshot_ms:>13.2f} ms"
            f"{t.replay_ms:>10.1f} ms"
            for t in report.loads
        ]
    if report.rebuilds:
        lines += [
            "",
            f"{'projection rebuild (the 16-client store)':<46}{'engine':<12}"
            f"{'events':>10}{'events/s':>12}",
        ]
        lines += [
            f"{'read models dropped, whole feed projected':<46}{r.engine:<12}"
            f"{r.events:>10,}{r.events_per_s:>12,.0f}"
            for r in report.rebuilds
        ]
    if report.ceilings:
        lines += [
            "",
            f"{'engine alone: rows built beforehand, one transaction after another':<70}"
            f"{'engine':<12}{'transfers/tx':>13}{'transfers/s':>12}{'ms/tx':>8}"
            f"{'CPU us/transfer':>16}",
        ]
        lines += [
            f"{c.scenario:<70}{c.engine:<12}{c.per_transaction:>13}{c.transfers_per_s:>12,.0f}"
            f"{c.ms_per_transaction:>8.2f}{c.cpu_us_per_transfer:>16.1f}"
            for c in report.ceilings
        ]
        lines += [
            f"{'the command path alone: LedgerService on a free store, 1 thread':<70}"
            f"{f.engine:<12}{1:>13}{1e6 / f.cpu_us_per_transfer:>12,.0f}{'-':>8}"
            f"{f.cpu_us_per_transfer:>16.1f}"
            for f in report.command_floors
        ]
    if report.payrolls:
        lines += [
            "",
            f"{'payroll: one saga, lines paid in turn':<46}{'engine':<12}"
            f"{'lines':>10}{'status':>11}{'start s':>9}{'total s':>9}{'lines/s':>9}",
        ]
        lines += [
            f"{'validated, recorded, paid (all-or-nothing)':<46}{p.engine:<12}{p.lines:>10,}"
            f"{p.status:>11}{p.start_seconds:>9.2f}{p.seconds:>9.1f}{p.lines_per_s:>9,.0f}"
            for p in report.payrolls
        ]
    if report.webhooks:
        lines += [
            "",
            f"{'webhooks: one subscription empties a backlog':<46}{'engine':<12}"
            f"{'events':>10}{'requests':>10}{'events/s':>10}{'CPU us/event':>14}"
            f"{'bare client/s':>15}{'x floor':>9}",
        ]
        lines += [
            f"{'read, signed, POSTed, checkpointed':<46}{w.engine:<12}{w.events:>10,}"
            f"{w.requests:>10,}{w.events_per_s:>10,.0f}{w.cpu_us_per_event:>14.1f}"
            f"{w.floor_events_per_s:>15,.0f}{w.ratio_to_floor:>8.2f}x"
            for w in report.webhooks
        ]
        lines.append(
            "bare client: the same batches of 100 events, encoded and signed beforehand, POSTed "
            "one after another to the same receiver (a process of its own answering 204)."
        )
    lines += ["", *bars_table(bars(report))]
    return "\n".join(lines)


def bars_table(listed: list[Bar]) -> list[str]:
    """The bars, a line each, their verdicts in one column however long what was measured."""
    width = max([50, *(len(bar.measured) + 1 for bar in listed)])
    lines = [f"{'bar':<70}{'goal':<34}{'measured':<{width}}"]
    for bar in listed:
        verdict = {True: "PASS", False: "MISS", None: "-"}[bar.passed]
        lines.append(f"{bar.name:<70}{bar.goal:<34}{bar.measured:<{width}}{verdict}")
    return lines


def to_json(report: Report) -> dict[str, Any]:
    return {
        "meta": report.meta,
        "measurements": [
            {**asdict(m), "conflict_rate": m.conflict_rate, "ratios": ratios(report, m)}
            for m in report.measurements
        ],
        "reconstitution": [asdict(t) for t in report.loads],
        "projection_rebuild": [asdict(r) for r in report.rebuilds],
        "engine_alone": [asdict(c) for c in report.ceilings],
        "command_floor": [asdict(f) for f in report.command_floors],
        "payroll": [asdict(p) for p in report.payrolls],
        "webhooks": [{**asdict(w), "ratio_to_floor": w.ratio_to_floor} for w in report.webhooks],
        "http": [
            {
                **asdict(h),
                "refused": h.refused,
                "lag_ok": h.lag_ok,
                "ratio_to_floor": floor_ratio(report, h),
            }  # fmt: skip
            for h in report.http
        ],
        "bars": [asdict(b) for b in bars(report)],
    }


def write(report: Report, folder: Path, stem: str) -> tuple[Path, Path]:
    """``STEM.json`` and ``STEM.png`` in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, png_path = folder / f"{stem}.json", folder / f"{stem}.png"
    json_path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    chart(report, png_path)
    return json_path, png_path


# The goal drawn over a panel's group of bars: (engine, scenario) -> transfers/s.
GOALS = {
    ("sqlite", CONCURRENT.name): 10_000,
    ("postgresql", CONCURRENT.name): 5_000,
    **{(engine, HOT.name): 2_000 for engine in ("sqlite", "postgresql", "dynamodb")},
}


COLORS = {"eventbank": "tab:blue", "eventsourcing": "tab:orange", RAW_TX: "tab:green",
          RAW_BATCHED: "tab:red"}  # fmt: skip


def chart(report: Report, path: Path) -> None:
    """Transfers/s per system, one panel per engine, scenarios side by side; goals dashed, the
    engine alone dotted. Then the HTTP rows in a panel of their own."""
    from matplotlib.figure import Figure  # only needed here; keeps `import bench` light

    engines = list(dict.fromkeys(m.engine for m in report.measurements))
    panels = max(1, len(engines) + bool(report.http))
    figure = Figure(figsize=(max(6.5 * panels, 12), 6), layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if report.http:
        _http_panel(axes[len(engines)], report)
    for ax, engine in zip(axes, engines, strict=False):
        series: dict[str, dict[str, Measurement]] = {}
        for m in report.measurements:
            if m.engine == engine:
                series.setdefault(_label(m), {})[m.scenario] = m
        width = 0.8 / len(series)
        for i, (label, by_scenario) in enumerate(series.items()):
            values = [by_scenario[s.name].transfers_per_s if s.name in by_scenario else 0.0
                      for s in SCENARIOS]  # fmt: skip
            color = COLORS[reference(next(iter(by_scenario.values())))]
            drawn = ax.bar([x + i * width for x in range(len(SCENARIOS))], values, width,
                           label=label, color=color)  # fmt: skip
            ax.bar_label(drawn, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=7,
                         rotation=90, padding=2)  # fmt: skip
        alone = {(c.engine, c.scenario): c.transfers_per_s for c in report.ceilings}
        for label, values, style in (("goal", GOALS, "dashed"), ("engine alone", alone, "dotted")):
            at = [(x, values.get((engine, s.name))) for x, s in enumerate(SCENARIOS)]
            for n, (x, value) in enumerate((x, value) for x, value in at if value):
                ax.hlines(value, x - width / 2, x + 0.8 - width / 2, colors="black",
                          linestyles=style, label=label if n == 0 else None)  # fmt: skip
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(SCENARIOS))],
                      [s.name.replace(": ", "\n") for s in SCENARIOS])  # fmt: skip
        ax.set_title(engine)
        ax.set_ylabel("successful durable transfers/s")
        ax.margins(y=0.15)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2)
    meta = report.meta
    figure.suptitle(
        f"eventbank benchmark, {meta['mode']}: {meta['transfers']:,} transfers per scenario\n"
        f"commit {meta['commit'][:10]}, {meta['machine']}; {load_summary(report)}\n"
        f"{threads_summary(report)}",
        fontsize=10,
    )
    figure.savefig(path, dpi=110)


HTTP_COLORS = {FLOOR: "tab:gray", SERVE: "tab:blue", NOT_INLINE: "tab:purple",
               LEDGER_PROCESS: "tab:green", WORKERS_2: "tab:cyan", IN_PROCESS: "tab:olive",
               NOT_PROJECTED: "tab:brown"}  # fmt: skip


def _http_panel(ax: Any, report: Report) -> None:
    """2xx transfers/s of eventbank serve beside the FastAPI floor, per engine and scenario."""
    groups = list(dict.fromkeys((h.engine, h.scenario) for h in report.http))
    width = 0.8 / len(HTTP_COLORS)
    for i, (system, color) in enumerate(HTTP_COLORS.items()):
        rows = {(h.engine, h.scenario): h for h in report.http if h.system == system}
        values = [rows[g].transfers_per_s if g in rows else 0.0 for g in groups]
        labels = []
        for group, value in zip(groups, values, strict=True):
            ratio = floor_ratio(report, rows[group]) if system in SERVED and value else None
            labels.append(f"{value:,.0f}" + (f" ({ratio:.2f}x)" if ratio else "") if value else "")
        drawn = ax.bar([x + i * width for x in range(len(groups))], values, width, label=system,
                       color=color)  # fmt: skip
        ax.bar_label(drawn, labels=labels, fontsize=7, rotation=90, padding=2)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))],
                  [f"{engine}\n{scenario}".replace(": ", "\n") for engine, scenario in groups],
                  fontsize=8)  # fmt: skip
    ax.set_title("HTTP service: wrk, keep-alive connections (per scenario)")
    ax.set_ylabel("transfers/s (x: over the floor)")
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3)


def _label(m: Measurement) -> str:
    return m.system if m.system != "raw" else f"raw ({m.variant})"
