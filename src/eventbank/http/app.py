"""The FastAPI application: middleware, error handlers, and one router per resource.

Every POST takes an ``Idempotency-Key`` header (the command id; generated when absent, except
on ``POST /payrolls``, which requires one). A retry with the same key and body gets the first
response again (same status and body, plus the header ``Idempotent-Replayed: true``) and moves
no money; the same key with another body is a 422 ``idempotency_key_reused``. Request bodies
over ``max_body_bytes`` are refused with 413.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventbank import __version__
from eventbank.application.observability import Metrics, command_id, request_id
from eventbank.application.payroll_service import PayrollService
from eventbank.domain.errors import EventbankError
from eventbank.http import problems
from eventbank.http.accounts import account_routes
from eventbank.http.api_docs import api_docs_routes
from eventbank.http.audits import audit_routes
from eventbank.http.auth import TokenStore, permission_guard
from eventbank.http.dashboard import dashboard_routes
from eventbank.http.json_bodies import RefuseDuplicateKeys
from eventbank.http.operations import operation_routes
from eventbank.http.params import problem_responses
from eventbank.http.payrolls import (
    MAX_PAYROLL_BYTES,
    RESUME_EVERY_S,
    PayrollRunner,
    payroll_routes,
)
from eventbank.http.schemas import Problem
from eventbank.http.transfers import transfer_routes
from eventbank.wiring import Ledger

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("eventbank.http")


def create_app(
    ledger: Ledger,
    tokens: TokenStore,
    metrics: Metrics,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    stall_after_s: float = 30.0,
    payroll_resume_every_s: float | None = RESUME_EVERY_S,
) -> FastAPI:
    """``payroll_resume_every_s``: how often unfinished payrolls are run again (a failed run is
    finished without a restart); None resumes them only at start."""
    payrolls = PayrollService(ledger.service)
    saga_runner = PayrollRunner(payrolls, payroll_resume_every_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        saga_runner.start()  # finish what a crash left unfinished, then resume periodically
        try:
            yield
        finally:
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
    )
    app.add_exception_handler(EventbankError, problems.eventbank_error)
    app.add_exception_handler(RequestValidationError, problems.validation_error)
    app.add_exception_handler(HTTPException, problems.http_error)
    app.add_exception_handler(Exception, problems.unexpected_error)
    app.add_middleware(RefuseDuplicateKeys)  # inside the body limit, which bounds what it reads
    app.add_middleware(
        _BodyLimit, max_body_bytes=max_body_bytes, overrides={"/payrolls": MAX_PAYROLL_BYTES}
    )

    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
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

    guard = permission_guard(tokens)
    app.include_router(account_routes(ledger, guard))
    app.include_router(transfer_routes(ledger, guard))
    app.include_router(payroll_routes(payrolls, saga_runner, guard))
    app.include_router(audit_routes(ledger, guard))
    app.include_router(operation_routes(ledger, guard, metrics, stall_after_s=stall_after_s))
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
