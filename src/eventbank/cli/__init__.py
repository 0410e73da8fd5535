"""The ``eventbank`` command line: a thin Typer layer over the application service.

Exit codes: 0 done; 2 bad input or usage; 3 refused by a business rule; 4 conflict (retries
exhausted, or an idempotency key reused with other parameters); 5 ``audit`` found something;
1 anything unexpected. Messages go to stderr as one line at any terminal width, with no box and
no traceback for a user mistake.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from typer import TyperException as ClickError  # Typer vendors Click; its errors derive from it
from typer.core import TyperCommand

from eventbank.cli.accounts import accounts_app
from eventbank.cli.audit import audit_app
from eventbank.cli.bench import bench_app
from eventbank.cli.common import Command, Settings
from eventbank.cli.journal import journal_app
from eventbank.cli.payroll import payroll_app
from eventbank.cli.projections import projections_app
from eventbank.cli.serve import serve_app
from eventbank.cli.tokens import tokens_app
from eventbank.cli.transfers import transfers_app
from eventbank.cli.webhooks import webhooks_app
from eventbank.domain.errors import Conflict, EventbankError, InvalidInput, RuleViolation
from eventbank.engines.urls import DEFAULT_STORE_URL

EXIT_UNEXPECTED, EXIT_INVALID, EXIT_REFUSED, EXIT_CONFLICT = 1, 2, 3, 4

app = typer.Typer(
    help="eventbank: an event-sourced core-banking ledger in which every money movement is ACID.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # Click's plain help, no boxes; errors are formatted by main()
    add_completion=False,
)
app.add_typer(accounts_app)
app.add_typer(journal_app)
app.add_typer(serve_app)
app.add_typer(transfers_app)
app.add_typer(audit_app)
app.add_typer(bench_app)
app.add_typer(projections_app, name="projections", help="Read-model projections.")
app.add_typer(tokens_app, name="tokens", help="API tokens for the HTTP service.")
app.add_typer(payroll_app, name="payroll", help="Batch payments as resumable sagas.")
app.add_typer(webhooks_app, name="webhooks", help="Deliver the event feed to other systems.")


def _use_eventbank_commands(typer_app: typer.Typer) -> None:
    """Build every command, those of the sub-apps too, with common.Command: plain help, and
    negative amounts read as arguments."""
    for info in typer_app.registered_commands:
        if info.cls in (None, TyperCommand):  # a command that asked for a class keeps it
            info.cls = Command
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _use_eventbank_commands(group.typer_instance)


_use_eventbank_commands(app)


@app.callback()
def options(
    ctx: typer.Context,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            metavar="URL",
            envvar="EVENTBANK_STORE",
            help="Event store URL: sqlite:///relative.db, sqlite:////abs.db, postgresql://…, "
            "dynamodb://TABLE?endpoint_url=…",
        ),
    ] = DEFAULT_STORE_URL,
    read_store: Annotated[
        str | None,
        typer.Option(
            "--read-store",
            metavar="URL",
            envvar="EVENTBANK_READ_STORE",
            help="Read-model store URL; default: X.read.db beside a sqlite:///X.db event store.",
        ),
    ] = None,
) -> None:
    ctx.obj = Settings(store, read_store)


GLOBAL_OPTIONS = ("--store", "--read-store")
PAYROLL_SUBCOMMANDS = ("start", "status", "resume", "list", "--help")


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let ``--store``/``--read-store`` follow the subcommand too (``eventbank serve --store X``),
    by moving them before it, where the Typer callback reads them; and let ``eventbank payroll
    FILE`` mean ``payroll start FILE`` beside ``payroll status``/``resume``."""
    hoisted: list[str] = []
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in GLOBAL_OPTIONS:
            hoisted += [arg, next(args, "")]
        elif arg.startswith(tuple(f"{o}=" for o in GLOBAL_OPTIONS)):
            hoisted.append(arg)
        else:
            rest.append(arg)
    if rest[:1] == ["payroll"] and len(rest) > 1 and rest[1] not in PAYROLL_SUBCOMMANDS:
        rest.insert(1, "start")  # `eventbank payroll FILE --from X` starts one
    return hoisted + rest


def main() -> None:
    """Entry point: run the CLI, turning every error into one stderr line and an exit code."""
    try:
        code = app(
            args=hoist_global_options(sys.argv[1:]), prog_name="eventbank", standalone_mode=False
        )
    except ClickError as exc:  # usage: a missing argument, an unknown option, a bad value
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `eventbank`: the help, not an error
            print(exc.format_message(), file=sys.stderr)
        else:
            _fail("error", _usage_message(exc))
        sys.exit(exc.exit_code)
    except EventbankError as exc:
        prefix, code = next((p, c) for family, p, c in _OUTCOMES if isinstance(exc, family))
        _fail(prefix, str(exc))
        sys.exit(code)
    except typer.Abort:
        _fail("error", "aborted")
        sys.exit(EXIT_UNEXPECTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback to users
        _fail("unexpected error", f"{type(exc).__name__}: {exc}")
        sys.exit(EXIT_UNEXPECTED)
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(N) comes back as N


def _usage_message(exc: ClickError) -> str:
    ctx = getattr(exc, "ctx", None)
    hint = ""
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        hint = f" (see {ctx.command_path} {ctx.help_option_names[0]})"
    return exc.format_message() + hint


def _fail(prefix: str, message: str) -> None:
    """One line on stderr whatever the terminal's width (Rich would wrap it to fit)."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"{prefix}: {line}", file=sys.stderr, flush=True)


# error family -> (message prefix, exit code); the first match wins
_OUTCOMES = (
    (InvalidInput, "error", EXIT_INVALID),
    (RuleViolation, "refused", EXIT_REFUSED),
    (Conflict, "conflict", EXIT_CONFLICT),
    (EventbankError, "error", EXIT_UNEXPECTED),
)


if __name__ == "__main__":
    main()
