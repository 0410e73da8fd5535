"""``POST /payrolls`` and ``GET /payrolls/{id}``: batch payments as sagas over HTTP.

The request body is the payroll itself (``text/csv`` or ``application/x-ndjson`` lines of
account id, amount, reference), validated in full before anything is recorded; a valid payroll
answers ``202`` with its id at once and is paid in the background. ``GET`` shows its progress.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from eventbank.application.payroll_service import PayrollService
from eventbank.domain.errors import InvalidInput
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard, IdempotencyKey

MAX_PAYROLL_BYTES = 2 * 1024 * 1024
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


def payroll_routes(payrolls: PayrollService, runner: ThreadPoolExecutor, guard: Guard) -> APIRouter:
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
        key: IdempotencyKey = None,
    ):
        """Validate every line, record the saga, and pay it in the background (202)."""
        kind = request.headers.get("content-type", "text/csv").split(";")[0].strip()
        if kind not in ("text/csv", "application/x-ndjson"):
            raise InvalidInput("send the payroll as text/csv or application/x-ndjson")
        try:
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            raise InvalidInput("the payroll must be UTF-8 text") from None
        fmt = "csv" if kind == "text/csv" else "jsonl"
        payroll = await run_in_threadpool(
            payrolls.start, from_account_id, text, fmt=fmt, policy=policy, idempotency_key=key
        )
        if not payroll.finished:
            runner.submit(payrolls.run, payroll.saga_id)
        response.headers["Location"] = f"/payrolls/{public_id(payroll.saga_id)}"
        return payroll.summary()

    @router.get("/payrolls/{payroll_id}", response_model=PayrollView,
                dependencies=[guard("read")], responses=READ_ERRORS)  # fmt: skip
    def get_payroll(payroll_id: str):
        """A payroll's progress: lines paid, failed and compensated, and money moved."""
        return payrolls.status(payroll_id).summary()

    return router


def public_id(saga_id: str) -> str:
    """The id without its ``payroll#`` prefix, which URLs would have to escape."""
    return saga_id.removeprefix("payroll#")
