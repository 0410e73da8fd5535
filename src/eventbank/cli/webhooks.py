"""``eventbank webhooks add|list|show|pause|resume|remove|replay|rotate-secret|run``: the
subscriptions that deliver the event feed to other systems, and a delivery worker of its own
for a deployment that runs it apart from ``eventbank serve``."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server
from rich.table import Table

from eventbank.application.webhooks import (
    DeliveryWorker,
    Subscription,
    WebhookService,
    load_or_create_key,
)
from eventbank.cli.common import JsonFlag, ledger_from, out, print_json
from eventbank.domain.errors import InvalidInput
from eventbank.wiring import Ledger

DEFAULT_KEY_FILE = Path("eventbank-webhook.key")

KeyFile = Annotated[
    Path,
    typer.Option(
        "--webhook-key-file",
        metavar="FILE",
        envvar="EVENTBANK_WEBHOOK_KEY_FILE",
        help="The key that encrypts webhook secrets at rest (made, 0600, if absent; "
        "EVENTBANK_WEBHOOK_KEY overrides it). Every process of one store needs the same key.",
    ),
]
AllowHttp = Annotated[
    bool,
    typer.Option("--allow-http", help="Development only: allow http:// and loopback targets."),
]
AllowPrivate = Annotated[
    bool,
    typer.Option(
        "--allow-private",
        help="Allow targets on private addresses (RFC 1918, fc00::/7, …); link-local never.",
    ),
]
WebhookId = Annotated[str, typer.Argument(help="The subscription's id, as `webhooks list` shows.")]

webhooks_app = typer.Typer(no_args_is_help=True)


def service_of(
    ledger: Ledger, key_file: Path, *, allow_http: bool = False, allow_private: bool = False
) -> WebhookService:
    """The subscriptions of ``ledger``'s store, their secrets under the key in ``key_file``
    (read, or made, only when a secret is encrypted or decrypted)."""
    return WebhookService(ledger.events, ledger.reads, key=lambda: load_or_create_key(key_file),
                          allow_http=allow_http, allow_private=allow_private)  # fmt: skip


def _show(subscriptions: list[Subscription], as_json: bool) -> None:
    rows = [_row(s) for s in subscriptions]
    if as_json:
        print_json(rows)
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)  # whole: the other commands take it
    table.add_column("url", overflow="fold")
    for name in ("types", "state", "description"):
        table.add_column(name)
    for s in subscriptions:
        state = "paused" if s.paused else "failing" if s.failing else "active"
        table.add_row(s.webhook_id, s.url, ", ".join(s.event_types) or "all", state,
                      s.description)  # fmt: skip
    out.print(table)


def _row(s: Subscription) -> dict[str, object]:
    return {"webhook_id": s.webhook_id, "url": s.url, "event_types": list(s.event_types),
            "description": s.description, "paused": s.paused, "failing": s.failing,
            "last_error": s.last_error, "created_at": s.created_at}  # fmt: skip


@webhooks_app.command("add")
def webhooks_add(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST the events: an https URL.")],
    event_type: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="TYPE", help="An event type to deliver (repeat); none: every type."
        ),
    ] = None,  # fmt: skip
    description: Annotated[str, typer.Option(help="What it is for (up to 500 characters).")] = "",
    key_file: KeyFile = DEFAULT_KEY_FILE,
    allow_http: AllowHttp = False,
    allow_private: AllowPrivate = False,
    as_json: JsonFlag = False,
) -> None:
    """Subscribe URL to the event feed; its signing secret is printed once."""
    service = service_of(ledger_from(ctx), key_file, allow_http=allow_http,
                         allow_private=allow_private)  # fmt: skip
    subscription, secret = service.add(url, tuple(event_type or ()), description)
    if as_json:
        print_json({**_row(subscription), "secret": secret})
        return
    out.print(f"webhook {subscription.webhook_id} to {url}; its signing secret (shown once):",
              markup=False, soft_wrap=True)  # fmt: skip
    print(secret)


@webhooks_app.command("list")
def webhooks_list(ctx: typer.Context, key_file: KeyFile = DEFAULT_KEY_FILE,
                  as_json: JsonFlag = False) -> None:  # fmt: skip
    """Every subscription: url, types, and whether it is active, paused or failing."""
    _show(service_of(ledger_from(ctx), key_file).list(), as_json)


@webhooks_app.command("show")
def webhooks_show(ctx: typer.Context, webhook_id: WebhookId,
                  key_file: KeyFile = DEFAULT_KEY_FILE) -> None:  # fmt: skip
    """One subscription and how its delivery goes (lag, last success, last error), as JSON."""
    service = service_of(ledger_from(ctx), key_file)
    print_json({**_row(service.get(webhook_id)), "status": service.status(webhook_id)})


def _change(ctx: typer.Context, webhook_id: str, key_file: Path, *, paused: bool) -> None:
    changed = service_of(ledger_from(ctx), key_file).update(webhook_id, paused=paused)
    out.print(f"webhook {changed.webhook_id} {'paused' if paused else 'resumed'}", markup=False)


@webhooks_app.command("pause")
def webhooks_pause(ctx: typer.Context, webhook_id: WebhookId,
                   key_file: KeyFile = DEFAULT_KEY_FILE) -> None:  # fmt: skip
    """Stop delivering until resumed; nothing is skipped: delivery goes on from where it was."""
    _change(ctx, webhook_id, key_file, paused=True)


@webhooks_app.command("resume")
def webhooks_resume(ctx: typer.Context, webhook_id: WebhookId,
                    key_file: KeyFile = DEFAULT_KEY_FILE) -> None:  # fmt: skip
    """Deliver again, from where delivery stopped."""
    _change(ctx, webhook_id, key_file, paused=False)


@webhooks_app.command("remove")
def webhooks_remove(ctx: typer.Context, webhook_id: WebhookId,
                    key_file: KeyFile = DEFAULT_KEY_FILE) -> None:  # fmt: skip
    """Stop delivering to it, for good."""
    service_of(ledger_from(ctx), key_file).remove(webhook_id)
    out.print(f"webhook {webhook_id} removed", markup=False)


@webhooks_app.command("replay")
def webhooks_replay(
    ctx: typer.Context,
    webhook_id: WebhookId,
    from_position: Annotated[
        int, typer.Option("--from-position", min=0, help="Deliver again from this feed position.")
    ],
    key_file: KeyFile = DEFAULT_KEY_FILE,
) -> None:
    """Deliver every event again from a feed position on (receivers de-duplicate by event id)."""
    service_of(ledger_from(ctx), key_file).replay(webhook_id, from_position)
    out.print(f"webhook {webhook_id} delivers again from position {from_position}", markup=False)


@webhooks_app.command("rotate-secret")
def webhooks_rotate(
    ctx: typer.Context,
    webhook_id: WebhookId,
    overlap_s: Annotated[
        int,
        typer.Option(
            "--overlap",
            min=0,
            max=604_800,
            help="Seconds the old secret still signs beside the new one.",
        ),
    ] = 86_400,  # fmt: skip
    key_file: KeyFile = DEFAULT_KEY_FILE,
) -> None:
    """A new signing secret, printed once; the old one keeps signing for the overlap."""
    print(service_of(ledger_from(ctx), key_file).rotate_secret(webhook_id, None, overlap_s))


@webhooks_app.command("run")
def webhooks_run(
    ctx: typer.Context,
    key_file: KeyFile = DEFAULT_KEY_FILE,
    allow_http: AllowHttp = False,
    allow_private: AllowPrivate = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65_535,
            help="Serve the delivery metrics (eventbank_webhook_*) for Prometheus on this "
            "port, at --metrics-host; none: no metrics.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="The interface --metrics-port listens on.")
    ] = "127.0.0.1",
) -> None:
    """Deliver the feed to every subscription until stopped (Ctrl-C or SIGTERM), for a
    deployment that runs delivery apart from `eventbank serve`. Run one per store."""
    ledger = ledger_from(ctx)
    load_or_create_key(key_file)  # a missing or bad key stops it here, not at each delivery
    service = service_of(ledger, key_file, allow_http=allow_http, allow_private=allow_private)
    registry = CollectorRegistry()
    if metrics_port is not None:
        try:
            start_http_server(metrics_port, metrics_host, registry=registry)
        except OSError as exc:
            raise InvalidInput(f"cannot serve metrics on {metrics_host}:{metrics_port}: "
                               f"{exc.strerror or exc}") from None  # fmt: skip
        out.print(f"metrics at http://{metrics_host}:{metrics_port}/metrics", markup=False)
    worker = DeliveryWorker(service, ledger.events, metrics=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.print("delivering webhooks; Ctrl-C stops", markup=False)
    try:
        worker.run(stop)
    except KeyboardInterrupt:
        stop.set()
