"""The FastAPI application: routes that parse, authenticate and format — nothing more.

Every POST takes an ``Idempotency-Key`` header (the command id; generated when absent). A retry
with the same key and body gets the first response again (same status and body, plus the header
``Idempotent-Replayed: true``) and moves no money; the same key with another body is a 422
``idempotency_key_reused``. Request bodies over ``max_body_bytes`` are refused with 413.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventbank import __version__
from eventbank.domain.errors import EventbankError
from eventbank.http import problems
from eventbank.http.auth import Token, TokenStore
from eventbank.http.dashboard import dashboard_routes
from eventbank.http.params import (
    READ_ERRORS,
    WRITE_ERRORS,
    IdempotencyKey,
    MinVersion,
    problem_responses,
)
from eventbank.http.payrolls import MAX_PAYROLL_BYTES, payroll_routes
from eventbank.http.schemas import (
    AccountView,
    CommandResult,
    EventPage,
    Health,
    MoneyRequest,
    MovementPage,
    OpenAccountRequest,
    Problem,
    TransferRequest,
    TransferView,
)
from eventbank.observability import Metrics, command_id, request_id
from eventbank.payroll import PayrollService
from eventbank.service import Receipt, current_actor
from eventbank.wiring import Ledger

MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 1000
log = logging.getLogger("eventbank.http")


def create_app(
    ledger: Ledger,
    tokens: TokenStore,
    metrics: Metrics,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    stall_after_s: float = 30.0,
) -> FastAPI:
    payrolls = PayrollService(ledger.service)
    saga_runner = ThreadPoolExecutor(1, thread_name_prefix="payroll")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        saga_runner.submit(payrolls.resume_all)  # finish what a crash left unfinished
        yield
        saga_runner.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        lifespan=lifespan,
        title="eventbank",
        version=__version__,
        description="An event-sourced core-banking ledger in which every money movement is ACID. "
        "Money is a decimal string in the account's currency. Errors are RFC 9457 problem+json "
        "with a stable `code`.",
        responses=problem_responses(500),
    )
    app.add_exception_handler(EventbankError, problems.eventbank_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(HTTPException, problems.http_error)
    app.add_exception_handler(Exception, problems.unexpected_error)
    app.add_middleware(
        _BodyLimit, max_body_bytes=max_body_bytes, overrides={"/payrolls": MAX_PAYROLL_BYTES}
    )

    @app.middleware("http")
    async def observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        request_id.set(rid[:64])
        command_id.set(request.headers.get("Idempotency-Key"))
        started = time.perf_counter()
        response = await call_next(request)
        elapsed_s = time.perf_counter() - started
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.http_seconds.labels(request.method, route).observe(elapsed_s)
        response.headers["X-Request-ID"] = rid[:64]
        log.info("request", extra={"fields": {
            "method": request.method, "route": route, "status": response.status_code,
            "duration_ms": round(elapsed_s * 1000, 2)}})  # fmt: skip
        return response

    bearer = HTTPBearer(auto_error=False, description="A token from `serve` or the token file.")

    def allowed(permission: str):  # type: ignore[no-untyped-def]
        async def check(
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
        ) -> Token:
            header = f"Bearer {credentials.credentials}" if credentials else None
            token = tokens.require(header, permission)
            current_actor.set(token.name)
            return token

        return Depends(check)

    def result(receipt: Receipt, response: Response) -> dict[str, Any]:
        command_id.set(receipt.command_id)
        if receipt.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return dict(receipt.outcome)

    service, queries = ledger.service, ledger.queries
    write = {"dependencies": [allowed("write")], "responses": WRITE_ERRORS,
             "response_model": CommandResult, "response_model_exclude_none": True,
             "response_model_by_alias": True}  # fmt: skip

    @app.post("/accounts", status_code=201, tags=["accounts"], **write)
    def open_account(body: OpenAccountRequest, response: Response, key: IdempotencyKey = None):
        """Open an account, optionally with an initial deposit."""
        return result(service.open_account(
            body.account_id, owner=body.owner, account_type=body.type, currency=body.currency,
            initial_deposit=body.initial_deposit, command_id=key), response)  # fmt: skip

    @app.get("/accounts/{account_id}", tags=["accounts"], response_model=AccountView,
             dependencies=[allowed("read")], responses=READ_ERRORS)  # fmt: skip
    def get_account(account_id: str, min_version: MinVersion = 0):
        """An account's balance and status, from the read model."""
        return queries.balance(account_id, min_version)

    @app.get("/accounts/{account_id}/transactions", tags=["accounts"],
             response_model=MovementPage, dependencies=[allowed("read")],
             responses=READ_ERRORS)  # fmt: skip
    def list_transactions(
        account_id: str,
        after_version: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        min_version: MinVersion = 0,
    ):
        """Money movements, oldest first, paginated by account version."""
        items = queries.history(account_id, after_version, limit, min_version)
        last = items[-1]["version"] if len(items) == limit else None
        return {"items": items, "next_after_version": last}

    @app.post("/accounts/{account_id}/deposits", status_code=201, tags=["money"], **write)
    def deposit(
        account_id: str, body: MoneyRequest, response: Response, key: IdempotencyKey = None
    ):
        """Deposit money from outside the bank."""
        return result(service.deposit(account_id, body.amount, command_id=key), response)

    @app.post("/accounts/{account_id}/withdrawals", status_code=201, tags=["money"], **write)
    def withdraw(
        account_id: str, body: MoneyRequest, response: Response, key: IdempotencyKey = None
    ):
        """Withdraw money; never below zero."""
        return result(service.withdraw(account_id, body.amount, command_id=key), response)

    @app.post("/accounts/{account_id}/close", tags=["accounts"], **write)
    def close_account(account_id: str, response: Response, key: IdempotencyKey = None):
        """Close an account whose balance is zero."""
        return result(service.close_account(account_id, command_id=key), response)

    @app.post("/transfers", status_code=201, tags=["money"], **write)
    def transfer(body: TransferRequest, response: Response, key: IdempotencyKey = None):
        """Move money between two accounts of one currency: both halves or neither."""
        return result(service.transfer(body.from_account_id, body.to_account_id, body.amount,
                                       command_id=key), response)  # fmt: skip

    @app.get("/transfers/{transfer_id}", tags=["money"], response_model=TransferView,
             dependencies=[allowed("read")], responses=READ_ERRORS)  # fmt: skip
    def get_transfer(transfer_id: str):
        """A transfer, once projected."""
        return queries.transfer(transfer_id)

    @app.get("/events", tags=["audit"], response_model=EventPage,
             dependencies=[allowed("events")], responses=READ_ERRORS)  # fmt: skip
    def list_events(
        after_position: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ):
        """The raw event feed in global order (auditors and admins)."""
        found = ledger.events.read_all(after_position, limit)
        items = [{"position": e.position, "event_id": e.event_id, "aggregate_id": e.aggregate_id,
                  "aggregate_type": e.aggregate_type, "version": e.version,
                  "event_type": e.event_type, "schema_version": e.schema_version,
                  "data": dict(e.data), "metadata": dict(e.metadata)} for e in found]  # fmt: skip
        last = found[-1].position if len(found) == limit else None
        return {"items": items, "next_after_position": last}

    @app.get("/healthz", tags=["operations"], response_model=Health)
    def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], response_model=Health,
             responses={503: {"model": Health, "description": "Not ready"}})  # fmt: skip
    def readyz(response: Response):
        """The event store answers and the projections are not stalled."""
        checks = {}
        try:
            ledger.events.find_command("readyz-probe")
            checks["event_store"] = "ok"
            lag = ledger.runner.status()
            stalled = lag.lag_seconds > stall_after_s or lag.failures
            checks["projections"] = "ok"
            if stalled:
                checks["projections"] = f"stalled: {lag.lag_seconds} s, {len(lag.failures)} parked"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            checks.setdefault("event_store", f"unreachable: {type(exc).__name__}")
            checks.setdefault("projections", "unknown")
        ready = all(v == "ok" for v in checks.values())
        response.status_code = 200 if ready else 503
        return {"status": "ok" if ready else "unavailable", "checks": checks}

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})  # fmt: skip
    def prometheus_metrics():
        """Prometheus text exposition."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.include_router(
        payroll_routes(payrolls, saga_runner, {"read": allowed("read"), "write": allowed("write")})
    )
    app.include_router(dashboard_routes(ledger, allowed))
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

    app.openapi = openapi  # type: ignore[method-assign]


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
