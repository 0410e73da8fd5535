"""``eventbank serve`` (the HTTP service) and ``eventbank tokens add`` (API credentials)."""

from __future__ import annotations

import errno
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

import typer

from eventbank import __version__
from eventbank.cli.common import Settings, out, settings_of
from eventbank.domain.errors import InvalidInput
from eventbank.engines.urls import default_read_store_url
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

    check_port_free(host, port)  # before anything is created: a busy port changes nothing
    if json_logs:
        configure_json_logging()
    else:
        logging.basicConfig(level=logging.INFO)
    settings = settings_of(ctx)
    metrics = Metrics()
    ledger = open_ledger(
        settings.store_url, settings.read_store_url, metrics=metrics, channel="api"
    )
    admin = ensure_admin_token(tokens_file)
    tokens = TokenStore.load(tokens_file, os.environ.get("EVENTBANK_TOKENS"))
    print(start_banner(host, port, settings, tokens_file, admin, json_logs), file=sys.stderr,
          flush=True)  # fmt: skip
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


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as the server will (``SO_REUSEADDR``) and let go again; a port that
    another process listens on is one line on stderr and exit 2, not a traceback from uvicorn."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)  # fmt: skip
    except socket.gaierror as exc:
        raise InvalidInput(f"cannot listen on {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InvalidInput(
                        f"port {port} is in use; pick another with --port N (make run PORT=N)"
                    ) from None
                raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def start_banner(
    host: str,
    port: int,
    settings: Settings,
    tokens_file: Path,
    admin: str | None,
    json_logs: bool,
) -> str:
    """What an operator needs on start, as one block: where to go, which store, the token."""
    browse = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    base = f"http://[{browse}]:{port}" if ":" in browse else f"http://{browse}:{port}"
    listen = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
    read_store = settings.read_store_url or default_read_store_url(settings.store_url)
    lines = [
        "",
        f"eventbank {__version__} serving on {listen}",
        f"  dashboard    {base}/",
        f"  API docs     {base}/docs  (ReDoc: {base}/redoc)",
    ]
    if admin is not None:
        lines += [
            f"  admin token  {admin}",
            f"               shown once: only its hash is kept, in {tokens_file.resolve()}",
            "               (more tokens: eventbank tokens add NAME --role teller)",
        ]
    else:
        lines.append(f"  API tokens   hashes in {tokens_file.resolve()}")
    lines += [
        f"  event store  {without_password(settings.store_url)}",
        f"  read models  {without_password(read_store)}",
    ]
    kind = "one JSON object per line" if json_logs else "text"
    lines += [f"logs follow ({kind}); Ctrl+C stops", ""]
    return "\n".join(lines)


def without_password(url: str) -> str:
    """``url`` fit to print: a password in it becomes ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


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
