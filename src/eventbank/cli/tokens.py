"""``eventbank tokens add|list|revoke``: the API tokens of the HTTP service, kept as hashes in a
JSON file that a running ``eventbank serve`` re-reads within seconds of a change."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from eventbank.cli.common import JsonFlag, out, print_json
from eventbank.http.auth import (
    PERMISSIONS,
    LastAdminToken,
    add_token,
    list_tokens,
    revoke_token,
)

DEFAULT_TOKENS_FILE = Path("eventbank-tokens.json")

TokensFile = Annotated[
    Path,
    typer.Option(
        "--tokens-file",
        metavar="FILE",
        envvar="EVENTBANK_TOKENS_FILE",
        help="JSON file of API token hashes (created with an admin token on first start).",
    ),
]

tokens_app = typer.Typer(no_args_is_help=True)


@tokens_app.command("add")
def tokens_add(
    name: Annotated[
        str, typer.Argument(help="Who or what the token is for: 1-64 letters, digits, _ . : @ -")
    ],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(PERMISSIONS)}.")],
    tokens_file: TokensFile = DEFAULT_TOKENS_FILE,
) -> None:
    """Create an API token, printed once.

    Only its hash is stored; a running server accepts it within seconds."""
    secret = add_token(tokens_file, name, role)
    out.print(f"{role} token for {name} (shown once):", markup=False)
    print(secret)


@tokens_app.command("list")
def tokens_list(tokens_file: TokensFile = DEFAULT_TOKENS_FILE, as_json: JsonFlag = False) -> None:
    """List tokens: name, role, created, last used.

    Never the secret or its hash. Last use is written to the file by the server at most once a
    minute, and when it stops; "-" where the file does not say."""
    tokens = list_tokens(tokens_file)
    if as_json:
        print_json([asdict(token) for token in tokens])
        return
    table = Table("name", "role", "created", "last used")
    for token in tokens:
        table.add_row(token.name, token.role, token.created_at or "-", token.last_used_at or "-")
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="The token's name, as `tokens list` shows it.")],
    tokens_file: TokensFile = DEFAULT_TOKENS_FILE,
    force: Annotated[
        bool, typer.Option("--force", help="Revoke even the file's last admin token.")
    ] = False,
) -> None:
    """Revoke a token: a running server refuses it within seconds.

    The file's last admin token is kept unless --force (a server that starts with no admin token
    makes a new one)."""
    try:
        revoked = revoke_token(tokens_file, name, force=force)
    except LastAdminToken as refused:
        raise LastAdminToken(f"{refused}, or pass --force") from None
    out.print(f"revoked the {revoked.role} token {revoked.name}", markup=False)
