"""The chaos run: real servers, concurrent clients and readers, a nemesis; then the checker.

    python -m reliability.chaos --engine sqlite --duration 300      # or: make chaos ENGINE=…

1. Deploy one engine and ``eventbank serve`` on it (deployments.py; ``postgres-2``: two
   servers on one database, the clients spread over both; ``sqlite-ledger``: serve
   --ledger-process on SQLite); open the accounts.
2. For ``quiet_s`` plus ``duration_s``: ``clients`` threads send random transfers with
   Idempotency-Keys, ``readers`` fetch every balance, and after ``quiet_s`` with no fault (so
   even a short run has answers from every server to check) the nemesis injects a fault at
   random intervals.
3. Stop the nemesis (everything is whole again) and the clients: each finishes the request it
   is in; a transfer still without a definite answer then is indeterminate.
4. Recovery: the server's own projection runner must catch up within ``recovery_s``, and its
   expiry worker must have expired every pending transfer past its timeout; then the server is
   stopped and the Auditor compares read models with a replay, checks every chain, the books
   and the pending transfers (invariant 6).
5. The checker reads the history (``history.jsonl`` in the run folder) and the final store, and
   ``report.txt`` shows the counts and the violations side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from eventbank.application.auditor import Auditor
from eventbank.ports.event_store import MAX_READ_LIMIT, EventStore, RecordedEvent
from eventbank.wiring import open_ledger
from reliability.checker import CheckReport, check
from reliability.deployments import ENGINES, Deployment, deploy, run_nemesis
from reliability.history import History, read_history
from reliability.report import render
from reliability.servers import AWS_LOCAL_ENV, AWS_UNSET
from reliability.workload import Bank, open_accounts, run_reader, run_transfers

TOKENS = {"teller": "chaos-teller-token", "auditor": "chaos-auditor-token"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "chaos"


@dataclass(frozen=True)
class ChaosConfig:
    engine: str
    duration_s: float = 30.0
    clients: int = 16
    readers: int = 2
    accounts: int = 10
    hot: int = 2
    interval_s: tuple[float, float] = (0.5, 3.0)  # between one fault's recovery and the next
    quiet_s: float = 1.0  # of traffic before the first fault: every run has answers to check
    recovery_s: float = 60.0
    seed: int = field(default_factory=lambda: random.randrange(2**32))
    run_dir: Path | None = None


@dataclass
class ChaosResult:
    run_dir: Path
    report: CheckReport
    seconds: float
    text: str


def run(config: ChaosConfig) -> ChaosResult:
    """One chaos run on one engine; everything it started is stopped when it returns."""
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    folder = config.run_dir or ARTIFACTS / f"{config.engine}-{stamp}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(config), default=str, indent=2))
    bank = Bank.of(config.accounts, config.hot)
    history = History(folder / "history.jsonl")
    try:
        with local_aws_env(), deploy(config.engine, folder, TOKENS) as deployment:
            open_accounts(deployment.server.url, TOKENS["teller"], bank)
            _drive(deployment, bank, history, config)
            problems = wait_for_projections(deployment.server.url, config.recovery_s)
            problems += wait_for_expiries(deployment.store_url, bank.accounts, config.recovery_s)
            deployment.stop()
            events, audit_problems = final_store(
                deployment.store_url, deployment.ordered, bank.accounts
            )
    finally:
        history.close()
    report = check(
        read_history(history.path), events, bank.total_minor,
        ordered=deployment.ordered, recovery_problems=problems + audit_problems,
    )  # fmt: skip
    seconds = time.monotonic() - started
    text = render(report, _title(config, folder, seconds))
    (folder / "report.txt").write_text(text)
    (folder / "report.json").write_text(json.dumps(
        {"ok": report.ok, "counts": dict(report.counts), "seconds": round(seconds, 1),
         "violations": [asdict(v) for v in report.violations]}, indent=2))  # fmt: skip
    return ChaosResult(folder, report, seconds, text)


def _drive(deployment: Deployment, bank: Bank, history: History, config: ChaosConfig) -> None:
    """Clients, readers and the nemesis for ``quiet_s`` + ``duration_s``; everything stopped on
    return."""
    rng = random.Random(config.seed)
    stop, stop_faults = threading.Event(), threading.Event()
    urls, token = deployment.urls, TOKENS["teller"]
    clients = [  # each tries the servers in turn, from its own: a retry goes to the next one
        _Worker(run_transfers, n, urls[n % len(urls):] + urls[: n % len(urls)], token, bank,
                history, stop, rng.randrange(2**32))
        for n in range(config.clients)
    ]  # fmt: skip
    readers = [_Worker(run_reader, urls[n % len(urls)], token, bank, history, stop)
               for n in range(config.readers)]  # fmt: skip
    nemesis = _Worker(run_nemesis, deployment, history, stop_faults,
                      random.Random(rng.randrange(2**32)), config.interval_s,
                      config.quiet_s)  # fmt: skip
    for worker in (*clients, *readers, nemesis):
        worker.start()
    nemesis.join(timeout=config.quiet_s + config.duration_s)  # early only if it failed
    stop_faults.set()
    nemesis.join()
    stop.set()
    for worker in (*clients, *readers):
        worker.join()
    for worker in (*clients, *readers, nemesis):
        worker.raise_error()


class _Worker(threading.Thread):
    """A thread whose exception is kept and raised again by ``raise_error``."""

    def __init__(self, target: Callable[..., None], *args: Any):
        super().__init__(daemon=True)
        self._work, self._args = target, args
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work(*self._args)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            self.error = exc

    def raise_error(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"{self._work.__name__} failed: {self.error}") from self.error


def wait_for_projections(url: str, timeout_s: float) -> list[str]:
    """The server's own runner must bring the read models up to date after the last crash."""
    deadline = time.monotonic() + timeout_s
    lag = "unknown"
    while time.monotonic() < deadline:
        try:
            metrics = httpx.get(f"{url}/metrics", timeout=5).text
            lag = _gauge(metrics, "eventbank_projection_lag_events")
            parked = _gauge(metrics, "eventbank_projection_parked_streams")
            if (lag, parked) == ("0.0", "0.0"):
                return []
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return [f"the server's projections were still {lag} events behind {timeout_s} s after the run"]


