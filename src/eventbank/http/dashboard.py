"""The operator dashboard: a small page at ``/`` and the JSON routes it reads.

The page (``static/``: one HTML file, one script, one stylesheet; no build step, nothing fetched
from elsewhere) holds no data and is served without a token. It asks for a bearer token, keeps
it in the browser tab's ``sessionStorage`` and calls the JSON API with it like any client:

- ``GET /whoami`` — the token's name, role and permissions (the page shows what the role may do)
- ``GET /accounts`` — accounts in id order, ``?q=`` searches id and owner, ``?after=`` pages
- ``GET /accounts/{id}/events`` — the account's stored events with their chain hashes
- ``GET /stats`` — open accounts, totals per currency, projection lag, recent events/transfers
  per second from the feed's ``recorded_at``
- ``GET /audits/latest`` and ``POST /audits`` — the last recorded audit; run and record one
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from eventbank.audit import Auditor
from eventbank.http.auth import PERMISSIONS, Token
from eventbank.http.params import READ_ERRORS, problem_responses
from eventbank.http.schemas import AccountView, EventView
from eventbank.wiring import Ledger

STATIC = resources.files("eventbank.http") / "static"
_ASSETS = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
MAX_ACCOUNTS_PAGE = 200
MAX_EVENTS_PAGE = 1000


class WhoAmI(BaseModel):
    name: str
    role: str
    permissions: list[str]


class AccountPage(BaseModel):
    items: list[AccountView]
    next_after: str | None = Field(
        description="Pass as after for the next page; null when this is the last page."
    )


class StoredEvent(EventView):
    hash: str = Field(description="sha256 of the previous event's hash and this event.")


class StoredEventPage(BaseModel):
    items: list[StoredEvent]
    next_after_version: int | None


class CurrencyTotal(BaseModel):
    currency: str
    accounts_open: int
    balance: Annotated[str, Field(examples=["1250.00"])]


class ProjectionLag(BaseModel):
    checkpoint: int
    lag_events: int
    lag_capped: bool
    lag_seconds: float
    parked_streams: int
    last_error: str | None


class RateBucket(BaseModel):
    start: str
    events_per_s: float | None = Field(description="null: the sample does not cover it.")
    transfers_per_s: float | None


class Activity(BaseModel):
    bucket_seconds: int
    window_seconds: int
    sampled_events: int
    buckets: list[RateBucket]


class Stats(BaseModel):
    generated_at: str
    accounts_open: int
    totals: list[CurrencyTotal]
    projection: ProjectionLag
    activity: Activity


class AuditRecord(BaseModel):
    """One ``AuditCompleted`` event of the ``audit#trail`` stream."""

    version: int
    clean: bool
    streams: int
    events: int
    findings: dict[str, int] = Field(description="Count of findings by kind.")
    digest: str
    hash: str
    actor: str | None
    recorded_at: str | None


class Finding(BaseModel):
    kind: str
    stream: str | None
    version: int | None
    detail: str


class Books(BaseModel):
    balances: str
    deposits: str
    withdrawals: str


class AuditReport(BaseModel):
    clean: bool
    streams: int
    events: int
    findings: list[Finding]
    books: dict[str, Books]
    digest: str


def dashboard_routes(ledger: Ledger, allowed: Callable[[str], Any]) -> APIRouter:
    """The routes, each guarded by ``allowed(permission)`` (a dependency) where it needs one."""
    router = APIRouter()
    queries = ledger.queries
    reader, event_reader, auditor = allowed("read"), allowed("events"), allowed("audit")

    @router.get("/", include_in_schema=False)
    def index() -> Response:
        return asset("index.html")

    @router.get("/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in _ASSETS:
            raise HTTPException(404, f"no asset named {name!r}")
        return Response((STATIC / name).read_bytes(), headers=_HEADERS,
                        media_type=f"{_ASSETS[name]}; charset=utf-8")  # fmt: skip

    @router.get("/whoami", tags=["dashboard"], response_model=WhoAmI, responses=READ_ERRORS)
    def whoami(token: Token = reader):
        """The presented token's name, role and what the role may do."""
        return {"name": token.name, "role": token.role,
                "permissions": sorted(PERMISSIONS[token.role])}  # fmt: skip

    @router.get("/accounts", tags=["accounts"], response_model=AccountPage,
                dependencies=[reader], responses=READ_ERRORS)  # fmt: skip
    def list_accounts(
        q: Annotated[str, Query(max_length=64, description="Part of an id or owner.")] = "",
        after: Annotated[str, Query(max_length=64, description="The last id seen.")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_ACCOUNTS_PAGE)] = 50,
    ):
        """Accounts in id order from the read model; searches id and owner, any case."""
        found = queries.find_accounts(q, after, limit + 1)
        more = len(found) > limit
        return {"items": found[:limit], "next_after": found[limit - 1]["account_id"] if more
                else None}  # fmt: skip

    @router.get("/accounts/{account_id}/events", tags=["audit"], response_model=StoredEventPage,
                dependencies=[event_reader], responses=READ_ERRORS)  # fmt: skip
    def list_account_events(
        account_id: str,
        after_version: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 100,
    ):
        """An account's stored events with their chain hashes, oldest first, by version."""
        found = queries.account_events(account_id, after_version, limit)
        items = [{name: getattr(e, name) for name in StoredEvent.model_fields} for e in found]
        last = found[-1].version if len(found) == limit else None
        return {"items": items, "next_after_version": last}

    @router.get("/stats", tags=["dashboard"], response_model=Stats,
                dependencies=[reader], responses=READ_ERRORS)  # fmt: skip
    def stats():
        """Open accounts, totals per currency, projection lag, and events and transfers per
        second over the last minutes (from at most a few thousand of the feed's last events)."""
        now = datetime.now(UTC)
        lag = ledger.runner.status()
        totals = queries.totals()
        return {
            "generated_at": now.isoformat(),
            "accounts_open": sum(t["accounts_open"] for t in totals),
            "totals": totals,
            "projection": {"checkpoint": lag.checkpoint, "lag_events": lag.lag_events,
                           "lag_capped": lag.lag_capped, "lag_seconds": lag.lag_seconds,
                           "parked_streams": len(lag.failures), "last_error": lag.last_error},
            "activity": queries.activity(lag.checkpoint, now),
        }  # fmt: skip

    @router.get("/audits/latest", tags=["audit"], response_model=AuditRecord,
                dependencies=[reader], responses=READ_ERRORS)  # fmt: skip
    def latest_audit():
        """The last audit run recorded in the audit trail (404 before the first)."""
        return queries.latest_audit()

    @router.post("/audits", tags=["audit"], response_model=AuditReport,
                 dependencies=[auditor],
                 responses=problem_responses(401, 403, 413, 503))  # fmt: skip
    def run_audit():
        """Run the audit as `eventbank audit` does (chains, conservation, read models, after the
        projections catch up) and record it in the audit trail. Findings are in the body: a
        store with findings still answers 200."""
        ledger.runner.catch_up()
        audit = Auditor(ledger.events, ledger.reads)
        report = audit.run()
        audit.record(report)
        return report.as_dict()

    return router
