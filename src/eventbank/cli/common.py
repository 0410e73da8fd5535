"""What every CLI command shares: settings, output, option types, the command class, opening
the ledger."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperCommand

from eventbank.domain.errors import InvalidInput
from eventbank.engines.sqlite.connection import NoSuchStore
from eventbank.wiring import Ledger, open_ledger

out = Console(highlight=False)

NEGATIVE_NUMBER = re.compile(r"-[0-9.]")  # no option of eventbank's starts so


def positive_amount(text: str) -> str:
    """An amount as typed, refused at once if it is negative: the ledger parses the rest against
    the account's currency."""
    if text.strip().startswith("-"):
        raise typer.BadParameter(f"amounts are positive; got {text!r}")
    return text


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdempotencyKey = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        metavar="KEY",
        help="Command id; repeating it with the same parameters replays the first outcome "
        "instead of moving money again. Generated when omitted.",
    ),
]
AccountId = Annotated[str, typer.Argument(help="Account id: 1-64 letters, digits, _ . : -")]
Metadata = Annotated[
    list[str] | None,
    typer.Option(
        "--meta",
        metavar="KEY=VALUE",
        help="Your own metadata, stored in the event and searchable (repeat for more keys; "
        "at most 20).",
    ),
]


def metadata_of(pairs: list[str] | None) -> dict[str, str] | None:
    """``--meta KEY=VALUE`` options as a dict (the ledger checks the limits)."""
    if not pairs:
        return None
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--meta takes KEY=VALUE, got {pair!r}")
        if key in found:
            raise InvalidInput(f"--meta key {key!r} is given twice")
        found[key] = value
    return found


Amount = Annotated[
    str, typer.Argument(parser=positive_amount, help='Decimal amount, e.g. "80" or "80.00".')
]


class Command(TyperCommand):
    """Every eventbank command (``cli/__init__.py`` makes it so): plain help, ``ACCOUNT_ID`` and
    ``--owner OWNER`` rather than Typer's ``{account_id}`` and ``--owner <str>``; and a negative
    number read as an argument, so that ``withdraw alice -5`` is refused as an amount (exit 2,
    "amounts are positive") rather than as an unknown option ``-5``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and _takes_value(param) and param.name:
                param.metavar = param.name.upper()

    # ctx: Any, as Typer's own Click context class is private (typer._click)
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = f"{param.metavar}{'...' if param.nargs != 1 else ''}"
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                sections["Arguments"].append((param.metavar or "", record[1]))
            else:
                sections["Options"].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not ctx.ignore_unknown_options and any(NEGATIVE_NUMBER.match(a) for a in args):
            args = self._negative_numbers_as_arguments(ctx, args)
        return super().parse_args(ctx, args)

    def _negative_numbers_as_arguments(self, ctx: Any, args: list[str]) -> list[str]:
        """The options first, then ``--`` and the arguments in their order: after ``--`` Click
        reads ``-5`` as an argument; an option's value (``--initial-deposit -5``) stays its own."""
        with_value = {
            opt
            for param in self.get_params(ctx)
            if param.param_type_name == "option" and _takes_value(param)
            for opt in param.opts
        }
        options: list[str] = []
        arguments: list[str] = []
        rest = iter(args)
        for arg in rest:
            if arg == "--":
                arguments += rest
            elif arg.startswith("-") and len(arg) > 1 and not NEGATIVE_NUMBER.match(arg):
                options.append(arg)
                if arg in with_value:
                    if (value := next(rest, None)) is None:
                        return args  # as typed: Click says the option lacks its value
                    options.append(value)
            else:
                arguments.append(arg)
        return [*options, "--", *arguments]


def _takes_value(param: Any) -> bool:
    return not (getattr(param, "is_flag", False) or getattr(param, "count", False))


@dataclass(frozen=True)
class Settings:
    store_url: str
    read_store_url: str | None


def settings_of(ctx: typer.Context) -> Settings:
    """The global options; the root callback sets them before any command runs."""
    settings = ctx.find_object(Settings)
    if settings is None:
        raise RuntimeError("the global options were not parsed")
    return settings


def ledger_from(ctx: typer.Context, *, create: bool = False) -> Ledger:
    """Open the ledger named by the global options; closed when the command ends. Only
    ``create`` (``init``) makes a store that is not there: any other command run from another
    directory would otherwise make an empty one, and then say the account does not exist."""
    settings = settings_of(ctx)
    try:
        ledger = open_ledger(
            settings.store_url, settings.read_store_url, channel="cli", create=create
        )
    except NoSuchStore as exc:
        raise NoSuchStore(exc.path, hint="run `eventbank init`, or pass --store") from None
    ctx.call_on_close(ledger.close)
    return ledger


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))
