"""``/transactions`` and reversals: balanced multi-leg entries, and money moved back against a
transfer or transaction (domain/journal.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from eventbank.http.commands import run_command
from eventbank.http.params import WRITE_ERRORS, Guard, IdempotencyKey, answer
from eventbank.http.schemas import CommandResult, ReverseRequest, TransactionRequest
from eventbank.wiring import Ledger

MovementId = Annotated[
    str, Path(pattern=r"^[!-~]{1,255}$", description="A transfer's or transaction's id.")
]


def journal_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["money"])
    service = ledger.service
    write: dict[str, Any] = {"dependencies": [guard("write")], "responses": WRITE_ERRORS,
             "response_model": CommandResult, "response_model_exclude_none": True,
             "response_model_by_alias": True}  # fmt: skip

    @router.post("/transactions", status_code=201, **write)
    async def post_transaction(
        body: TransactionRequest, response: Response, key: IdempotencyKey = None
    ):
        """One balanced entry over several accounts (a fee split, a payout): every leg lands,
        in one atomic write, or none does."""
        legs = [(leg.account_id, leg.direction, leg.amount) for leg in body.legs]
        receipt = await run_command(service.post_transaction, legs, currency=body.currency,
                                    description=body.description, metadata=body.metadata,
                                    command_id=key)  # fmt: skip
        return answer(receipt, response)

    async def reverse(
        original_id: str, response: Response, body: ReverseRequest | None, key: str | None
    ) -> Any:
        amount = body.amount if body is not None else None
        metadata = body.metadata if body is not None else None
        receipt = await run_command(service.reverse, original_id, amount, metadata=metadata,
                                    command_id=key)  # fmt: skip
        return answer(receipt, response)

    @router.post("/transfers/{transfer_id}/reverse", status_code=201, **write)
    async def reverse_transfer(
        transfer_id: MovementId,
        response: Response,
        body: ReverseRequest | None = None,
        key: IdempotencyKey = None,
    ):
        """Move money back against a transfer, all of it or `amount`: a new transfer the other
        way, linked both ways (`reverses`, `reversed_by`). The total reversed never passes the
        original (`reversal_exceeds_original`); the recipient needs the funds
        (`insufficient_funds`)."""
        return await reverse(transfer_id, response, body, key)

    @router.post("/transactions/{transaction_id}/reverse", status_code=201, **write)
    async def reverse_transaction(
        transaction_id: MovementId,
        response: Response,
        body: ReverseRequest | None = None,
        key: IdempotencyKey = None,
    ):
        """Move money back against a transaction: every leg the other way, in proportion (the
        amount must split exactly over the legs), as a new transaction linked to it."""
        return await reverse(transaction_id, response, body, key)

    return router
