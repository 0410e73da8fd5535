"""The FastAPI application: middleware, error handlers, and one router per resource.

Every POST takes an ``Idempotency-Key`` header (the command id; generated when absent, except
on ``POST /payrolls``, which requires one). A retry with the same key and body gets the first
response again (same status and body, plus the header ``Idempotent-Replayed: true``) and moves
no money; the same key with another body is a 422 ``idempotency_key_reused``. ``POST /tokens``
is the exception: it replays nothing, as that would keep the secret it shows once (tokens.py).
Request bodies over ``max_body_bytes`` are refused with 413.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import Gauge, Info
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventbank import __version__
from eventbank.application.holds import ExpirySweeper
from eventbank.application.observability import (
    Metrics,
    command_id,
    configure_json_logging,
    request_id,
)
from eventbank.application.payroll_service import PayrollService
from eventbank.application.webhooks import DeliveryWorker, WebhookService, load_or_create_key
from eventbank.domain.errors import EventbankError
from eventbank.gc_tuning import tune_gc_for_serving
from eventbank.http import problems
from eventbank.http.accounts import account_routes
from eventbank.http.activity import activity_routes
from eventbank.http.api_docs import api_docs_routes
from eventbank.http.audits import audit_routes
from eventbank.http.auth import TokenStore
from eventbank.http.commands import GROUP_WAIT_MS
from eventbank.http.dashboard import dashboard_routes
from eventbank.http.journal import journal_routes
from eventbank.http.json_bodies import RefuseDuplicateKeys
from eventbank.http.operations import operation_routes
from eventbank.http.params import permission_guard, problem_responses
from eventbank.http.payrolls import (
    MAX_PAYROLL_BYTES,
    RESUME_EVERY_S,
    PayrollRunner,
    payroll_routes,
)
from eventbank.http.schemas import Problem
from eventbank.http.tokens import token_routes
from eventbank.http.transfers import MAX_BATCH_BYTES, transfer_routes
from eventbank.http.webhooks import webhook_routes
from eventbank.ledger_process import LedgerProcess
from eventbank.ports.event_store import StoreUnavailable
from eventbank.wiring import Ledger, open_ledger

MAX_BODY_BYTES = 64 * 1024
SLOW_REQUEST_S = 0.5
log = logging.getLogger("eventbank.http")
access_log = logging.getLogger("eventbank.http.access")


def create_app(
    ledger: Ledger,
    tokens: TokenStore,
    metrics: Metrics,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    stall_after_s: float = 30.0,
    payroll_resume_every_s: float | None = RESUME_EVERY_S,
    slow_request_s: float = SLOW_REQUEST_S,
    webhooks: WebhookService | None = None,
    ledger_process: LedgerProcess | None = None,
    group_wait_ms: float = GROUP_WAIT_MS,
) -> FastAPI:
    """``payroll_resume_every_s``: how often unfinished payrolls are run again (a failed run is
    finished without a restart); None resumes them only at start. ``slow_request_s``: a request
    that takes longer is logged at INFO (``_Observe``). ``webhooks``: the subscriptions, whose
    routes are served when given (``serve`` gives them, with the key of their secrets); their
    delivery runs beside the projection runner, not here. ``ledger_process``: where concurrent
    plain transfers run together, when not in this process (``serve --ledger-process``).
    ``group_wait_ms``: the longest their runner waits for the clients it just answered
    (``serve --group-wait-ms``; http/commands.py ``Coalescer``)."""
    payrolls = PayrollService(ledger.service, reads=ledger.reads)
    saga_runner = PayrollRunner(payrolls, payroll_resume_every_s)
    sweeper = ExpirySweeper(ledger.service, ledger.reads)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        saga_runner.start()  # finish what a crash left unfinished, then resume periodically
        sweeper.start()  # record the expiry of pending transfers past their timeout
        try:
            yield
        finally:
            sweeper.stop()
            saga_runner.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="eventbank",
        version=__version__,
        description="An event-sourced core-banking ledger in which every money movement is ACID. "
        "Money is a decimal string in the account's currency. Errors are RFC 9457 problem+json "
        "with a stable `code`.",
        responses=problem_responses(500),
        docs_url=None,  # /docs and /redoc: api_docs.py, with no CDN
        redoc_url=None,
        # FastAPI's own OpenTelemetry hooks look up the global providers on every request;
        # eventbank's metrics and logs are its own (/metrics, JSON logs with request ids).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_exception_handler(EventbankError, problems.eventbank_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(HTTPException, problems.http_error)
    app.add_exception_handler(Exception, problems.unexpected_error)
    app.add_middleware(RefuseDuplicateKeys)  # inside the body limit, which bounds what it reads
    app.add_middleware(
        _BodyLimit,
        max_body_bytes=max_body_bytes,
        overrides={"/payrolls": MAX_PAYROLL_BYTES, "/transfers/batch": MAX_BATCH_BYTES},
    )

    app.add_middleware(_Observe, metrics=metrics, slow_s=slow_request_s)

    guard = permission_guard(tokens)
    # Routes are matched in the order included, and POST /transfers is the route most sent:
    # its router first saves trying the others on each transfer (no path is in two routers).
    app.include_router(transfer_routes(ledger, guard, ledger_process, group_wait_ms))
    app.include_router(account_routes(ledger, guard))
    app.include_router(journal_routes(ledger, guard))
    app.include_router(payroll_routes(payrolls, saga_runner, guard))
    app.include_router(audit_routes(ledger, guard))
    app.include_router(activity_routes(ledger, guard))
    app.include_router(operation_routes(ledger, guard, metrics, stall_after_s=stall_after_s))
    app.include_router(token_routes(tokens, guard))
    if webhooks is not None:
        app.include_router(webhook_routes(webhooks, guard))
    app.include_router(dashboard_routes())
    app.include_router(api_docs_routes(app))
    _document_problem_schema(app)
    return app


def _document_problem_schema(app: FastAPI) -> None:
    """Register the Problem body under components/schemas, where the responses refer to it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = (
                Problem.model_json_schema()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


class _Observe:
    """Request id, metrics and the access log, as plain ASGI (no task or stream per request).

    Sets ``request_id`` (the ``X-Request-ID`` header, else a fresh one; at most 64 characters)
    and ``command_id`` (the ``Idempotency-Key``) for everything the request runs and logs,
    answers with ``X-Request-ID``, and counts and times the request by route and status.

    The access line (``eventbank.http.access``, with method, route, status and duration, and the
    request and command ids) is written at INFO for a request answered 4xx or 5xx, or slower
    than ``slow_s``; at DEBUG otherwise, so an ordinary request costs no log line.
    ``logging.getLogger("eventbank.http.access").setLevel(logging.DEBUG)`` logs every request.
    Errors the service or a handler logs carry the request id either way.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, slow_s: float):
        self.app, self.metrics, self.slow_s = app, metrics, slow_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = key = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                rid = value.decode("latin-1")
            elif name == b"idempotency-key":
                key = value.decode("latin-1")
        rid = (rid or uuid.uuid4().hex)[:64]
        request_id.set(rid)
        command_id.set(key)
        rid_header = (b"x-request-id", rid.encode("latin-1"))
        status = 500  # unless the app starts an answer: it raised (the 500 is sent outside)
        started = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), rid_header]}
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, elapsed_s: float) -> None:
        method, metrics = scope["method"], self.metrics
        route = getattr(scope.get("route"), "path", "unmatched")
        metrics.child(metrics.http_requests, method, route, str(status)).inc()
        metrics.child(metrics.http_seconds, method, route).observe(elapsed_s)
        level = logging.INFO if status >= 400 or elapsed_s > self.slow_s else logging.DEBUG
        if access_log.isEnabledFor(level):
            access_log.log(level, "request", extra={"fields": {
                "method": method, "route": route, "status": status,
                "duration_ms": round(elapsed_s * 1000, 2)}})  # fmt: skip


class _BodyLimit:
    """Refuse bodies over the limit before the app reads them, declared length or streamed."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, overrides: dict[str, int]):
        self.app, self.max_body_bytes, self.overrides = app, max_body_bytes, overrides

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.overrides.get(scope["path"], self.max_body_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            request = Request(scope, receive)
            response = problems.problem(
                413, "request_too_large", f"request body over {limit} bytes", request
            )
            return await response(scope, receive, send)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, counting_receive, send)


# ------------------------------------------------------------ `eventbank serve --workers N`

WORKER_APP = "eventbank.http.app:app_from_environment"
WORKER_SETTINGS_ENV = "EVENTBANK_SERVE_WORKER"  # JSON, set by `serve` for its worker processes
WORKER_STORE_WAIT_S = 30.0  # a worker (re)started while the store is down waits this long
ELECTION_RETRY_S = 1.0  # how soon a worker takes over the projection runner of one that died
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that cannot start: the supervisor stops


def app_from_environment() -> FastAPI:
    """The app of one worker process of ``eventbank serve --workers N`` (uvicorn's factory).

    Each worker is a fresh interpreter (uvicorn spawns, it does not fork), so nothing is shared
    with its parent or siblings: it opens its own ledger (its own connection pool and group
    commit), token store and metrics registry. ``serve`` has already created or migrated the
    stores, made the admin token and printed the banner, once, and passes its settings in
    ``EVENTBANK_SERVE_WORKER``. Each worker adds:

    - one projection runner per ``serve``, not per worker: the worker holding an exclusive
      ``flock`` on ``runner_lock`` runs it; when that worker dies the kernel releases the lock
      and another takes over within ``ELECTION_RETRY_S``. Every worker projects inline.
    - ``X-Served-By: <pid>`` on every response, and ``eventbank_worker_info{pid}`` and
      ``eventbank_worker_runs_projections`` in ``/metrics``, which describes this worker only;
    - on Linux, a SIGTERM from the kernel when ``serve`` dies, however it dies.
    """
    settings = json.loads(os.environ[WORKER_SETTINGS_ENV])
    _stop_with_supervisor(settings["supervisor_pid"])
    if settings["json_logs"]:
        configure_json_logging()
    else:
        logging.basicConfig(level=logging.INFO)
    metrics = Metrics()
    try:
        ledger = _open_worker_ledger(settings, metrics)
        tokens = TokenStore.load(Path(settings["tokens_file"]), os.environ.get("EVENTBANK_TOKENS"))
    except StoreUnavailable:
        raise  # the supervisor starts the worker again: the store may be back by then
    except EventbankError as exc:  # the same on every restart: stop serving rather than loop
        log.error("worker %s cannot start: %s", os.getpid(), exc)
        raise SystemExit(STARTUP_FAILURE) from None
    webhooks = webhook_service(ledger, settings["webhooks"])
    pid = str(os.getpid())
    app = create_app(ledger, tokens, metrics, webhooks=webhooks,
                     group_wait_ms=settings.get("group_wait_ms", GROUP_WAIT_MS))  # fmt: skip
    app.add_middleware(_ServedBy, pid=pid)
    Info("eventbank_worker", "The worker process that answered this scrape.",
         registry=metrics.registry).info({"pid": pid})  # fmt: skip
    elected = Gauge(
        "eventbank_worker_runs_projections",
        "1 while this worker runs its serve's background projection runner.",
        registry=metrics.registry,
    )
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_run_projections_if_elected, name="projections",
                             args=(ledger, Path(settings["runner_lock"]), elected, stop,
                                   delivery_worker(webhooks, ledger, metrics,
                                                   settings["webhooks"]))),
            threading.Thread(target=tokens.keep_recording_last_used, args=(stop,),
                             name="tokens-last-used"),
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        try:
            async with inner(asgi_app) as state:
                yield state
        finally:
            stop.set()
            for thread in threads:
                await asyncio.to_thread(thread.join, 10)
            ledger.close()
            if os.getppid() != settings["supervisor_pid"]:  # serve died first: tidy up for it
                shutil.rmtree(Path(settings["runner_lock"]).parent, ignore_errors=True)

    app.router.lifespan_context = lifespan
    tune_gc_for_serving()
    return app


