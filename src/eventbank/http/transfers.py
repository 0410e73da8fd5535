"""``/transfers``: move money between two accounts, one transfer or a batch, and read a transfer
back."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import ValidationError

from eventbank.application.batch import MAX_BATCH_ITEMS, BatchItem, ItemResult, tally
from eventbank.domain.errors import InvalidInput
from eventbank.http.commands import run_command
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard, IdempotencyKey, answer
from eventbank.http.schemas import (
    BatchTransferItem,
    CommandResult,
    TransferBatchRequest,
    TransferBatchResult,
    TransferRequest,
    TransferView,
)
from eventbank.ports.event_store import BatchTooLarge
from eventbank.wiring import Ledger

# 1,000 items of the longest ids and keys, about 480 bytes each, with room for indentation.
MAX_BATCH_BYTES = 1024 * 1024


def transfer_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["money"])
    service, queries = ledger.service, ledger.queries

    @router.post("/transfers", status_code=201, dependencies=[guard("write")],
                 responses=WRITE_ERRORS, response_model=CommandResult,
                 response_model_exclude_none=True, response_model_by_alias=True)  # fmt: skip
    async def transfer(body: TransferRequest, response: Response, key: IdempotencyKey = None):
        """Move money between two accounts of one currency: both halves or neither."""
        receipt = await run_command(service.transfer, body.from_account_id,
                                    body.to_account_id, body.amount, command_id=key)  # fmt: skip
        return answer(receipt, response)

    @router.post("/transfers/batch", status_code=200, dependencies=[guard("write")],
                 responses=WRITE_ERRORS, response_model=TransferBatchResult,
                 response_model_exclude_none=True, response_model_by_alias=True)  # fmt: skip
    def transfer_batch(body: TransferBatchRequest, response: Response, key: IdempotencyKey = None):
        """Up to 1,000 transfers, each with its own `idempotency_key` and its own outcome, in
        order: a refused item does not stop the others (unless `atomic`: then all or none).
        Sending the batch again replays each item done before and moves no money for it. The
        request's own Idempotency-Key header is optional: the items' keys make it idempotent."""
        if len(body.items) > MAX_BATCH_ITEMS:  # before reading a thousand more items
            raise BatchTooLarge(
                f"{len(body.items):,} transfers in one batch; the limit is {MAX_BATCH_ITEMS:,}: "
                "split it into several batches"
            )
        results = service.transfer_batch([_item(raw) for raw in body.items], atomic=body.atomic)
        if all(result.status == "replayed" for result in results):
            response.headers["Idempotent-Replayed"] = "true"
        return {"results": [_result(r) for r in results], **tally(results)}

    @router.get("/transfers/{transfer_id}", response_model=TransferView,
                dependencies=[guard("read")], responses=READ_ERRORS)  # fmt: skip
    def get_transfer(transfer_id: str):
        """A transfer, once projected."""
        return queries.transfer(transfer_id)

    return router


def _item(raw: Any) -> BatchItem:
    """An item of the batch as the service takes it; one that is not a well-formed transfer
    carries its validation error, as ``POST /transfers`` would have answered it."""
    try:
        item = BatchTransferItem.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'item'}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        key = raw.get("idempotency_key") if isinstance(raw, dict) else None
        return BatchItem("", "", "", key if isinstance(key, str) else None, InvalidInput(detail))
    return BatchItem(item.from_account_id, item.to_account_id, item.amount, item.idempotency_key)


def _result(result: ItemResult) -> dict[str, Any]:
    body: dict[str, Any] = {"index": result.index, "idempotency_key": result.idempotency_key,
                            "status": result.status}  # fmt: skip
    if result.outcome is not None:
        body["transfer"] = dict(result.outcome)
    if result.error is not None:
        code = result.error.code
        body["error"] = {"type": f"/problems/{code}", "code": code, "detail": str(result.error)}
    return body
