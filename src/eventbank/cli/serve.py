"""``eventbank serve``: the HTTP service (its API tokens: ``cli/tokens.py``)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated
from urllib.parse import urlsplit

import typer

from eventbank import __version__
from eventbank.cli.common import Settings, settings_of
from eventbank.cli.tokens import DEFAULT_TOKENS_FILE, TokensFile
from eventbank.cli.webhooks import DEFAULT_KEY_FILE, KeyFile
from eventbank.domain.errors import InvalidInput
from eventbank.engines.urls import default_read_store_url, without_password
from eventbank.http.auth import TokenStore, ensure_admin_token
from eventbank.http.commands import GROUP_WAIT_MS, MAX_GROUP_WAIT_MS
from eventbank.http.one_cpu import stay_on_one_cpu
from eventbank.ports.event_store import StoreError

serve_app = typer.Typer()

MAX_WORKERS = 64
SQLITE_WORKERS = (
    "SQLite has one writer per file, and two processes on one file measured slower than one"
)


@serve_app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    tokens_file: TokensFile = DEFAULT_TOKENS_FILE,
    json_logs: Annotated[
        bool, typer.Option("--json-logs/--text-logs", help="One JSON object per log line.")
    ] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=MAX_WORKERS,
            metavar="N",
            envvar="EVENTBANK_WORKERS",
            help="Server processes, each with its own connections and group commit, on one "
            "port (PostgreSQL or DynamoDB stores; SQLite serves from one).",
        ),
    ] = 1,
    webhook_key_file: KeyFile = DEFAULT_KEY_FILE,
    allow_http_webhooks: Annotated[
        bool, typer.Option(help="Development only: webhooks may target http:// on loopback.")
    ] = False,
    allow_private_webhooks: Annotated[
        bool, typer.Option(help="Webhooks may target private addresses (a trusted network).")
    ] = False,
    webhook_delivery: Annotated[
        bool,
        typer.Option(
            help="Deliver webhooks from this serve. Turn it off where `eventbank webhooks run` "
            "delivers instead: one deliverer per store, or receivers get duplicates."
        ),
    ] = True,
    inline_projection: Annotated[
        bool,
        typer.Option(
            "--inline-projection/--no-inline-projection",
            help="Project each command's events into the read models before it is answered, "
            "so reads show it at once. Off: the background runner projects them (it looks every "
            "0.2 s, so reads lag a moment) and commands answer sooner.",
        ),
    ] = True,
    ledger_process: Annotated[
        bool,
        typer.Option(
            "--ledger-process/--no-ledger-process",
            envvar="EVENTBANK_LEDGER_PROCESS",
            help="Decide and write single transfers (POST /transfers) in a second process, "
            "with an interpreter and a CPU of its own, while this one serves HTTP (SQLite or "
            "PostgreSQL, one server process).",
        ),
    ] = False,
    group_wait_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_GROUP_WAIT_MS,
            metavar="MS",
            envvar="EVENTBANK_GROUP_WAIT_MS",
            help="Concurrent POST /transfers run in groups. After a group of several, wait up "
            "to this long for the clients just answered to send again: more transfers/s from "
            "busy clients, up to this much more latency for traffic from many occasional "
            "ones. 0: never wait.",
        ),
    ] = GROUP_WAIT_MS,
    any_cpu: Annotated[
        bool,
        typer.Option(
            "--any-cpu",
            envvar="EVENTBANK_ANY_CPU",
            help="Let the server's threads run on any CPU. By default one server process "
            "keeps them on the CPU it starts on: one Python process runs one thread at a "
            "time, and handing that over between CPUs costs more (measured on PostgreSQL: "
            "20-38 % more transfers/s on one CPU). With --workers above 1 the processes run on "
            "any CPU.",
        ),
    ] = False,
) -> None:
    """Run the HTTP API (with a background projection runner and webhook delivery) until
    stopped."""
    import logging

    import uvicorn

    from eventbank.application.observability import Metrics, configure_json_logging
    from eventbank.gc_tuning import tune_gc_for_serving
    from eventbank.http.app import create_app, delivery_worker, start_delivery, webhook_service
    from eventbank.ledger_process import LedgerProcess
    from eventbank.wiring import open_ledger

    settings = settings_of(ctx)
    check_workers(workers, settings)
    check_ledger_process(ledger_process, workers, settings)
    check_port_free(host, port)  # before anything is created: a busy port changes nothing
    if json_logs:
        configure_json_logging()
    else:
        logging.basicConfig(level=logging.INFO)
    hooks = {"key_file": str(webhook_key_file.resolve()), "allow_http": allow_http_webhooks,
             "allow_private": allow_private_webhooks, "deliver": webhook_delivery}  # fmt: skip
    if workers > 1:
        serve_workers(workers, host, port, settings, tokens_file, json_logs, hooks,
                      inline_projection, group_wait_ms)  # fmt: skip
        return
    cpus = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpu = None if any_cpu else stay_on_one_cpu()  # before any thread starts, though all move
    metrics = Metrics()
    ledger = open_ledger(settings.store_url, settings.read_store_url, metrics=metrics,
                         channel="api", inline=inline_projection)  # fmt: skip
    admin = ensure_admin_token(tokens_file)
    tokens = TokenStore.load(tokens_file, os.environ.get("EVENTBANK_TOKENS"))
    webhooks = webhook_service(ledger, hooks)
    transfers = None
    if ledger_process:
        transfers = LedgerProcess(settings.store_url, settings.read_store_url,
                                  inline=inline_projection, json_logs=json_logs,
                                  cpus=cpus, metrics=metrics)  # fmt: skip
    stop = threading.Event()
    runner = threading.Thread(target=ledger.runner.run, args=(stop,), name="projections")
    runner.start()
    delivering = start_delivery(delivery_worker(webhooks, ledger, metrics, hooks), stop)
    last_used = threading.Thread(target=tokens.keep_recording_last_used, args=(stop,),
                                 name="tokens-last-used")  # fmt: skip
    last_used.start()
    with sigterm_as_exception():
        try:
            if transfers is not None:  # in the try: whatever fails, the child is stopped
                transfers.start()
            banner = start_banner(host, port, settings, tokens_file, admin, json_logs,
                                  inline_projection=inline_projection, cpu=cpu,
                                  ledger_process=transfers.pid if transfers else None)  # fmt: skip
            print(banner, file=sys.stderr, flush=True)
            app = create_app(ledger, tokens, metrics, webhooks=webhooks, ledger_process=transfers,
                             group_wait_ms=group_wait_ms)  # fmt: skip
            tune_gc_for_serving()
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=False,
                        timeout_graceful_shutdown=10)  # fmt: skip
        finally:
            stop.set()
            runner.join(timeout=10)
            if delivering is not None:
                delivering.join(timeout=15)
            last_used.join(timeout=10)  # it writes what it knows once more before it ends
            if transfers is not None:
                transfers.close()
            ledger.close()


def check_ledger_process(ledger_process: bool, workers: int, settings: Settings) -> None:
    """``--ledger-process`` runs the service's group-commit path in a child: one server process
    over SQLite or PostgreSQL."""
    if not ledger_process:
        return
    if workers > 1:
        raise InvalidInput("--ledger-process is for one server process: leave out --workers")
    if urlsplit(settings.store_url).scheme not in ("sqlite", "postgresql", "postgres"):
        raise InvalidInput("--ledger-process needs a SQLite or PostgreSQL store (DynamoDB "
                           "writes each transfer at once, with nothing to hand over)")  # fmt: skip


def check_workers(workers: int, settings: Settings) -> None:
    """``--workers`` above 1 needs stores that many processes may write at once."""
    if workers == 1:
        return
    read_store = settings.read_store_url or default_read_store_url(settings.store_url)
    if "sqlite" in (urlsplit(settings.store_url).scheme, urlsplit(read_store).scheme):
        raise InvalidInput(f"--workers {workers} needs a PostgreSQL or DynamoDB store: "
                           f"{SQLITE_WORKERS} (serve with --workers 1)")  # fmt: skip


def serve_workers(
    workers: int,
    host: str,
    port: int,
    settings: Settings,
    tokens_file: Path,
    json_logs: bool,
    hooks: dict[str, object],
    inline_projection: bool = True,
    group_wait_ms: float = GROUP_WAIT_MS,
) -> None:
    """``workers`` processes under uvicorn's supervisor, which restarts any that dies; each
    opens its own ledger (``http/app.py``: ``app_from_environment``). What must happen once
    happens here first: the stores are created or migrated, the token file checked, the admin
    token made and the banner printed."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from eventbank.application.webhooks import load_or_create_key
    from eventbank.http.app import STARTUP_FAILURE, WORKER_APP, WORKER_SETTINGS_ENV
    from eventbank.wiring import open_ledger

    # A store that is down or invalid is one line and an exit code here, not N tracebacks.
    open_ledger(settings.store_url, settings.read_store_url, channel="api").close()
    admin = ensure_admin_token(tokens_file)
    TokenStore.load(tokens_file, os.environ.get("EVENTBANK_TOKENS"))  # a malformed file: exit 2
    load_or_create_key(Path(str(hooks["key_file"])))  # once: workers racing would make two keys
    banner = start_banner(host, port, settings, tokens_file, admin, json_logs, workers,
                          inline_projection=inline_projection)  # fmt: skip
    print(banner, file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="eventbank-serve-") as folder:
        os.environ[WORKER_SETTINGS_ENV] = json.dumps({
            "store_url": settings.store_url, "read_store_url": settings.read_store_url,
            "tokens_file": str(tokens_file.resolve()), "json_logs": json_logs, "webhooks": hooks,
            "inline_projection": inline_projection, "group_wait_ms": group_wait_ms,
            "runner_lock": str(Path(folder) / "projection-runner.lock"),
            "supervisor_pid": os.getpid(),
        })  # fmt: skip
        config = uvicorn.Config(WORKER_APP, factory=True, host=host, port=port,
                                workers=workers, log_config=None, access_log=False,
                                timeout_graceful_shutdown=10)  # fmt: skip
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()  # until SIGTERM or SIGINT; restarts a worker that dies
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise StoreError("a worker could not start (its log says why); stopped serving")


