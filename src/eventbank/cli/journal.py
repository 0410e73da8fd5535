"""Journal commands: ``transaction`` (a balanced multi-leg entry) and ``reverse``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from eventbank.cli.common import (
    IdempotencyKey,
    JsonFlag,
    Metadata,
    ledger_from,
    metadata_of,
    out,
    positive_amount,
    print_json,
)
from eventbank.domain.errors import InvalidInput

journal_app = typer.Typer()


def _leg(text: str) -> tuple[str, str, str]:
    """``ACCOUNT:debit:10.00`` (the account id may itself hold ':')."""
    parts = text.rsplit(":", 2)
    if len(parts) != 3 or parts[1] not in ("debit", "credit"):
        raise InvalidInput(
            f"--leg takes ACCOUNT:debit:AMOUNT or ACCOUNT:credit:AMOUNT, got {text!r}"
        )
    if parts[2].strip().startswith("-"):
        raise InvalidInput(f"amounts are positive; got {parts[2]!r} in --leg {text!r}")
    return parts[0], parts[1], parts[2]


@journal_app.command()
def transaction(
    ctx: typer.Context,
    leg: Annotated[
        list[str],
        typer.Option(
            "--leg",
            metavar="ACCOUNT:DIRECTION:AMOUNT",
            help="One leg: debit takes AMOUNT from ACCOUNT, credit adds it. Repeat for each "
            "(2 to 32); debits must equal credits.",
        ),
    ],
    currency: Annotated[
        str | None,
        typer.Option(help="ISO 4217 code. Default: the first leg's account's currency."),
    ] = None,
    description: Annotated[str, typer.Option(help="What the entry is for.")] = "",
    meta: Metadata = None,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Post one balanced entry over several accounts (a fee split, a payout): every leg lands,
    atomically, or none does."""
    legs = [_leg(text) for text in leg]  # before the store is opened: a typo changes nothing
    ledger = ledger_from(ctx)
    if currency is None and legs:
        currency = str(ledger.queries.balance(legs[0][0])["currency"])
    receipt = ledger.service.post_transaction(
        legs, currency=currency or "USD", description=description, metadata=metadata_of(meta),
        command_id=idempotency_key,
    )  # fmt: skip
    if as_json:
        print_json({**receipt.outcome, "replayed": receipt.replayed})
        return
    o = receipt.outcome
    lines = [f"transaction {o['transaction_id']}: {o['amount']} {o['currency']} over "
             f"{len(o['legs'])} legs" + (" (replayed)" if receipt.replayed else "")]  # fmt: skip
    for posted in o["legs"]:
        sign = "-" if posted["direction"] == "debit" else "+"
        lines.append(f"  {posted['account_id']} {sign}{posted['amount']}, balance "
                     f"{posted['account']['balance']} {o['currency']}")  # fmt: skip
    out.print(escape("\n".join(lines)))


@journal_app.command()
def reverse(
    ctx: typer.Context,
    original_id: Annotated[str, typer.Argument(help="The transfer's or transaction's id.")],
    amount: Annotated[
        str | None,
        typer.Option(
            "--amount",
            parser=positive_amount,
            help="Reverse only this much (at most what is left). Default: all that is left.",
        ),
    ] = None,
    meta: Metadata = None,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Move money back against a transfer or transaction (a refund), linked to it; the total
    reversed never passes the original."""
    receipt = ledger_from(ctx).service.reverse(
        original_id, amount, metadata=metadata_of(meta), command_id=idempotency_key
    )
    if as_json:
        print_json({**receipt.outcome, "replayed": receipt.replayed})
        return
    o = receipt.outcome
    new_id = o.get("transfer_id") or o.get("transaction_id")
    out.print(escape(
        f"reversed {o['amount']} {o['currency']} of {original_id} as {new_id}; "
        f"{o['reversed_total']} {o['currency']} reversed in all"
        + (" (replayed)" if receipt.replayed else "")
    ))  # fmt: skip
