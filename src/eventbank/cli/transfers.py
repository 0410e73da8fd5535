"""``eventbank transfers``: find transfers and transactions (application/transfer_search.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from eventbank.application.transfer_search import (
    MAX_LIMIT,
    InvalidMetadataFilter,
    find_transfers,
)
from eventbank.cli.common import JsonFlag, Metadata, ledger_from, metadata_of, out, print_json
from eventbank.domain.errors import InvalidInput

transfers_app = typer.Typer()


@transfers_app.command()
def transfers(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option("--account", metavar="ACCOUNT", help="Either side, or any leg.")
    ] = None,
    meta: Metadata = None,
    from_: Annotated[
        str | None, typer.Option("--from", metavar="TIME", help="RFC 3339, inclusive.")
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", metavar="TIME", help="RFC 3339, exclusive.")
    ] = None,
    status: Annotated[
        str | None, typer.Option(metavar="STATUS", help="pending, posted, voided or expired.")
    ] = None,
    after: Annotated[
        str | None, typer.Option(metavar="CURSOR", help="Go on from a page's cursor.")
    ] = None,
    limit: Annotated[
        str, typer.Option(metavar="N", help=f"At most this many (1 to {MAX_LIMIT}).")
    ] = "50",
    as_json: JsonFlag = False,
) -> None:
    """List transfers and transactions, oldest first, matching every filter given (--meta
    KEY=VALUE: each must match). A page examines a bounded number of rows: it may be short,
    even empty, and still print a cursor to go on with (--after)."""
    try:
        metadata = metadata_of(meta)
    except InvalidInput as exc:
        raise InvalidMetadataFilter(str(exc)) from None
    items, cursor = find_transfers(
        ledger_from(ctx).reads, account_id=account, metadata=metadata, from_=from_, to=to,
        status=status, after=after, limit=limit,
    )  # fmt: skip
    if as_json:
        print_json({"items": items, "next": cursor})
        return
    table = Table()
    for header in ("transfer", "status", "amount", "accounts", "created at", "metadata",
                   "links"):  # fmt: skip
        table.add_column(header, overflow="fold")  # ids whole, however narrow the terminal
    for i in items:
        accounts = f"{i['from_account_id']} → {i['to_account_id']}"
        if i["kind"] == "transaction":
            accounts = "transaction: " + ", ".join(i["accounts"])
        links = [f"reverses {i['reverses']}"] if i["reverses"] else []
        links += [f"reversed by {r}" for r in i["reversed_by"]]
        table.add_row(
            i["transfer_id"], i["status"], f"{i['amount']} {i['currency']}", accounts,
            i["created_at"], escape(", ".join(f"{k}={v}" for k, v in i["metadata"].items())),
            "; ".join(links),
        )  # fmt: skip
    out.print(table)
    if cursor is not None:
        out.print(f"more: --after {cursor}")
