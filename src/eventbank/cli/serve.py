"""``eventbank serve`` (the HTTP service) and ``eventbank tokens add`` (API credentials)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from eventbank.cli.common import Settings, out
from eventbank.http.auth import PERMISSIONS, TokenStore, add_token, ensure_admin_token

serve_app = typer.Typer()

TokensFile = Annotated[
    Path,
    typer.Option(
        "--tokens-file",
        envvar="EVENTBANK_TOKENS_FILE",
        help="JSON file of API token hashes (created with an admin token on first start).",
    ),
]


@serve_app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    tokens_file: TokensFile = Path("eventbank-tokens.json"),
    json_logs: Annotated[
        bool, typer.Option("--json-logs/--text-logs", help="One JSON object per log line.")
    ] = True,
) -> None:
    """Run the HTTP API (with a background projection runner) until stopped."""
    import logging

    import uvicorn

    from eventbank.application.observability import Metrics, configure_json_logging
    from eventbank.http.app import create_app
    from eventbank.wiring import open_ledger

    if json_logs:
        configure_json_logging()
    else:
        logging.basicConfig(level=logging.INFO)
    settings = ctx.find_object(Settings)
    metrics = Metrics()
    ledger = open_ledger(
        settings.store_url, settings.read_store_url, metrics=metrics, channel="api"
    )
    if (admin := ensure_admin_token(tokens_file)) is not None:
        print(f"\nadmin token (shown once; only its hash is kept in {tokens_file}):\n"
              f"    {admin}\n", file=sys.stderr, flush=True)  # fmt: skip
    tokens = TokenStore.load(tokens_file, os.environ.get("EVENTBANK_TOKENS"))
    stop = threading.Event()
    runner = threading.Thread(target=ledger.runner.run, args=(stop,), name="projections")
    runner.start()
    try:
        uvicorn.run(create_app(ledger, tokens, metrics), host=host, port=port, log_config=None,
                    access_log=False, timeout_graceful_shutdown=10)  # fmt: skip
    finally:
        stop.set()
        runner.join(timeout=10)
        ledger.close()


tokens_app = typer.Typer(no_args_is_help=True)


@tokens_app.command("add")
def tokens_add(
    name: Annotated[str, typer.Argument(help="Who or what the token is for.")],
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(PERMISSIONS)}.")],
    tokens_file: TokensFile = Path("eventbank-tokens.json"),
) -> None:
    """Create an API token; it is printed once and only its hash is stored."""
    secret = add_token(tokens_file, name, role)
    out.print(f"{role} token for {name} (shown once):", markup=False)
    print(secret)
