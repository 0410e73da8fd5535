"""The engine alone: the raw floor's writes with every row built beforehand and nothing else.

Why: with C clients, each waiting for its answer before it sends the next, group commit can put
at most C transfers in one transaction, and both SQL engines write one transaction at a time
(SQLite has one writer; eventbank's PostgreSQL engine serialises appends so that the global feed
never skips, engines/postgres/event_store.py). The scenario's transfers written C per
transaction, one transaction after another, with their rows already built, no logic and no
checks, is therefore about the most any implementation of these writes could do on this machine.
A goal above it is above the machine and the database library, not behind eventbank's code.

Timed: the inserts and commits only (``RawSql.write``), on one thread, on the scenario's CPU.
The CPU figure is this process's (the driver, and SQLite's own work); PostgreSQL's server runs
in processes of its own and is not in it.

With ``read_model``, each transaction is followed by the read model's rows of its transfers in
the read store's own transaction (bench/targets/read_rows.py, which says what this figure is
and is not), as eventbank's inline projection writes them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.targets.raw_sql import RawSql
from bench.targets.read_rows import ReadModelRows, read_writer
from bench.workload import ACCOUNTS, INITIAL_MINOR, Scenario, account_id, interleaved, on_cpu


@dataclass(frozen=True, slots=True)
class Ceiling:
    engine: str
    scenario: str
    per_transaction: int  # the scenario's clients: the most one transaction can hold
    transfers: int
    transfers_per_s: float
    ms_per_transaction: float
    cpu_us_per_transfer: float  # this process's CPU while writing, per transfer


WITH_READ_MODEL = ", with the read model's rows"  # added to the scenario's name


def measure_ceiling(
    raw: RawSql,
    scenario: Scenario,
    transfers: int,
    seed: int,
    cpu: int | None = None,
    *,
    read_model: bool = False,
) -> Ceiling:
    """Write the scenario's planned transfers through ``raw`` (on a fresh store), the rows of
    ``scenario.clients`` transfers per transaction, all built before the clock starts; with
    ``read_model``, each followed by their read model's rows (the module docstring)."""
    accounts = [account_id(i) for i in range(ACCOUNTS)]
    raw.open_accounts(accounts, INITIAL_MINOR)
    reads = ReadModelRows(accounts, INITIAL_MINOR)
    work = interleaved(scenario, transfers, seed)
    size = scenario.clients
    chunks = [work[start : start + size] for start in range(0, len(work), size)]
    batches = [(raw.rows_of(chunk), reads.of(chunk) if read_model else None) for chunk in chunks]
    writer = read_writer(raw, accounts, INITIAL_MINOR) if read_model else None
    try:
        with on_cpu(cpu):
            wall, processor = time.perf_counter(), time.process_time()
            for (events, commands), read in batches:
                raw.write(events, commands)
                if writer is not None and read is not None:
                    writer.write(read)
            wall, processor = time.perf_counter() - wall, time.process_time() - processor
    finally:
        if writer is not None:
            writer.close()
    return Ceiling(
        engine=raw.engine,
        scenario=scenario.name + (WITH_READ_MODEL if read_model else ""),
        per_transaction=size,
        transfers=len(work),
        transfers_per_s=len(work) / wall,
        ms_per_transaction=wall / len(batches) * 1000,
        cpu_us_per_transfer=processor / len(work) * 1e6,
    )
