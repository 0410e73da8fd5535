"""``eventbank projections run|status|rebuild``: the background runner and its controls."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventbank.cli.common import JsonFlag, ledger_from, out, print_json, settings_of

projections_app = typer.Typer(no_args_is_help=True)


@projections_app.command()
def run(
    ctx: typer.Context,
    batch_size: Annotated[
        int, typer.Option(metavar="N", min=1, max=10_000, help="Events per batch.")
    ] = 500,
    poll_interval_s: Annotated[
        float,
        typer.Option(
            "--poll-interval", metavar="SECONDS", min=0.01, max=60, help="Seconds between polls."
        ),
    ] = 0.2,
) -> None:
    """Follow the event feed and keep the read models up to date until stopped (Ctrl-C)."""
    ledger = ledger_from(ctx)
    runner = ledger.runner
    runner.batch_size, runner.poll_interval_s = batch_size, poll_interval_s
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    out.print(f"projecting {settings_of(ctx).store_url} (Ctrl-C stops)", markup=False)
    runner.run(stop)
    out.print("stopped")


@projections_app.command()
def status(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Checkpoint, lag (events and seconds) and parked failures of each projection."""
    state = ledger_from(ctx).runner.status()
    if as_json:
        print_json(asdict(state))
        return
    lag = f"{state.lag_events}{'+' if state.lag_capped else ''} events, {state.lag_seconds} s"
    out.print(f"{state.name}: checkpoint {state.checkpoint}, lag {lag}", markup=False)
    if not state.failures:
        out.print("no parked failures")
        return
    table = Table("stream", "stuck at version", "attempts", "next attempt", "error")
    for f in state.failures:
        table.add_row(f.aggregate_id, str(f.version), str(f.attempts), f.next_attempt_at, f.error)
    out.print(table)


@projections_app.command()
def rebuild(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Drop the read models and rebuild them from the event store."""
    runner = ledger_from(ctx).runner
    columns = (TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, disable=as_json, transient=True) as progress:
        task = progress.add_task("rebuild", total=None)
        events, seconds = runner.rebuild(lambda n: progress.advance(task, n))
    rate = round(events / seconds) if seconds > 0 else events
    if as_json:
        print_json({"events": events, "seconds": round(seconds, 3), "events_per_s": rate})
    else:
        out.print(f"rebuilt from {events} events in {seconds:.2f} s ({rate} events/s)")
