"""The ``eventbank`` command line: a thin Typer layer over the application service.

Exit codes: 0 done; 2 bad input or usage; 3 refused by a business rule; 4 conflict (retries
exhausted, or an idempotency key reused with other parameters); 1 anything unexpected.
Messages go to stderr as one line; no traceback for a user mistake.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eventbank.domain.errors import Conflict, EventbankError, InvalidInput, RuleViolation
from eventbank.service import LedgerService, Receipt
from eventbank.store.url import DEFAULT_STORE_URL, open_store

EXIT_UNEXPECTED, EXIT_INVALID, EXIT_REFUSED, EXIT_CONFLICT = 1, 2, 3, 4

app = typer.Typer(
    help="eventbank: an event-sourced core-banking ledger in which every money movement is ACID.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
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


@app.callback()
def options(
    ctx: typer.Context,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            envvar="EVENTBANK_STORE",
            help="Event store URL: sqlite:///relative.db or sqlite:////absolute/path.db.",
        ),
    ] = DEFAULT_STORE_URL,
) -> None:
    ctx.obj = store


def _service(ctx: typer.Context) -> LedgerService:
    store = open_store(ctx.obj)
    ctx.call_on_close(store.close)
    return LedgerService(store)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _report(receipt: Receipt, as_json: bool, summary: str) -> None:
    if as_json:
        _print_json({**receipt.outcome, "replayed": receipt.replayed})
        return
    note = " [dim](replayed: this idempotency key was already handled)[/dim]"
    out.print(escape(summary) + (note if receipt.replayed else ""))


def _balance_line(account: dict[str, Any]) -> str:
    return f"{account['account_id']} balance {account['balance']} {account['currency']}"


@app.command()
def init(ctx: typer.Context) -> None:
    """Create (or migrate) the event store. Safe to run again."""
    store = open_store(ctx.obj)
    store.close()
    out.print(f"event store ready at {ctx.obj}")


@app.command("open")
def open_account(
    ctx: typer.Context,
    account_id: AccountId,
    owner: Annotated[str, typer.Option("--owner", help="Account holder's name.")],
    account_type: Annotated[str, typer.Option("--type", help="CHECKING or SAVINGS.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    initial_deposit: Annotated[
        str | None, typer.Option("--initial-deposit", help="Decimal amount to deposit at once.")
    ] = None,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Open an account."""
    receipt = _service(ctx).open_account(
        account_id, owner=owner, account_type=account_type, currency=currency.upper(),
        initial_deposit=initial_deposit, command_id=idempotency_key,
    )  # fmt: skip
    account = receipt.outcome["account"]
    _report(receipt, as_json, f"opened {account['type']} account; {_balance_line(account)}")


@app.command()
def deposit(
    ctx: typer.Context,
    account_id: AccountId,
    amount: Amount,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Deposit money into an account."""
    receipt = _service(ctx).deposit(account_id, amount, command_id=idempotency_key)
    o = receipt.outcome
    _report(receipt, as_json, f"deposited {o['amount']} {o['currency']}; "
            f"{_balance_line(o['account'])}")  # fmt: skip


@app.command()
def withdraw(
    ctx: typer.Context,
    account_id: AccountId,
    amount: Amount,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Withdraw money from an account (never below zero)."""
    receipt = _service(ctx).withdraw(account_id, amount, command_id=idempotency_key)
    o = receipt.outcome
    _report(receipt, as_json, f"withdrew {o['amount']} {o['currency']}; "
            f"{_balance_line(o['account'])}")  # fmt: skip


@app.command()
def transfer(
    ctx: typer.Context,
    from_id: Annotated[str, typer.Argument(help="Account to debit.")],
    to_id: Annotated[str, typer.Argument(help="Account to credit.")],
    amount: Amount,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Move money between two accounts of one currency, atomically."""
    receipt = _service(ctx).transfer(from_id, to_id, amount, command_id=idempotency_key)
    o = receipt.outcome
    _report(receipt, as_json, f"transferred {o['amount']} {o['currency']} "
            f"(transfer {o['transfer_id']}); {_balance_line(o['from'])}; "
            f"{_balance_line(o['to'])}")  # fmt: skip


@app.command()
def close(
    ctx: typer.Context,
    account_id: AccountId,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Close an account; its balance must be zero."""
    receipt = _service(ctx).close_account(account_id, command_id=idempotency_key)
    _report(receipt, as_json, f"closed {account_id}")


@app.command()
def balance(ctx: typer.Context, account_id: AccountId, as_json: JsonFlag = False) -> None:
    """Show an account's balance, computed from its events."""
    account = _service(ctx).get_account(account_id).describe()
    if as_json:
        _print_json(account)
    else:
        out.print(
            escape(
                f"{_balance_line(account)} ({account['type']}, {account['status']}, "
                f"owner {account['owner']}, version {account['version']})"
            )
        )


@app.command()
def history(ctx: typer.Context, account_id: AccountId, as_json: JsonFlag = False) -> None:
    """List an account's events with the balance after each."""
    entries = _service(ctx).history(account_id)
    if as_json:
        _print_json(entries)
        return
    table = Table("ver", "recorded at", "event", "amount", "balance", "counterparty")
    for e in entries:
        table.add_row(str(e["version"]), e["recorded_at"] or "", e["event_type"],
                      e["amount"] or "", e["balance_after"], e["counterparty"] or "")  # fmt: skip
    out.print(table)


@app.command()
def events(
    ctx: typer.Context,
    aggregate: Annotated[str | None, typer.Option(help="Only this stream (account id).")] = None,
    after: Annotated[int, typer.Option(help="Global position to start after.", min=0)] = 0,
    limit: Annotated[int, typer.Option(help="At most this many events.", min=1)] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List stored events: the global feed, or one stream."""
    service = _service(ctx)
    found = (
        service.store.read_stream(aggregate)[:limit] if aggregate else service.events(after, limit)
    )
    rows = [
        {"position": e.position, "aggregate_id": e.aggregate_id, "version": e.version,
         "event_type": e.event_type, "event_id": e.event_id, "data": dict(e.data),
         "metadata": dict(e.metadata)}
        for e in found
    ]  # fmt: skip
    if as_json:
        _print_json(rows)
        return
    table = Table("pos", "stream", "ver", "event", "data")
    for r in rows:
        table.add_row(str(r["position"]), r["aggregate_id"], str(r["version"]), r["event_type"],
                      json.dumps(r["data"], sort_keys=True))  # fmt: skip
    out.print(table)


@app.command()
def demo(
    store: Annotated[
        str | None,
        typer.Option(help="Store URL for the demo; a fresh temporary SQLite file by default."),
    ] = None,
) -> None:
    """Show each guarantee on a real store: atomic transfers, no overdraft, idempotent retries."""
    from eventbank.demo import run_demo

    run_demo(out, store)


def main() -> None:
    """Entry point: run the CLI, turning eventbank errors into one stderr line and an exit code."""
    err = Console(stderr=True, highlight=False)
    try:
        app()
    except InvalidInput as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_INVALID)
    except RuleViolation as exc:
        err.print(f"refused: {exc}", markup=False)
        sys.exit(EXIT_REFUSED)
    except Conflict as exc:
        err.print(f"conflict: {exc}", markup=False)
        sys.exit(EXIT_CONFLICT)
    except EventbankError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(EXIT_UNEXPECTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback to users
        err.print(f"unexpected error: {type(exc).__name__}: {exc}", markup=False)
        sys.exit(EXIT_UNEXPECTED)


if __name__ == "__main__":
    main()
