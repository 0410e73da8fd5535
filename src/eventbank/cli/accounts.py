"""Account commands: open, deposit, withdraw, transfer (pending ones too: post, void), close,
freeze, and the reads."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from eventbank.application.holds import MAX_LISTED, open_holds
from eventbank.application.statements import (
    balance_as_of,
    describe_statement,
    parse_as_of,
    parse_period,
    statement,
    statement_csv,
)
from eventbank.application.write_path import Receipt
from eventbank.cli.batch import TransferCommand, read_batch, run_batch
from eventbank.cli.common import (
    AccountId,
    Amount,
    IdempotencyKey,
    JsonFlag,
    Metadata,
    ledger_from,
    metadata_of,
    out,
    positive_amount,
    print_json,
    settings_of,
)
from eventbank.domain.deadlines import MAX_TIMEOUT_S
from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import MAX_READ_LIMIT

accounts_app = typer.Typer()


def _report(receipt: Receipt, as_json: bool, summary: str) -> None:
    if as_json:
        print_json({**receipt.outcome, "replayed": receipt.replayed})
        return
    note = " [dim](replayed: this idempotency key was already handled)[/dim]"
    out.print(escape(summary) + (note if receipt.replayed else ""))


def _balance_line(account: dict[str, Any]) -> str:
    """``ann balance 90.00 USD``; with what pending transfers reserve on it (debits) or
    announce to it (credits), and so what is available, when there are any."""
    currency = account["currency"]
    line = f"{account['account_id']} balance {account['balance']} {currency}"
    pending = [f"{name.replace('_', ' ')} {account[name]} {currency}"
               for name in ("pending_debits", "pending_credits")
               if Decimal(account.get(name) or 0)]  # fmt: skip
    if pending:
        line += f", {', '.join(pending)}, available {account['available']} {currency}"
    return line


@accounts_app.command()
def init(ctx: typer.Context) -> None:
    """Create (or migrate) the event store and the read-model store. Safe to run again. The
    only command but `serve` that creates a store: the others refuse a missing one."""
    ledger_from(ctx, create=True)
    out.print(f"event store ready at {settings_of(ctx).store_url}")


@accounts_app.command("open")
def open_account(
    ctx: typer.Context,
    account_id: AccountId,
    owner: Annotated[str, typer.Option("--owner", help="Account holder's name.")],
    account_type: Annotated[
        str, typer.Option("--type", metavar="TYPE", help="CHECKING or SAVINGS.")
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    initial_deposit: Annotated[
        str | None,
        typer.Option(
            "--initial-deposit",
            metavar="AMOUNT",
            parser=positive_amount,
            help="Decimal amount to deposit at once.",
        ),
    ] = None,
    overdraft_limit: Annotated[
        str | None,
        typer.Option(
            "--overdraft-limit",
            metavar="AMOUNT",
            parser=positive_amount,
            help="The balance may go down to minus this (default 0: never below zero).",
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Open an account."""
    receipt = ledger_from(ctx).service.open_account(
        account_id, owner=owner, account_type=account_type, currency=currency.upper(),
        initial_deposit=initial_deposit, overdraft_limit=overdraft_limit,
        command_id=idempotency_key,
    )  # fmt: skip
    account = receipt.outcome["account"]
    _report(receipt, as_json, f"opened {account['type']} account; {_balance_line(account)}")


def _money_command(method: str, verb: str, doc: str) -> Callable[..., None]:
    """Deposit and withdraw differ only in the service method and the words: one body."""

    def command(
        ctx: typer.Context,
        account_id: AccountId,
        amount: Amount,
        meta: Metadata = None,
        idempotency_key: IdempotencyKey = None,
        as_json: JsonFlag = False,
    ) -> None:
        handle = getattr(ledger_from(ctx).service, method)
        receipt = handle(account_id, amount, metadata=metadata_of(meta), command_id=idempotency_key)
        o = receipt.outcome
        summary = f"{verb} {o['amount']} {o['currency']}; {_balance_line(o['account'])}"
        _report(receipt, as_json, summary)

    command.__doc__ = doc
    return command


accounts_app.command("deposit")(
    _money_command("deposit", "deposited", "Deposit money into an account.")
)
accounts_app.command("withdraw")(
    _money_command(
        "withdraw",
        "withdrew",
        "Withdraw money from an account (never below zero, or below minus its overdraft limit).",
    )
)


def _timeout_seconds(text: str) -> int:
    """A pending transfer's timeout as typed: whole seconds, 1 to 30 days."""
    digits = text.strip().lstrip("0") or "0"
    short = digits.isascii() and digits.isdigit() and len(digits) <= len(str(MAX_TIMEOUT_S))
    if not (short and 1 <= int(digits) <= MAX_TIMEOUT_S):
        raise typer.BadParameter(
            f"a whole number of seconds from 1 to {MAX_TIMEOUT_S:,} (30 days); got {text!r}"
        )
    return int(digits)


