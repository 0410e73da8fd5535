"""``/transfers``: move money between two accounts, and read a transfer back."""

from __future__ import annotations

from fastapi import APIRouter, Response

from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard, IdempotencyKey, answer
from eventbank.http.schemas import CommandResult, TransferRequest, TransferView
from eventbank.wiring import Ledger


def transfer_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["money"])
    service, queries = ledger.service, ledger.queries

    @router.post("/transfers", status_code=201, dependencies=[guard("write")],
                 responses=WRITE_ERRORS, response_model=CommandResult,
                 response_model_exclude_none=True, response_model_by_alias=True)  # fmt: skip
    def transfer(body: TransferRequest, response: Response, key: IdempotencyKey = None):
        """Move money between two accounts of one currency: both halves or neither."""
        return answer(service.transfer(body.from_account_id, body.to_account_id, body.amount,
                                       command_id=key), response)  # fmt: skip

    @router.get("/transfers/{transfer_id}", response_model=TransferView,
                dependencies=[guard("read")], responses=READ_ERRORS)  # fmt: skip
    def get_transfer(transfer_id: str):
        """A transfer, once projected."""
        return queries.transfer(transfer_id)

    return router
