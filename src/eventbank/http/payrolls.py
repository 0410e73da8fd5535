"""``POST /payrolls``, ``GET /payrolls/{id}``, ``GET /payrolls``: payment batches as sagas.

The request body is the payroll itself (``text/csv`` or ``application/x-ndjson`` lines of
account id, amount, reference), validated in full before anything is recorded; a valid payroll
answers ``202`` with its id at once and is paid in the background. ``GET`` shows its progress;
``GET /payrolls`` lists them newest first, so one can be found again after its page is left.

``POST /payrolls`` requires an ``Idempotency-Key``: the key names the saga, so a retried upload
answers with the first one, where a fresh id per request would pay the whole payroll again.

Background runs go through a ``PayrollRunner``: one payroll at a time, in a copy of the
submitting request's context (its actor, request id and command id), failures logged with
them; and every unfinished payroll is run again at start and then periodically, so a run that
failed (the store unavailable for a moment, say) is finished without a restart.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from eventbank.application.observability import command_id, request_id
from eventbank.application.payroll_service import (
    LIST_DEFAULT,
    LIST_MAX,
    PayrollService,
    saga_id_for,
)
from eventbank.domain.errors import InvalidInput
from eventbank.domain.money import format_minor
from eventbank.domain.payroll import Payroll
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard

MAX_PAYROLL_BYTES = 2 * 1024 * 1024
RESUME_EVERY_S = 30.0
log = logging.getLogger("eventbank.payroll")

PayrollKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$",
           description="Required: the payroll's command id. A retry with the same key and "
           "body answers with the first payroll and pays nothing again."),
]  # fmt: skip


class IdempotencyKeyRequired(InvalidInput):
    code = "idempotency_key_required"


_CSV_EXAMPLE = "account_id,amount,reference\nacc-2,2500.00,salary-2026-11\n"


class PayrollView(BaseModel):
    saga_id: str
    employer_id: str
    currency: str
    policy: str
    status: str
    lines: int
    paid: int
    failed: int
    compensated: int
    compensation_failed: int
    total_minor: int
    moved_minor: int
    checksum: str
    failures: dict[str, str]
    total: str = Field(description="total_minor as a decimal string, as money is elsewhere.")
    moved: str = Field(description="moved_minor as a decimal string.")


class PayrollListItem(PayrollView):
    started_at: str | None = Field(description="RFC 3339 UTC; null if unknown.")
    started_by: str | None = Field(description="The starting token's name, if known.")


class PayrollPage(BaseModel):
    items: list[PayrollListItem]
    next: str | None = Field(
        description="Pass as `after` for the next, older page; null: "
        "no older payroll. A page may be short and still have one."
    )


def view(payroll: Payroll) -> dict[str, object]:
    """A payroll as the API shows it: its summary, with the money as decimal strings too."""
    return payroll.summary() | {
        "total": format_minor(payroll.total_minor, payroll.currency),
        "moved": format_minor(payroll.paid_minor, payroll.currency),
    }


class PayrollRunner:
    """Runs payrolls in the background, one at a time, and finishes those a failure left.

    ``submit`` runs a payroll in a copy of the caller's context; a failure is logged with the
    request id, command id and saga id (and the payroll stays registered as unfinished).
    ``start`` resumes every unfinished payroll at once and then every ``resume_every_s``
    seconds (None: only at start) until ``stop``; a resume still running is not queued again.
    A resume leaves alone a payroll being started (``claimed``) or submitted and not yet run
    to its end, so that a payroll's first run is its request's (logged with its ids).
    """

    def __init__(self, payrolls: PayrollService, resume_every_s: float | None = RESUME_EVERY_S):
        if resume_every_s is not None and not resume_every_s > 0:
            raise ValueError("resume_every_s must be a positive number of seconds, or None")
        self.payrolls = payrolls
        self.resume_every_s = resume_every_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="payroll")
        self._stopping = threading.Event()
        self._timer: threading.Thread | None = None
        self._resuming: Future[None] | None = None
        self._lock = threading.Lock()
        self._claims: Counter[str] = Counter()  # sagas a resume leaves alone (under _lock)

    @contextmanager
    def claimed(self, saga_id: str) -> Iterator[None]:
        """Keep resumes off ``saga_id`` while inside (the request recording it)."""
        self._claim(saga_id, 1)
        try:
            yield
        finally:
            self._claim(saga_id, -1)

    def submit(self, saga_id: str) -> Future[None]:
        """Run ``saga_id`` in the background with the caller's actor, request id and command id;
        resumes leave it alone until that run has ended."""
        self._claim(saga_id, 1)
        return self._executor.submit(contextvars.copy_context().run, self._run_claimed, saga_id)

    def _claim(self, saga_id: str, change: int) -> None:
        with self._lock:
            self._claims[saga_id] += change
            if self._claims[saga_id] <= 0:
                del self._claims[saga_id]

    def _run_claimed(self, saga_id: str) -> None:
        try:
            self._run(saga_id)
        finally:
            self._claim(saga_id, -1)

    def resume(self) -> Future[None]:
        """Run every unfinished payroll again in the background (unless that is under way)."""
        with self._lock:
            if self._resuming is None or self._resuming.done():
                # A context of its own: no request's ids; each payroll's actor is its starter's.
                self._resuming = self._executor.submit(contextvars.Context().run, self._resume)
            return self._resuming

    def start(self) -> None:
        self.resume()  # what a crash or a failed run left unfinished
        if self.resume_every_s is not None:
            self._timer = threading.Thread(target=self._resume_periodically,
                                           name="payroll-resume", daemon=True)  # fmt: skip
            self._timer.start()

    def stop(self) -> None:
        """Stop resuming and drop queued runs; a payroll being paid is paid to its end."""
        self._stopping.set()
        if self._timer is not None:
            self._timer.join()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _resume_periodically(self) -> None:
        while not self._stopping.wait(self.resume_every_s):
            self.resume()

    def _resume(self) -> None:
        try:
            unfinished = self.payrolls.unfinished()
        except Exception:
            log.exception("could not list the unfinished payrolls; trying again later")
            return
        for saga_id in unfinished:
            if self._stopping.is_set():
                return
            with self._lock:
                if saga_id in self._claims:
                    continue
            self._run(saga_id)

    def _run(self, saga_id: str) -> None:
        try:
            self.payrolls.run(saga_id)
        except Exception:
            log.exception(
                "payroll %s failed; it stays unfinished and is resumed later", saga_id,
                extra={"fields": {"saga_id": saga_id, "request_id": request_id.get(),
                                  "command_id": command_id.get()}},
            )  # fmt: skip


def payroll_routes(payrolls: PayrollService, runner: PayrollRunner, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["payroll"])
    body = {"required": True, "content": {
        "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}, "example":
                                 '{"account_id": "acc-2", "amount": "2500.00", '
                                 '"reference": "salary-2026-11"}\n'}}}  # fmt: skip

    @router.post("/payrolls", status_code=202, response_model=PayrollView,
                 dependencies=[guard("write")], responses=WRITE_ERRORS,
                 openapi_extra={"requestBody": body})  # fmt: skip
    async def start_payroll(
        request: Request,
        response: Response,
        from_account_id: Annotated[str, Query(max_length=64, description="The paying account.")],
        policy: Annotated[str, Query(pattern="^(all-or-nothing|best-effort)$")] = (
            "all-or-nothing"
        ),
        key: PayrollKey = None,
    ):
        """Validate every line, record the saga, and pay it in the background (202).
        Requires an ``Idempotency-Key``: a retry with it pays nothing again."""
        if key is None:
            raise IdempotencyKeyRequired(
                "POST /payrolls requires an Idempotency-Key header (any unique string, e.g. a "
                "UUID or the file's checksum); send the same key when retrying, so that the "
                "payroll is paid once"
            )
        kind = request.headers.get("content-type", "text/csv").split(";")[0].strip()
        if kind not in ("text/csv", "application/x-ndjson"):
            raise InvalidInput("send the payroll as text/csv or application/x-ndjson")
        try:
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            raise InvalidInput("the payroll must be UTF-8 text") from None
        fmt = "csv" if kind == "text/csv" else "jsonl"
        saga_id = saga_id_for(key)  # a fresh one without a key: claimed before it is recorded
        with runner.claimed(saga_id):  # its first run is this request's
            payroll = await run_in_threadpool(
                payrolls.start,
                from_account_id,
                text,
                fmt=fmt,
                policy=policy,
                idempotency_key=key,
                saga_id=saga_id,
            )
            if not payroll.finished:
                runner.submit(payroll.saga_id)
        response.headers["Location"] = f"/payrolls/{public_id(payroll.saga_id)}"
        return view(payroll)

    @router.get("/payrolls", response_model=PayrollPage, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def list_payrolls(
        after: Annotated[
            str | None, Query(description="The `next` of the page before; absent: the newest.")
        ] = None,
        limit: Annotated[str, Query(description=f"1 to {LIST_MAX}.")] = str(LIST_DEFAULT),
    ):
        """Payrolls newest first, each with its progress (as `GET /payrolls/{id}`) and when and
        by whom it was started. Each request reads at most 1,000 entries of the payroll
        registry, so a page may hold fewer than `limit` items while `next` is not null."""
        items, cursor = payrolls.page(after, limit)
        return {"items": [view(i.payroll) | i.summary() for i in items], "next": cursor}

    @router.get("/payrolls/{payroll_id}", response_model=PayrollView,
                dependencies=[guard("read")], responses=READ_ERRORS)  # fmt: skip
    def get_payroll(payroll_id: str):
        """A payroll's progress: lines paid, failed and compensated, and money moved."""
        return view(payrolls.status(payroll_id))

    return router


def public_id(saga_id: str) -> str:
    """The id without its ``payroll#`` prefix, which URLs would have to escape."""
    return saga_id.removeprefix("payroll#")