def _stop_with_supervisor(supervisor_pid: int) -> None:
    """On Linux, have the kernel send this worker SIGTERM (a graceful stop) when ``serve`` dies,
    even by SIGKILL: a worker left without its supervisor would go on holding the port."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _open_worker_ledger(settings: dict[str, Any], metrics: Metrics) -> Ledger:
    """The worker's own ledger; a store that is down (a worker restarted during an outage) is
    waited for, up to ``WORKER_STORE_WAIT_S``."""
    deadline = time.monotonic() + WORKER_STORE_WAIT_S
    pause_s = 0.1
    while True:
        try:
            return open_ledger(settings["store_url"], settings["read_store_url"],
                               metrics=metrics, channel="api",
                               inline=settings.get("inline_projection", True))  # fmt: skip
        except StoreUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("store unavailable; the worker waits for it: %s", exc)
            time.sleep(pause_s)
            pause_s = min(2.0, pause_s * 2)


def webhook_service(ledger: Ledger, settings: dict[str, Any]) -> WebhookService:
    """The webhook subscriptions of ``ledger``'s store, as ``serve``'s options set them:
    ``key_file`` (the key of their secrets), ``allow_http``, ``allow_private``."""
    service = WebhookService(ledger.events, ledger.reads,
                             key=load_or_create_key(Path(settings["key_file"])),
                             allow_http=settings["allow_http"],
                             allow_private=settings["allow_private"])  # fmt: skip
    try:
        service.check_key()
    except EventbankError as exc:  # the ledger serves on; each delivery fails and says why
        log.error("webhooks: %s (key file %s)", exc, settings["key_file"])
    return service


def delivery_worker(
    webhooks: WebhookService, ledger: Ledger, metrics: Metrics, settings: dict[str, Any]
) -> DeliveryWorker | None:
    """This serve's webhook delivery, unless ``settings["deliver"]`` is off (delivery is then
    `eventbank webhooks run`'s, apart: one deliverer per store)."""
    if not settings["deliver"]:
        return None
    return DeliveryWorker(webhooks, ledger.events, metrics=metrics.registry)


