"""RFC 9457 problem details: one error shape, a stable ``code``, the right status.

Errors are mapped by family (see domain/errors.py) with a few specific overrides, so a new error
class gets a sensible status without touching this file. Unexpected errors become a 500 whose
body says nothing about internals; the details go to the log with the request id.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from eventbank.application.observability import request_id
from eventbank.application.write_path import IdempotencyKeyReused
from eventbank.domain.errors import (
    Conflict,
    EventbankError,
    InvalidInput,
    NotFound,
    RuleViolation,
)
from eventbank.domain.json_input import MalformedJson
from eventbank.http.auth import Forbidden, TokenExists, TokenNotFound, Unauthorized
from eventbank.ports.event_store import StoreUnavailable

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("eventbank.http")

_STATUS_BY_CLASS: tuple[tuple[type[Exception], int], ...] = (
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (TokenNotFound, 404),  # InvalidInput to the CLI, which exits 2 for them as it always did
    (TokenExists, 409),
    (IdempotencyKeyReused, 422),
    (MalformedJson, 400),
    (StoreUnavailable, 503),
    (InvalidInput, 422),
    (RuleViolation, 409),
    (Conflict, 409),
)
TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
           405: "Method not allowed", 409: "Conflict", 413: "Request too large",
           422: "Unprocessable request", 500: "Internal error",
           503: "Service unavailable"}  # fmt: skip


_WORDS = {"json": "JSON", "id": "ID"}


def title_of(code: str) -> str:
    """The problem type's title, from its code (``insufficient_funds`` → "Insufficient funds"):
    RFC 9457 ties a title to the type, so one code always reads the same, and a client (the
    dashboard) can show what happened rather than the status's name."""
    text = " ".join(_WORDS.get(word, word) for word in code.split("_"))
    return text[:1].upper() + text[1:]


def problem(status: int, code: str, detail: str, request: Request, **extra: object) -> JSONResponse:
    body = {
        "type": f"/problems/{code}",
        "title": title_of(code),
        "status": status,
        "code": code,
        "detail": detail,
        "instance": request.url.path,
        "request_id": request_id.get(),
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def eventbank_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventbankError)
    status = next((s for cls, s in _STATUS_BY_CLASS if isinstance(exc, cls)), 500)
    if status == 500:
        return await unexpected_error(request, exc)
    details = getattr(exc, "problems", None)  # e.g. a payroll's line-by-line refusals
    extra = {"errors": details} if details else {}
    return problem(status, exc.code, str(exc), request, **extra)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
        for e in exc.errors()
    ]
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return problem(400, "malformed_json", "the request body is not valid JSON", request)
    detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
    return problem(422, "validation_error", detail, request, errors=errors)


# What FastAPI says when a body fails to parse other than as invalid JSON (e.g. nested so deep
# that the parser gives up): to the client that is malformed JSON all the same.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return problem(400, "malformed_json", "the request body could not be parsed as JSON "
                       "(malformed, or nested too deeply)", request)  # fmt: skip
    codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
    code = codes.get(exc.status_code, "http_error")
    return problem(exc.status_code, code, str(exc.detail), request)


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "an unexpected error occurred; see the server log "
                   "for this request id", request)  # fmt: skip
