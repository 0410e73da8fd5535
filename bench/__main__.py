"""``python -m bench`` (also ``make bench`` and ``eventbank bench``): run the benchmark, print
the report and write it as JSON and PNG under benchmarks/results/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.engines import ENGINES
from bench.report import format_report, write
from bench.run import ROOT, SYSTEMS, Config, run
from bench.workload import MAX_TRANSFERS, client_cpu

FULL = {"transfers": 10_000, "load_events": 100_000, "repeats": 7, "payroll_lines": 20_000,
        "webhook_transfers": 20_000, "engines": ENGINES, "http_seconds": 15}  # fmt: skip
# Short: fewer transfers, a smaller large account and payroll, 5 s HTTP rows, and by default no
# DynamoDB Local, which alone takes longer here (a fresh JVM per store, 1,000 accounts opened
# on each).
QUICK = {"transfers": 500, "load_events": 10_000, "repeats": 3, "payroll_lines": 2_000,
         "webhook_transfers": 2_000, "engines": ENGINES[:2], "http_seconds": 5}  # fmt: skip


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)}")
        return names

    return parse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("0 (none) or more")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short: 500 transfers per scenario (not 10,000), a 10,000-event large "
        "account (not 100,000), a 2,000-line payroll (not 20,000), 5 s per HTTP row (not 15), "
        "SQLite and PostgreSQL unless --engines says otherwise",
    )
    parser.add_argument(
        "--engines",
        type=_names(ENGINES),
        help=f"comma-separated from {','.join(ENGINES)} (default: all; --quick: the first two)",
    )
    parser.add_argument(
        "--systems",
        type=_names(SYSTEMS),
        default=SYSTEMS,
        help=f"comma-separated, default: {','.join(SYSTEMS)} (http: eventbank serve and a "
        "bare FastAPI floor as processes of their own, driven by wrk; SQLite and PostgreSQL)",
    )
    parser.add_argument("--transfers", type=int, help=f"per scenario (1 to {MAX_TRANSFERS:,})")
    parser.add_argument("--load-events", type=int, help="events in the large account")
    parser.add_argument(
        "--payroll-lines",
        type=int,
        help="lines of the payroll paid on SQLite (default 20,000; --quick: 2,000; 0: none)",
    )
    parser.add_argument(
        "--webhook-transfers",
        type=_count,
        help="transfers whose events one webhook subscription is delivered on SQLite "
        "(default 20,000; --quick: 2,000; 0: none)",
    )
    parser.add_argument(
        "--http-seconds", type=_positive, help="wrk's run per HTTP row (default 15; --quick: 5)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--any-cpu",
        action="store_true",
        help="let each scenario's threads run on any CPU (default: all on one, the same for "
        "every system; bench/workload.py says why)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--pg-url",
        help="use this PostgreSQL server (a role that may CREATE "
        "DATABASE) instead of starting a throwaway cluster",
    )
    parser.add_argument(
        "--dynamodb-endpoint", help="use this DynamoDB Local instead of starting one"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    config = Config(
        mode="quick" if args.quick else "full",
        engines=args.engines or sizes["engines"],
        systems=args.systems,
        transfers=args.transfers or sizes["transfers"],
        load_events=args.load_events or sizes["load_events"],
        repeats=sizes["repeats"],
        payroll_lines=sizes["payroll_lines"] if args.payroll_lines is None else args.payroll_lines,
        webhook_transfers=sizes["webhook_transfers"]
        if args.webhook_transfers is None
        else args.webhook_transfers,
        seed=args.seed,
        http_seconds=args.http_seconds or sizes["http_seconds"],
        cpu=None if args.any_cpu else client_cpu(),
        pg_url=args.pg_url,
        dynamodb_endpoint=args.dynamodb_endpoint,
    )
    report = run(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_report(report))
    json_path, png_path = write(report, args.out, config.mode)
    print(f"\nwritten: {json_path}, {png_path}")


if __name__ == "__main__":
    main()