def _run_projections_if_elected(
    ledger: Ledger,
    lock_path: Path,
    elected: Gauge,
    stop: threading.Event,
    delivery: DeliveryWorker | None,
) -> None:
    """Run the projection runner and the webhook delivery while holding the runner lock; until
    then try to take it every ``ELECTION_RETRY_S``. Several runners would be safe (every read
    store applies a change only to a row one version behind it and moves its checkpoint only
    forward), but each would poll the feed (on DynamoDB: its stream's shards, which throttle
    beyond two readers) and all would replay the same backlog after a crash; several deliverers
    would send each event once per process."""
    with open(lock_path, "a") as lock:
        while not stop.is_set():
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                stop.wait(ELECTION_RETRY_S)
                continue
            log.info("this worker runs the projection runner%s",
                     " and the webhook delivery" if delivery else "")  # fmt: skip
            elected.set(1)
            delivering = start_delivery(delivery, stop)
            try:
                ledger.runner.run(stop)
            finally:
                stop.set()  # the runner ends only when the worker stops
                if delivering is not None:
                    delivering.join(timeout=15)
                elected.set(0)
                fcntl.flock(lock, fcntl.LOCK_UN)


def start_delivery(
    delivery: DeliveryWorker | None, stop: threading.Event
) -> threading.Thread | None:
    """``delivery`` running in a thread of its own until ``stop`` is set (None: no delivery)."""
    if delivery is None:
        return None
    thread = threading.Thread(target=delivery.run, args=(stop,), name="webhooks")
    thread.start()
    return thread


class _ServedBy:
    """``X-Served-By: <pid>`` on every response: which worker answered."""

    def __init__(self, app: ASGIApp, pid: str):
        self.app, self.header = app, (b"x-served-by", pid.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_marked)
