"""What every CLI command shares: settings, output, option types, opening the ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console

from eventbank.wiring import Ledger, open_ledger

out = Console(highlight=False)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Command id; repeating it with the same parameters replays the first outcome "
        "instead of moving money again. Generated when omitted.",
    ),
]
AccountId = Annotated[str, typer.Argument(help="Account id: 1-64 letters, digits, _ . : -")]
Amount = Annotated[str, typer.Argument(help='Decimal amount, e.g. "80" or "80.00".')]


@dataclass(frozen=True)
class Settings:
    store_url: str
    read_store_url: str | None


def ledger_from(ctx: typer.Context) -> Ledger:
    """Open the ledger named by the global options; closed when the command ends."""
    settings = ctx.find_object(Settings)
    ledger = open_ledger(settings.store_url, settings.read_store_url, channel="cli")
    ctx.call_on_close(ledger.close)
    return ledger


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))