@accounts_app.command(cls=TransferCommand)
def transfer(
    ctx: typer.Context,
    from_id: Annotated[
        str | None, typer.Argument(help="Account to debit (none with --batch).")
    ] = None,
    to_id: Annotated[str | None, typer.Argument(help="Account to credit.")] = None,
    amount: Annotated[
        str | None,
        typer.Argument(parser=positive_amount, help='Decimal amount, e.g. "80" or "80.00".'),
    ] = None,
    idempotency_key: IdempotencyKey = None,
    batch: Annotated[
        Path | None,
        typer.Option(
            "--batch",
            metavar="FILE",
            help="Instead of FROM_ID TO_ID AMOUNT: a CSV file of up to 1,000 transfers, "
            "from_account_id,to_account_id,amount,idempotency_key (a header line is optional), "
            "each with its own outcome. Exit 3 if any line was refused.",
        ),
    ] = None,
    atomic: Annotated[
        bool, typer.Option("--atomic", help="With --batch: every line or none is transferred.")
    ] = False,
    pending: Annotated[
        bool,
        typer.Option(
            "--pending",
            help="Nothing moves yet: reserve AMOUNT on FROM_ID (no longer available there) "
            "until `eventbank post` moves it (all or part) or `eventbank void` releases it.",
        ),
    ] = False,
    timeout: Annotated[
        int | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            parser=_timeout_seconds,
            help=f"With --pending: release the reservation after this many seconds "
            f"(1 to {MAX_TIMEOUT_S:,}, 30 days) unless posted or voided first. "
            "Default: no timeout.",
        ),
    ] = None,
    meta: Metadata = None,
    as_json: JsonFlag = False,
) -> None:
    """Move money between two accounts of one currency, atomically; or reserve it for a
    pending transfer (--pending); or a batch of transfers from a file (--batch)."""
    if timeout is not None and not pending:
        raise InvalidInput("--timeout applies to a pending transfer only: add --pending")
    if batch is not None:
        if from_id is not None or idempotency_key is not None:
            raise InvalidInput(
                "--batch takes the transfers from FILE, each line with its own idempotency_key:"
                " give no FROM_ID TO_ID AMOUNT or --idempotency-key"
            )
        if pending or meta:
            option = "--pending" if pending else "--meta"
            raise InvalidInput(f"{option} applies to a single transfer, not to a --batch file")
        lines = read_batch(batch)  # before the store is opened: a bad file changes nothing
        run_batch(ledger_from(ctx).service, lines, atomic=atomic, as_json=as_json)
        return
    if atomic:
        raise InvalidInput("--atomic applies to a --batch file only")
    assert from_id is not None and to_id is not None and amount is not None  # TransferCommand
    service = ledger_from(ctx).service
    if pending:
        receipt = service.transfer(
            from_id, to_id, amount, pending=True, timeout_s=timeout, metadata=metadata_of(meta),
            command_id=idempotency_key,
        )  # fmt: skip
        o = receipt.outcome
        _report(receipt, as_json, f"reserved {o['amount']} {o['currency']} "
                f"(transfer {o['transfer_id']}, pending, expires {o['expires_at'] or 'never'}); "
                f"{_balance_line(o['from'])}; {_balance_line(o['to'])}")  # fmt: skip
        return
    receipt = service.transfer(
        from_id, to_id, amount, metadata=metadata_of(meta), command_id=idempotency_key
    )
    o = receipt.outcome
    _report(receipt, as_json, f"transferred {o['amount']} {o['currency']} "
            f"(transfer {o['transfer_id']}); {_balance_line(o['from'])}; "
            f"{_balance_line(o['to'])}")  # fmt: skip


TransferId = Annotated[
    str, typer.Argument(help="A pending transfer's id, as `transfer --pending` printed it.")
]


