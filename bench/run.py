"""Runs every selected system on every selected engine, scenario by scenario, on fresh stores.

Per engine, scenario by scenario: eventbank, the eventsourcing peer, the raw floors, each on a
store of its own, one after the other, so rows compared in the table ran close together in
time. Then, where there are raw SQL floors and several clients, the engine alone with the
rows built beforehand (bench/ceiling.py). After eventbank's 16-client run its store's read
models are rebuilt (projection events/s), and a store of its own holds the reconstitution
accounts. On SQLite, last, one payroll of ``payroll_lines`` lines is paid (bench/payroll.py)
and one webhook subscription is delivered a backlog of ``webhook_transfers`` transfers
(bench/webhooks.py).
With ``http`` among the systems, on SQLite and PostgreSQL, after the in-process scenarios: each
HTTP scenario's floor, then ``eventbank serve`` on a fresh store, each as a process of its own
driven by wrk for ``http_seconds`` (bench/http_load.py).
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.batch_in_process import IN_PROCESS, NOT_PROJECTED, measure_in_process_batch
from bench.ceiling import Ceiling, measure_ceiling
from bench.command_floor import measure_command_floor
from bench.engines import Engine, open_engines
from bench.http_load import (
    BATCH_ENGINES,
    EVENTBANK,
    FLOOR,
    HTTP,
    HTTP_BATCH,
    HTTP_ENGINES,
    HTTP_SCENARIOS,
    LEDGER_PROCESS,
    NOT_INLINE,
    WORKERS_2,
    HttpMeasurement,
    describe,
    lag_text,
    measure_http,
    wrk_path,
)
from bench.payroll import PAYROLL_ENGINES, measure_payroll
from bench.reconstitution import measure_loads, measure_rebuild
from bench.report import Report
from bench.targets.eventbank import EventbankTarget
from bench.targets.peer import measure_peer
from bench.targets.raw_dynamodb import RawDynamo
from bench.targets.raw_sql import RawPostgres, RawSqlite
from bench.webhooks import WEBHOOK_ENGINES, measure_webhooks
from bench.workload import ACCOUNTS, CONCURRENT, SCENARIOS, Measurement, Scenario, Target, measure
from eventbank.engines.sql.group_commit import DEFAULT_MAX as GROUP_COMMIT_MAX

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("eventbank", "eventsourcing", "raw", "http")
RAW_BATCH = GROUP_COMMIT_MAX  # transfers per transaction in the batched floor
RAW_SQL = {"sqlite": RawSqlite, "postgresql": RawPostgres}


@dataclass(frozen=True, slots=True)
class Config:
    mode: str  # "full" or "quick": names the result files
    engines: tuple[str, ...]
    systems: tuple[str, ...]
    transfers: int
    load_events: int  # events in the large account of the reconstitution figure
    repeats: int
    seed: int
    cpu: int | None = None  # the one CPU each scenario's threads run on (bench/workload.py)
    pg_url: str | None = None
    dynamodb_endpoint: str | None = None
    payroll_lines: int = 20_000  # the payroll paid on SQLite (bench/payroll.py); 0: none
    webhook_transfers: int = 20_000  # the backlog delivered on SQLite (bench/webhooks.py); 0: none
    http_seconds: int = 15  # wrk's run per HTTP row (bench/http_load.py)


Run = Callable[[str, Scenario], Measurement]  # (fresh store URL, scenario) -> figures


def run(config: Config, progress: Callable[[str], None] = print) -> Report:
    report = Report(_meta(config))
    if "http" in config.systems:
        wrk_path()  # missing: say so now, not after the other systems' minutes
    with open_engines(
        config.engines, pg_url=config.pg_url, dynamodb_endpoint=config.dynamodb_endpoint
    ) as engines:
        for engine in engines:
            report.meta["durability"][engine.name] = engine.durability
            runs = list(_runs(engine, config, report))
            for scenario in SCENARIOS:  # systems side by side in time: like load, like figures
                for system, runner in runs:
                    with engine.fresh() as url:
                        measured = runner(url, scenario)
                        if system == "eventbank" and scenario == CONCURRENT:
                            report.rebuilds.append(measure_rebuild(url))
                    report.measurements.append(measured)
                    progress(_progress_line(measured))
                if "raw" in config.systems and engine.name in RAW_SQL and scenario.clients > 1:
                    # the in-process bar's scenario also with the read model's rows beside it
                    for read_model in (False, True) if scenario == CONCURRENT else (False,):
                        ceiling = _ceiling(engine, scenario, config, read_model)
                        report.ceilings.append(ceiling)
                        progress(
                            f"{engine.name}: engine alone, {ceiling.per_transaction}/tx, "
                            f"{ceiling.scenario}: {ceiling.transfers_per_s:,.0f} transfers/s"
                        )
                    if scenario == CONCURRENT and "eventbank" in config.systems:
                        floor = measure_command_floor(engine.name, scenario, config.transfers,
                                                      config.seed, config.cpu)  # fmt: skip
                        report.command_floors.append(floor)
                        progress(f"{engine.name}: the command path alone, "
                                 f"{floor.cpu_us_per_transfer:,.0f} us per transfer")  # fmt: skip
            if "http" in config.systems:
                report.http += _http(engine, config, progress)
            if "eventbank" in config.systems:
                with engine.fresh() as url:
                    report.loads += measure_loads(url, (100, config.load_events), config.repeats)
                progress(f"{engine.name}: reconstitution measured")
                _sqlite_figures(engine, config, report, progress)
    report.meta["load_average"]["end"] = round(os.getloadavg()[0], 2)
    return report


def _sqlite_figures(
    engine: Engine, config: Config, report: Report, progress: Callable[[str], None]
) -> None:
    """eventbank's figures beyond the scenarios, on the engines they run on (SQLite), each on
    a fresh store: the payroll, then the webhook backlog."""
    if config.payroll_lines and engine.name in PAYROLL_ENGINES:
        with engine.fresh() as url:
            paid = measure_payroll(url, config.payroll_lines)
        report.payrolls.append(paid)
        progress(f"{engine.name}: a {paid.lines:,}-line payroll, {paid.status} in "
                 f"{paid.seconds:,.1f} s: {paid.lines_per_s:,.0f} lines/s")  # fmt: skip
    if config.webhook_transfers and engine.name in WEBHOOK_ENGINES:
        with engine.fresh() as url:
            hooks = measure_webhooks(url, config.webhook_transfers)
        report.webhooks.append(hooks)
        progress(f"{engine.name}: webhooks, {hooks.events:,} events delivered at "
                 f"{hooks.events_per_s:,.0f}/s (bare client: "
                 f"{hooks.floor_events_per_s:,.0f}/s)")  # fmt: skip


def _runs(engine: Engine, config: Config, report: Report) -> Iterator[tuple[str, Run]]:
    """(system, how to run one scenario) for each selected system this engine has."""
    if "eventbank" in config.systems:
        yield "eventbank", _local(config, EventbankTarget)
    if "eventsourcing" in config.systems and engine.name in ("sqlite", "postgresql"):

        def peer(url: str, scenario: Scenario) -> Measurement:
            measured, durability = measure_peer(
                url, scenario, config.transfers, config.seed, config.cpu
            )
            report.meta["durability"][f"{engine.name}, eventsourcing"] = durability
            return measured

        yield "eventsourcing", peer
    if "raw" in config.systems:
        if engine.name in RAW_SQL:
            raw = RAW_SQL[engine.name]
            yield "raw", _local(config, lambda url: raw(url, 1))
            yield "raw", _local(config, lambda url: raw(url, RAW_BATCH))
        else:
            yield "raw", _local(config, RawDynamo)


def _http(engine: Engine, config: Config, progress: Callable[[str], None]) -> list[HttpMeasurement]:
    """Each HTTP scenario's floor, then eventbank serve on a fresh store, one after the other;
    in the batch scenario, then the service in process (what the server could do at most), with
    and without its projection."""
    if engine.name not in HTTP_ENGINES:
        progress(f"{engine.name}: no HTTP scenario (run on {' and '.join(HTTP_ENGINES)})")
        return []
    rows = []
    # side by side in time, as the other systems; two worker processes where the engine allows
    # them (SQLite has one writer per file: serve refuses --workers 2 there); once, no inline
    # projection beside the default (what the projection costs served), and once with the
    # ledger process
    workers = (WORKERS_2,) if engine.name == "postgresql" else ()
    runs = [(s, (FLOOR, EVENTBANK, *((NOT_INLINE, LEDGER_PROCESS) if s == HTTP else ()),
                 *workers)) for s in HTTP_SCENARIOS]  # fmt: skip
    if engine.name in BATCH_ENGINES:
        runs.append((HTTP_BATCH, (FLOOR, EVENTBANK, LEDGER_PROCESS, IN_PROCESS, NOT_PROJECTED)))
    for scenario, systems in runs:
        for system in systems:
            with engine.fresh() if system != FLOOR else nullcontext(None) as url:
                if system in (IN_PROCESS, NOT_PROJECTED):
                    m = measure_in_process_batch(engine.name, scenario, config.http_seconds,
                                                 config.seed, url,
                                                 projected=system == IN_PROCESS)  # fmt: skip
                else:
                    m = measure_http(system, engine.name, scenario, config.http_seconds,
                                     config.seed, url)  # fmt: skip
            rows.append(m)
            progress(
                f"{m.engine}: {m.system}, {m.scenario}: {m.transfers_per_s:,.0f} transfers/s, "
                f"p99 {m.p99_ms:.1f} ms, {m.server_cpu_us:,.0f} CPU us/transfer, "
                f"{m.refused} non-2xx, projection lag {lag_text(m)}"
            )
    return rows


def _ceiling(engine: Engine, scenario: Scenario, config: Config, read_model: bool) -> Ceiling:
    """The engine alone, on a store of its own, with as many transfers per transaction as the
    scenario has clients, and with ``read_model`` their read model's rows too
    (bench/ceiling.py)."""
    with engine.fresh() as url:
        raw = RAW_SQL[engine.name](url, scenario.clients)
        try:
            return measure_ceiling(raw, scenario, config.transfers, config.seed, config.cpu,
                                   read_model=read_model)  # fmt: skip
        finally:
            raw.close()


def _local(config: Config, make: Callable[[str], Target]) -> Run:
    def one(url: str, scenario: Scenario) -> Measurement:
        target = make(url)
        try:
            return measure(target, scenario, config.transfers, config.seed, config.cpu)
        finally:
            target.close()

    return one


def _progress_line(m: Measurement) -> str:
    failed = f", {sum(m.failed.values())} failed ({m.failure_sample})" if m.failed else ""
    return (
        f"{m.engine}: {m.system} ({m.variant}), {m.scenario}: {m.transfers_per_s:,.0f} "
        f"transfers/s, p99 {m.p99_ms:.1f} ms{failed}"
    )


def _meta(config: Config) -> dict:
    """What the figures reflect: code, machine, settings."""
    return {
        "mode": config.mode,
        "transfers": config.transfers,
        "payroll_lines": config.payroll_lines,
        "webhook_transfers": config.webhook_transfers,
        "accounts": ACCOUNTS,
        "seed": config.seed,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "HEAD").strip() or "unknown",
        "uncommitted": [
            line[3:] for line in _git("status", "--porcelain", "--", "src").splitlines()
        ],
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        "durability": {},
        "cpu": config.cpu,
        **({"http": describe(config.http_seconds)} if "http" in config.systems else {}),
        # Other work on the machine skews every figure: recorded, so a reader can tell.
        "load_average": {"start": round(os.getloadavg()[0], 2)},
    }


def _git(*args: str) -> str:
    """git's output, or "" outside a git checkout."""
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else ""
