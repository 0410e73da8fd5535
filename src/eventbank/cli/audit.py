"""``eventbank audit``: verify chains, conservation and read models; exit 5 on any finding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from eventbank.application.auditor import Auditor, AuditReport, stream_ids, vars_of
from eventbank.cli.common import JsonFlag, ledger_from, out, print_json
from eventbank.domain.errors import InvalidInput

EXIT_FINDINGS = 5
audit_app = typer.Typer()


@audit_app.command()
def audit(
    ctx: typer.Context,
    as_json: JsonFlag = False,
    digest: Annotated[
        bool, typer.Option("--digest", help="Print the head hashes and their digest to publish.")
    ] = False,
    verify_digest: Annotated[
        Path | None,
        typer.Option(
            "--verify-digest",
            metavar="FILE",
            help="Check the store still holds a published digest.",
        ),
    ] = None,
) -> None:
    """Verify every stream's hash chain and versions, that money is conserved, and that the read
    models equal a replay. Records the result in the audit#trail stream; exits 5 on findings."""
    ledger = ledger_from(ctx)
    ledger.runner.catch_up()  # a lagging projection is not a corruption: let it catch up first
    auditor = Auditor(ledger.events, ledger.reads)
    streams = stream_ids(ledger.events)
    columns = (TextColumn("auditing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, disable=as_json or digest, transient=True) as progress:
        task = progress.add_task("audit", total=len(streams))
        report = auditor.run(streams, on_stream=lambda _: progress.advance(task))
    if verify_digest is not None:
        report.findings.extend(auditor.verify_digest(_published_heads(verify_digest)))
    auditor.record(report)
    if digest:
        print_json({"digest": report.digest, "heads": report.heads})
    elif as_json:
        print_json(report.as_dict())
    else:
        _print_report(report)
    if not report.clean:
        raise typer.Exit(EXIT_FINDINGS)


def _published_heads(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["heads"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"cannot read a published digest from {path}: {exc}") from None


def _print_report(report: AuditReport) -> None:
    verdict = (
        "[green]clean[/green]" if report.clean else f"[red]{len(report.findings)} finding(s)[/red]"
    )
    out.print(f"audited {report.streams} streams, {report.events} events: {verdict}")
    for currency, b in sorted(report.as_dict()["books"].items()):
        out.print(f"  {currency}: balances {b['balances']} = deposits {b['deposits']} "
                  f"- withdrawals {b['withdrawals']}")  # fmt: skip
    out.print(f"  digest {report.digest}")
    if report.findings:
        table = Table("kind", "stream", "version", "detail")
        for f in map(vars_of, report.findings):
            table.add_row(f["kind"], escape(f["stream"] or "-"), str(f["version"] or "-"),
                          escape(f["detail"]))  # fmt: skip
        out.print(table)