class Terminated(BaseException):
    """SIGTERM, as an exception in the main thread."""


@contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Let a SIGTERM unwind the block (its ``finally`` clauses run), then end the process as a
    SIGTERM does. Why: uvicorn shuts down gracefully on SIGTERM, then restores the handler it
    found and raises the signal again; with the default handler the process ended at once, and
    serve's own cleanup (the projection runner stopped, the stores closed, tokens' last use
    written) never ran."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; nor would a signal reach this one
        return

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, raise_terminated) or signal.SIG_DFL
    try:
        yield
    except Terminated:
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)  # now that everything is closed
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    workers: int = 1,
    *,
    inline_projection: bool = True,
    cpu: int | None = None,
    ledger_process: int | None = None,
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
    if workers > 1:
        lines.append(f"  workers      {workers} processes, each with its own group commit")
    if cpu is not None:
        lines.append(f"  cpu          {cpu}: the process's threads stay on it (--any-cpu: any)")
    if ledger_process is not None:
        lines.append(f"  ledger       process {ledger_process} decides and writes single transfers")
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
    if not inline_projection:
        lines.append("  projection   in the background only: reads may lag a command by a moment")
    kind = "one JSON object per line" if json_logs else "text"
    lines += [f"logs follow ({kind}); Ctrl+C stops", ""]
    return "\n".join(lines)
