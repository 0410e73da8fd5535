"""``eventbank payroll FILE --from EMPLOYER`` and ``payroll status|resume|list``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventbank.application.payroll_service import (
    LIST_DEFAULT,
    LIST_MAX,
    PayrollRejected,
    PayrollService,
)
from eventbank.cli.common import JsonFlag, ledger_from, out, print_json
from eventbank.domain.errors import InvalidInput
from eventbank.domain.money import format_minor
from eventbank.domain.payroll import Payroll

payroll_app = typer.Typer(no_args_is_help=True)
MAX_FILE_BYTES = 8 * 1024 * 1024


@payroll_app.command()
def start(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV (account_id,amount,reference) or JSON lines.")],
    employer: Annotated[str, typer.Option("--from", help="The account that pays.")],
    idempotency_key: Annotated[
        str,
        typer.Option(
            metavar="KEY",
            help="Required: running the payroll again with this key pays it once, so a retry "
            "after a crash or a lost terminal never pays twice.",
        ),
    ],
    policy: Annotated[
        str, typer.Option(help="all-or-nothing (compensate on failure) or best-effort.")
    ] = "all-or-nothing",
    as_json: JsonFlag = False,
) -> None:
    """Pay every line of FILE from the employer account, as a resumable saga (at most 20,000
    lines). Every line is validated before any money moves."""
    if not file.is_file():
        raise InvalidInput(f"{file} is not a readable file")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise InvalidInput(f"{file} is over {MAX_FILE_BYTES // 1024 // 1024} MiB")
    fmt = "jsonl" if file.suffix in (".jsonl", ".ndjson") else "csv"
    ledger = ledger_from(ctx)
    payrolls = PayrollService(ledger.service, reads=ledger.reads)
    try:
        payroll = payrolls.start(employer, file.read_text(), fmt=fmt, policy=policy,
                                 idempotency_key=idempotency_key)  # fmt: skip
    except PayrollRejected as exc:
        for p in exc.problems:
            out.print(f"line {p['line'] or '-'}: {escape(p['problem'])}", style="red")
        raise
    if not as_json:
        out.print(f"payroll {payroll.saga_id}: {payroll.line_count} lines, {payroll.policy}")
    _run(payrolls, payroll.saga_id, as_json)


@payroll_app.command()
def status(
    ctx: typer.Context,
    saga_id: Annotated[str, typer.Argument(help="The payroll id (payroll#…).")],
    as_json: JsonFlag = False,
) -> None:
    """Show a payroll's progress and outcome."""
    _report(PayrollService(ledger_from(ctx).service).status(saga_id), as_json)


@payroll_app.command()
def resume(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Finish or compensate every payroll a crash left unfinished."""
    payrolls = PayrollService(ledger_from(ctx).service)
    finished = payrolls.resume_all()
    if as_json:
        print_json([p.summary() for p in finished])
        return
    out.print(f"resumed {len(finished)} unfinished payroll(s)")
    for payroll in finished:
        _report(payroll, False)


@payroll_app.command("list")
def list_payrolls(
    ctx: typer.Context,
    after: Annotated[
        str | None, typer.Option(metavar="CURSOR", help="Go on from a page's cursor.")
    ] = None,
    limit: Annotated[
        str, typer.Option(metavar="N", help=f"At most this many (1 to {LIST_MAX}).")
    ] = str(LIST_DEFAULT),
    as_json: JsonFlag = False,
) -> None:
    """List payrolls, newest first, with their status and progress (as GET /payrolls). A page
    reads a bounded part of the payroll registry: it may be short and still print a cursor."""
    items, cursor = PayrollService(ledger_from(ctx).service).page(after, limit)
    if as_json:
        print_json({"items": [i.summary() for i in items], "next": cursor})
        return
    table = Table()
    for header in ("started (UTC)", "payroll", "employer", "status", "lines", "moved", "by"):
        # the payroll's id on one line, to be copied into `payroll status`
        table.add_column(header, overflow="fold", no_wrap=header == "payroll")
    for i in items:
        p = i.payroll
        done = len(p.paid) + len(p.failed)
        started = i.started_at.replace("T", " ")[:19] if i.started_at else "-"  # UTC
        table.add_row(started, p.saga_id, escape(p.employer_id), p.status,
                      f"{done}/{p.line_count}", f"{format_minor(p.paid_minor, p.currency)} of "
                      f"{format_minor(p.total_minor, p.currency)} {p.currency}",
                      escape(i.started_by or "-"))  # fmt: skip
    out.print(table)
    if cursor is not None:
        out.print(f"more: --after {cursor}")


def _run(payrolls: PayrollService, saga_id: str, as_json: bool) -> None:
    columns = (TextColumn("paying"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, disable=as_json, transient=True) as progress:
        task = progress.add_task("payroll", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        _report(payrolls.run(saga_id, advance), as_json)


def _report(payroll: Payroll, as_json: bool) -> None:
    summary = payroll.summary()
    if as_json:
        print_json(summary)
        return
    moved = format_minor(summary["moved_minor"], payroll.currency)
    out.print(f"{payroll.saga_id}: {payroll.status} — paid {summary['paid']}, failed "
              f"{summary['failed']}, compensated {summary['compensated']}, moved {moved} "
              f"{payroll.currency} of {format_minor(payroll.total_minor, payroll.currency)} "
              f"{payroll.currency}",
              markup=False)  # fmt: skip
    for line, reason in summary["failures"].items():
        out.print(f"  line {line}: {reason}", markup=False)
