"""``/events`` and ``/audits``: the raw event feed, and running and reading the ledger's audit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from eventbank.application.auditor import Auditor
from eventbank.http.params import READ_ERRORS, Guard, problem_responses
from eventbank.http.schemas import AuditRecord, AuditReport, EventPage
from eventbank.wiring import Ledger

MAX_PAGE = 1000


def audit_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/events", response_model=EventPage, dependencies=[guard("events")],
                responses=READ_ERRORS)  # fmt: skip
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

    @router.get("/audits/latest", response_model=AuditRecord, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def latest_audit():
        """The last audit run recorded in the audit trail (404 before the first)."""
        return ledger.queries.latest_audit()

    @router.post("/audits", response_model=AuditReport, dependencies=[guard("audit")],
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