def wait_for_expiries(store_url: str, accounts: Sequence[str], timeout_s: float) -> list[str]:
    """The server must record the expiry of every pending transfer past its timeout, untouched
    accounts' too (its worker): read from the store while the server runs."""
    deadline = time.monotonic() + timeout_s
    ledger = open_ledger(store_url, inline=False)
    try:
        while True:
            now = ledger.service.clock_text()
            states = [ledger.service.load_account(account) for account in accounts]
            overdue = [tid for state in states if state is not None
                       for tid, hold in state.holds.items() if hold.overdue(now)]  # fmt: skip
            if not overdue:
                return []
            if time.monotonic() > deadline:
                return [f"{len(overdue)} pending transfers past their timeout were not expired "
                        f"{timeout_s:g} s after the run: {sorted(set(overdue))[:5]}"]  # fmt: skip
            time.sleep(0.5)
    finally:
        ledger.close()


def _gauge(metrics: str, name: str) -> str:
    prefix = f'{name}{{projection="accounts"}} '
    return next((line[len(prefix) :] for line in metrics.splitlines()
                 if line.startswith(prefix)), "missing")  # fmt: skip


def final_store(
    store_url: str, ordered: bool, accounts: Sequence[str]
) -> tuple[list[RecordedEvent], list[str]]:
    """Every event (in feed order where the engine has one, else those of ``accounts``) and
    what the Auditor finds: chains, books, read models against a replay."""
    ledger = open_ledger(store_url, inline=False)
    try:
        if ordered:
            events, streams = feed(ledger.events), None
        else:
            streams = list(accounts)
            events = [e for account in streams for e in ledger.events.read_stream(account)]
        audit = Auditor(ledger.events, ledger.reads).run(streams)
    finally:
        ledger.close()
    findings = [f"audit: {f.kind} {f.stream or ''} v{f.version or '-'}: {f.detail}"
                for f in audit.findings]  # fmt: skip
    return events, findings


def feed(events: EventStore, after: int = 0) -> list[RecordedEvent]:
    """Every event of the feed after position ``after``, in feed order."""
    found: list[RecordedEvent] = []
    while page := events.read_all(found[-1].position if found else after, MAX_READ_LIMIT):
        found.extend(page)
    return found


@contextmanager
def local_aws_env() -> Iterator[None]:
    """This process talks to DynamoDB Local with dummy credentials while a run lasts."""
    saved = {name: os.environ.get(name) for name in (*AWS_UNSET, *AWS_LOCAL_ENV)}
    for name in AWS_UNSET:
        os.environ.pop(name, None)
    os.environ.update(AWS_LOCAL_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _title(config: ChaosConfig, folder: Path, seconds: float) -> list[str]:
    low, high = config.interval_s
    return [
        f"chaos run on {config.engine}: {config.duration_s:g} s of faults ({seconds:.0f} s in "
        f"all), {config.clients} clients, {config.readers} readers, {config.accounts} accounts "
        f"({config.hot} hot), the first fault after {config.quiet_s:g} s, then one every "
        f"{low:g}-{high:g} s, seed {config.seed}",
        f"history and logs: {folder}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reliability.chaos", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of faults")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--hot", type=int, default=2)
    parser.add_argument("--interval", default="0.5:3", help="MIN:MAX seconds between faults")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--run-dir", type=Path, help="default: artifacts/chaos/ENGINE-TIME")
    args = parser.parse_args(argv)
    low, _, high = args.interval.partition(":")
    failed = False
    for engine in ENGINES if args.engine == "all" else (args.engine,):
        options: dict[str, Any] = {"seed": args.seed} if args.seed is not None else {}
        if args.run_dir is not None:
            options["run_dir"] = args.run_dir / engine
        result = run(ChaosConfig(
            engine, args.duration, args.clients, args.readers, args.accounts, args.hot,
            (float(low), float(high or low)), **options,
        ))  # fmt: skip
        print(result.text, flush=True)
        failed |= not result.report.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
