"""``/events`` and ``/audits``: the raw event feed, and running and reading the ledger's audit.

An audit reads the whole store, so it is never run inside a request: ``POST /audits`` starts it
in the background and answers 202 at once with a job (``Location: /audits/{id}``), which
``GET /audits/{id}`` reports as running, done (with the report) or failed (with the error). One
audit runs at a time: a POST while one runs answers 202 with that one. Jobs live in the serving
process's memory, the last ``MAX_AUDIT_JOBS`` of them (a restart forgets them, and a running
one is lost); every finished audit is recorded in the audit trail, read at ``/audits/latest``.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from eventbank.application.auditor import Auditor
from eventbank.application.write_path import current_actor
from eventbank.domain.errors import NotFound
from eventbank.http.params import READ_ERRORS, Guard, problem_responses
from eventbank.http.schemas import AuditJob, AuditRecord, EventPage
from eventbank.wiring import Ledger

MAX_PAGE = 1000
MAX_AUDIT_JOBS = 20
log = logging.getLogger(__name__)


class AuditJobNotFound(NotFound):
    code = "audit_job_not_found"


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    status: str  # running | done | failed
    actor: str
    started_at: str
    finished_at: str | None = None
    report: dict[str, Any] | None = None
    error: str | None = None


class AuditJobs:
    """Audits in the background, one at a time; the last ``keep`` jobs are remembered."""

    def __init__(self, ledger: Ledger, keep: int = MAX_AUDIT_JOBS):
        self._ledger, self._keep = ledger, keep
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(self) -> tuple[Job, bool]:
        """A new job started (True), or the one already running (False)."""
        with self._lock:
            for job in self._jobs.values():
                if job.status == "running":
                    return job, False
            job = Job(uuid.uuid4().hex, "running", current_actor.get(), _now())
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:  # only finished ones: one runs, keep >= 1
                self._jobs.popitem(last=False)
        # The caller's context goes along: the trail records the token's name as the actor.
        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(self._run, job.id), daemon=True,
                         name=f"audit-{job.id[:8]}").start()  # fmt: skip
        return job, True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def _run(self, job_id: str) -> None:
        """As ``eventbank audit`` does: catch the projections up, audit, record the result."""
        ledger = self._ledger
        report, error = None, None
        try:
            ledger.runner.catch_up()
            audit = Auditor(ledger.events, ledger.reads)
            found = audit.run()
            audit.record(found)
            report = found.as_dict()
        except Exception as exc:  # noqa: BLE001 - a failed audit is reported, not raised
            log.exception("audit %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"[:500]
        with self._lock:
            if job_id in self._jobs:
                self._jobs[job_id] = replace(
                    self._jobs[job_id], status="failed" if error else "done",
                    finished_at=_now(), report=report, error=error,
                )  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat()


def audit_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["audit"])
    jobs = AuditJobs(ledger)

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

    @router.post("/audits", status_code=202, response_model=AuditJob,
                 response_model_exclude_none=True, dependencies=[guard("audit")],
                 responses=problem_responses(401, 403, 413, 503))  # fmt: skip
    def start_audit(response: Response):
        """Start the audit `eventbank audit` runs (chains, conservation, read models, after the
        projections catch up) in the background: 202 with the job, whose `Location` to poll
        until it is done (the report; findings do not make it fail) or failed. One audit runs
        at a time: while one runs, this answers 202 with that one. A finished audit is recorded
        in the audit trail (`GET /audits/latest`)."""
        job, _ = jobs.start()
        response.headers["Location"] = f"/audits/{job.id}"
        return _view(job)

    @router.get("/audits/{job_id}", response_model=AuditJob, response_model_exclude_none=True,
                dependencies=[guard("audit")], responses=READ_ERRORS)  # fmt: skip
    def audit_job(job_id: Annotated[str, Path(max_length=64)]):
        """An audit started with `POST /audits`: running, done with its report, or failed with
        the error. The last 20 jobs are kept, in this process's memory only (404 otherwise)."""
        job = jobs.get(job_id)
        if job is None:
            raise AuditJobNotFound(
                f"no audit job {job_id!r} here (the last {MAX_AUDIT_JOBS} are kept)"
            )
        return _view(job)

    return router


def _view(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "actor": job.actor, "started_at": job.started_at,
            "finished_at": job.finished_at, "report": job.report, "error": job.error}  # fmt: skip
