"""eventbank's command path on a store that costs nothing: what the path costs on its own.

Why: the in-process bar compares eventbank at 16 clients with the engine alone (bench/ceiling.py),
whose rows are built beforehand and which decides nothing. Every transfer eventbank makes also
runs its own Python: the command and its fingerprint, the domain's decision, the outcome, the
events' envelopes with their canonical JSON and chain hashes, the command record, the account
cache and the stream locks. Here that path runs alone: ``LedgerService.transfer`` on one
thread over the scenario's planned transfers, on an in-memory store (bench/targets/
free_store.py), on the scenario's CPU. Its CPU per transfer plus the engine alone's is the
least one transfer can cost this process; on one CPU no number of threads makes eventbank
faster than their sum allows (``ceiling_per_s``), whatever the group commit and the threads do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.targets.eventbank import CURRENCY
from bench.targets.free_store import FreeStore
from bench.workload import ACCOUNTS, INITIAL_MINOR, Scenario, account_id, interleaved, on_cpu
from eventbank.application.service import LedgerService
from eventbank.domain.money import format_minor


@dataclass(frozen=True, slots=True)
class CommandFloor:
    engine: str  # measured beside this engine's engine-alone row, to be read against it
    scenario: str
    transfers: int
    cpu_us_per_transfer: float  # this process's CPU per transfer, on the free store

    def ceiling_per_s(self, engine_cpu_us_per_transfer: float) -> float:
        """The most transfers a second on one CPU: this path and the engine's own CPU per
        transfer, one after the other."""
        return 1e6 / (self.cpu_us_per_transfer + engine_cpu_us_per_transfer)


def measure_command_floor(
    engine: str, scenario: Scenario, transfers: int, seed: int, cpu: int | None = None
) -> CommandFloor:
    """The scenario's planned transfers, in the order its clients would interleave them, made
    one after another through ``LedgerService.transfer`` on a free store; ``engine`` names the
    engine-alone row it is measured beside (the machine's speed drifts within a run too)."""
    service = LedgerService(FreeStore())
    deposit = format_minor(INITIAL_MINOR, CURRENCY)
    for index in range(ACCOUNTS):
        service.open_account(account_id(index), owner="Bench", account_type="CHECKING",
                             initial_deposit=deposit)  # fmt: skip
    work = interleaved(scenario, transfers, seed)
    amounts = [format_minor(t.amount_minor, CURRENCY) for t in work]
    with on_cpu(cpu):
        started = time.process_time()
        for transfer, amount in zip(work, amounts, strict=True):
            service.transfer(transfer.source, transfer.target, amount)
        cpu_s = time.process_time() - started
    return CommandFloor(engine, scenario.name, len(work), cpu_s / len(work) * 1e6)