@accounts_app.command()
def post(
    ctx: typer.Context,
    transfer_id: TransferId,
    amount: Annotated[
        str | None,
        typer.Option(
            "--amount",
            metavar="AMOUNT",
            parser=positive_amount,
            help="Move only this much (at most the amount pending) and release the rest. "
            "Default: all of it.",
        ),
    ] = None,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Post a pending transfer: move its money (all, or --amount of it), releasing the rest of
    the reservation. Refused once it is posted, voided or past its timeout."""
    receipt = ledger_from(ctx).service.post_transfer(
        transfer_id, amount, command_id=idempotency_key
    )
    o = receipt.outcome
    _report(receipt, as_json, f"posted {o['amount']} of {o['pending_amount']} {o['currency']} "
            f"(transfer {o['transfer_id']}); {_balance_line(o['from'])}; "
            f"{_balance_line(o['to'])}")  # fmt: skip


@accounts_app.command()
def void(
    ctx: typer.Context,
    transfer_id: TransferId,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Void a pending transfer: release its reservation; nothing moves. Refused once it is
    posted, voided or past its timeout."""
    receipt = ledger_from(ctx).service.void_transfer(transfer_id, command_id=idempotency_key)
    o = receipt.outcome
    _report(receipt, as_json, f"voided transfer {o['transfer_id']}, released "
            f"{o['pending_amount']} {o['currency']}; {_balance_line(o['from'])}; "
            f"{_balance_line(o['to'])}")  # fmt: skip


@accounts_app.command()
def close(
    ctx: typer.Context,
    account_id: AccountId,
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Close an account; its balance must be zero."""
    receipt = ledger_from(ctx).service.close_account(account_id, command_id=idempotency_key)
    _report(receipt, as_json, f"closed {account_id}")


Reason = Annotated[
    str,
    typer.Option("--reason", help="Why (kept in the account's events; 1-500 characters)."),
]


@accounts_app.command()
def limit(
    ctx: typer.Context,
    account_id: AccountId,
    overdraft_limit: Annotated[
        str,
        typer.Argument(
            parser=positive_amount,
            help='The balance may go down to minus this; "0" removes the overdraft.',
        ),
    ],
    idempotency_key: IdempotencyKey = None,
    as_json: JsonFlag = False,
) -> None:
    """Set an account's overdraft limit. Lowering it below the current overdraft is allowed and
    blocks further debits."""
    service = ledger_from(ctx).service
    receipt = service.set_overdraft_limit(account_id, overdraft_limit, command_id=idempotency_key)
    account = receipt.outcome["account"]
    _report(receipt, as_json, f"{account_id} overdraft limit {account['overdraft_limit']} "
            f"{account['currency']}; available {account['available']}")  # fmt: skip


def _freeze_command(freeze: bool, doc: str) -> Callable[..., None]:
    """Freeze and unfreeze differ only in the service method and the word: one body."""

    def command(
        ctx: typer.Context,
        account_id: AccountId,
        reason: Reason,
        idempotency_key: IdempotencyKey = None,
        as_json: JsonFlag = False,
    ) -> None:
        service = ledger_from(ctx).service
        handle = service.freeze_account if freeze else service.unfreeze_account
        receipt = handle(account_id, reason, command_id=idempotency_key)
        _report(receipt, as_json, f"{'froze' if freeze else 'unfroze'} {account_id}")

    command.__doc__ = doc
    return command


accounts_app.command("freeze")(_freeze_command(True,
    "Freeze an account: withdrawals, outgoing transfers and closing are refused until it is "
    "unfrozen; deposits and incoming transfers still land."))  # fmt: skip
accounts_app.command("unfreeze")(_freeze_command(False,
    "Let a frozen account be debited again."))  # fmt: skip


MinVersion = Annotated[
    int,
    typer.Option(
        "--min-version",
        metavar="VERSION",
        min=0,
        help="Read-your-writes: answer as of at least this account version (from a write).",
    ),
]


@accounts_app.command()
def balance(
    ctx: typer.Context,
    account_id: AccountId,
    min_version: MinVersion = 0,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="INSTANT",
            help="As it was at this RFC 3339 instant (2026-11-30T23:59:59Z), from the events.",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show an account's balance (from the read model; with --as-of, as it was then)."""
    ledger = ledger_from(ctx)
    if as_of is None:
        account = ledger.queries.balance(account_id, min_version)
    else:
        instant = parse_as_of(as_of)
        account = balance_as_of(ledger.events, account_id, instant, now=ledger.service.clock())
    if as_json:
        print_json(account)
    else:
        when = f", as of {account['as_of']}" if "as_of" in account else ""
        out.print(escape(f"{_balance_line(account)} ({account['type']}, {account['status']}, "
                         f"owner {account['owner']}, version {account['version']}"
                         f"{when})"))  # fmt: skip


@accounts_app.command("statement")
def statement_command(
    ctx: typer.Context,
    account_id: AccountId,
    from_: Annotated[
        str, typer.Option("--from", metavar="WHEN", help="A date (2026-11-01) or an instant.")
    ],
    to: Annotated[
        str, typer.Option("--to", metavar="WHEN", help="A date or an instant; included.")
    ],
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV for a spreadsheet.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """An account's statement: the opening balance, every movement of the balance in the period
    with the balance after it, the totals in and out, and the closing balance."""
    ledger = ledger_from(ctx)
    start, end = parse_period(from_, to)
    found = statement(ledger.events, account_id, start, end, now=ledger.service.clock())
    if as_csv:
        sys.stdout.write(statement_csv(found))
        return
    view = describe_statement(found)
    if as_json:
        print_json(view)
        return
    currency = view["currency"]
    title = f"{account_id}: {view['from']} to {view['to']}"
    table = Table("ver", "recorded at", "kind", "description", "amount", "balance",
                  "counterparty", title=title)  # fmt: skip
    table.add_row("", view["from"], "", "opening balance", "", view["opening_balance"], "")
    for line in view["lines"]:
        table.add_row(str(line["version"]), line["recorded_at"], line["kind"],
                      escape(line["description"]), line["amount"], line["balance_after"],
                      line["counterparty"] or "")  # fmt: skip
    table.add_row("", view["to"], "", "closing balance", "", view["closing_balance"], "")
    out.print(table)
    out.print(f"in {view['total_in']} {currency}, out {view['total_out']} {currency}, "
              f"closing balance {view['closing_balance']} {currency}")  # fmt: skip


@accounts_app.command()
def history(
    ctx: typer.Context,
    account_id: AccountId,
    after_version: Annotated[
        int, typer.Option(metavar="VERSION", min=0, help="Start after this version.")
    ] = 0,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=MAX_READ_LIMIT, help="At most this many.")
    ] = 100,
    min_version: MinVersion = 0,
    as_json: JsonFlag = False,
) -> None:
    """List an account's money movements with the balance after each."""
    entries = ledger_from(ctx).queries.history(account_id, after_version, limit, min_version)
    if as_json:
        print_json(entries)
        return
    table = Table("ver", "recorded at", "kind", "amount", "balance", "counterparty")
    for e in entries:
        table.add_row(str(e["version"]), e["recorded_at"], e["kind"], e["amount"],
                      e["balance_after"], e["counterparty"] or "")  # fmt: skip
    out.print(table)


@accounts_app.command()
def pending(
    ctx: typer.Context,
    account_id: Annotated[
        str | None, typer.Argument(help="Only this account's (either side); default: all.")
    ] = None,
    limit: Annotated[
        int, typer.Option(metavar="N", min=1, max=MAX_LISTED, help="At most this many.")
    ] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List open pending transfers: what each reserves, between whom, until when. An overdue
    one is past its timeout (it reserves nothing more; its expiry is about to be recorded)."""
    ledger = ledger_from(ctx)
    holds = open_holds(ledger.service, ledger.reads, account_id, limit)
    if as_json:
        print_json(holds)
        return
    table = Table()
    for header in ("transfer", "from", "to", "amount", "expires at"):
        table.add_column(header, overflow="fold")  # ids whole, however narrow the terminal
    for h in holds:
        expiry = (h["expires_at"] or "never") + (" (overdue)" if h["overdue"] else "")
        table.add_row(h["transfer_id"], h["from_account_id"], h["to_account_id"],
                      f"{h['amount']} {h['currency']}", expiry)  # fmt: skip
    out.print(table if holds else "no open pending transfers")


@accounts_app.command()
def totals(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Bank-wide totals per currency: open accounts and the sum of all balances."""
    rows = ledger_from(ctx).queries.totals()
    if as_json:
        print_json(rows)
        return
    table = Table("currency", "accounts open", "sum of balances")
    for r in rows:
        table.add_row(r["currency"], str(r["accounts_open"]), r["balance"])
    out.print(table)


@accounts_app.command()
def events(
    ctx: typer.Context,
    aggregate: Annotated[
        str | None, typer.Option(metavar="ACCOUNT_ID", help="Only this stream (account id).")
    ] = None,
    after: Annotated[
        int, typer.Option(metavar="POSITION", help="Global position to start after.", min=0)
    ] = 0,
    limit: Annotated[
        int, typer.Option(metavar="N", help="At most this many events.", min=1, max=MAX_READ_LIMIT)
    ] = 100,
    as_json: JsonFlag = False,
) -> None:
    """List stored events: the global feed, or one stream."""
    service = ledger_from(ctx).service
    found = (
        service.store.read_stream(aggregate, limit=limit)
        if aggregate
        else service.events(after, limit)
    )
    rows = [
        {"position": e.position, "aggregate_id": e.aggregate_id, "version": e.version,
         "event_type": e.event_type, "event_id": e.event_id, "data": dict(e.data),
         "metadata": dict(e.metadata)}
        for e in found
    ]  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table("pos", "stream", "ver", "event", "data")
    for r in rows:
        table.add_row(str(r["position"]), str(r["aggregate_id"]), str(r["version"]),
                      str(r["event_type"]),
                      json.dumps(r["data"], sort_keys=True))  # fmt: skip
    out.print(table)


@accounts_app.command()
def demo(
    store: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Store URL for the demo; a fresh temporary SQLite file by default.",
        ),
    ] = None,
) -> None:
    """Show each guarantee on a real store: atomic transfers, no overdraft, idempotent retries."""
    from eventbank.cli.demo import run_demo

    run_demo(out, store)
