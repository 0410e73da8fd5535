"""Routes for operators and their tools: health, readiness, metrics, stats and ``/whoami``."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventbank.application.observability import Metrics
from eventbank.http.auth import PERMISSIONS, Token
from eventbank.http.params import READ_ERRORS, Guard
from eventbank.http.schemas import Health, Stats, WhoAmI
from eventbank.wiring import Ledger


def operation_routes(
    ledger: Ledger, guard: Guard, metrics: Metrics, *, stall_after_s: float
) -> APIRouter:
    router = APIRouter(tags=["operations"])
    reader = guard("read")

    @router.get("/healthz", response_model=Health, response_model_exclude_none=True)
    def healthz():
        """The process is up."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=Health, response_model_exclude_none=True,
                responses={503: {"model": Health, "description": "Not ready"}})  # fmt: skip
    def readyz(response: Response):
        """Ready means able to serve: the event store answers and the projections are not
        stalled (lag over the limit). A parked stream (a poisoned event) does not make a replica
        unready, as every replica would share it: it is reported here (``status`` ``degraded``,
        ``parked_streams``), in metrics and by an alert."""
        checks = {}
        parked = None
        try:
            ledger.events.find_command("readyz-probe")
            checks["event_store"] = "ok"
            lag = ledger.runner.status()
            parked = len(lag.failures)
            checks["projections"] = "ok"
            if lag.lag_seconds > stall_after_s:
                checks["projections"] = f"stalled: {lag.lag_seconds} s behind"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            checks.setdefault("event_store", f"unreachable: {type(exc).__name__}")
            checks.setdefault("projections", "unknown")
        ready = all(v == "ok" for v in checks.values())
        response.status_code = 200 if ready else 503
        status = "unavailable" if not ready else "degraded" if parked else "ok"
        return {"status": status, "checks": checks, "parked_streams": parked}

    @router.get("/metrics", response_class=Response,
                responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})  # fmt: skip
    def prometheus_metrics():
        """Prometheus text exposition."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/whoami", tags=["dashboard"], response_model=WhoAmI, responses=READ_ERRORS)
    def whoami(token: Token = reader):
        """The presented token's name, role and what the role may do."""
        return {"name": token.name, "role": token.role,
                "permissions": sorted(PERMISSIONS[token.role])}  # fmt: skip

    @router.get("/stats", tags=["dashboard"], response_model=Stats, dependencies=[reader],
                responses=READ_ERRORS)  # fmt: skip
    def stats():
        """Open accounts, totals per currency, projection lag, and events and transfers per
        second over the last minutes (from at most a few thousand of the feed's last events)."""
        now = datetime.now(UTC)
        lag = ledger.runner.status()
        totals = ledger.queries.totals()
        return {
            "generated_at": now.isoformat(),
            "accounts_open": sum(t["accounts_open"] for t in totals),
            "totals": totals,
            "projection": {"checkpoint": lag.checkpoint, "lag_events": lag.lag_events,
                           "lag_capped": lag.lag_capped, "lag_seconds": lag.lag_seconds,
                           "parked_streams": len(lag.failures), "last_error": lag.last_error},
            "activity": ledger.queries.activity(lag.checkpoint, now),
        }  # fmt: skip

    return router
