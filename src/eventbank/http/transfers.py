"""``/transfers``: move money between two accounts, one transfer or a batch; post or void a
pending transfer; read a transfer back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import ValidationError

from eventbank.application.batch import MAX_BATCH_ITEMS, BatchItem, ItemResult, tally
from eventbank.application.holds import MAX_LISTED, open_holds
from eventbank.application.transfer_search import find_transfers
from eventbank.application.write_path import Receipt, current_actor
from eventbank.domain.errors import InvalidInput, TransferNotFound
from eventbank.http.commands import GROUP_WAIT_MS, Coalescer, run_command
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard, IdempotencyKey, answer
from eventbank.http.schemas import (
    BatchTransferItem,
    CommandResult,
    PendingTransferPage,
    PostTransferRequest,
    TransferBatchRequest,
    TransferBatchResult,
    TransferRecord,
    TransferRequest,
    TransferSearchPage,
    VoidTransferRequest,
)
from eventbank.ledger_process import LedgerProcess
from eventbank.ports.event_store import BatchTooLarge
from eventbank.wiring import Ledger

# 1,000 items of the longest ids and keys, about 480 bytes each, with room for indentation.
MAX_BATCH_BYTES = 1024 * 1024
PendingTransferId = Annotated[
    str,
    Path(pattern=r"^[!-~]{1,255}$", description="The `transfer_id` of a pending transfer."),
]


def transfer_routes(
    ledger: Ledger,
    guard: Guard,
    ledger_process: LedgerProcess | None = None,
    group_wait_ms: float = GROUP_WAIT_MS,
) -> APIRouter:
    """``ledger_process``: where plain transfers run together instead of the service
    (``serve --ledger-process``), a group per channel at a time. ``group_wait_ms``: the
    longest their runner waits for the clients it just answered (``Coalescer``)."""
    router = APIRouter(tags=["money"])
    service, queries = ledger.service, ledger.queries
    # Plain transfers run together where the engine group-commits (http/commands.py says why).
    together: Coalescer[BatchItem, Receipt] | None = None
    if ledger_process is not None:
        together = Coalescer(ledger_process.transfer_each, runners=ledger_process.channels,
                             wait_ms=group_wait_ms)  # fmt: skip
    elif service.groups_appends:
        together = Coalescer(service.transfer_each, wait_ms=group_wait_ms)

    write: dict[str, Any] = {"dependencies": [guard("write")], "responses": WRITE_ERRORS,
             "response_model": CommandResult, "response_model_exclude_none": True,
             "response_model_by_alias": True}  # fmt: skip

    @router.post("/transfers", status_code=201, **write)
    async def transfer(body: TransferRequest, response: Response, key: IdempotencyKey = None):
        """Move money between two accounts of one currency: both halves or neither. With
        `pending`, reserve it instead (`status` pending, `expires_at` with `timeout_s`) until
        it is posted, voided or expires."""
        if together is not None and not body.pending and body.timeout_s is None:
            item = BatchItem(body.from_account_id, body.to_account_id, body.amount, key,
                             metadata=body.metadata, actor=current_actor.get())  # fmt: skip
            return answer(await together.submit(item), response)
        receipt = await run_command(service.transfer, body.from_account_id, body.to_account_id,
                                    body.amount, pending=body.pending, timeout_s=body.timeout_s,
                                    metadata=body.metadata, command_id=key)  # fmt: skip
        return answer(receipt, response)

    @router.post("/transfers/{transfer_id}/post", status_code=200, **write)
    async def post_transfer(
        transfer_id: PendingTransferId,
        response: Response,
        body: PostTransferRequest | None = None,
        key: IdempotencyKey = None,
    ):
        """Move a pending transfer's money: `amount` (at most what is pending; all of it when
        absent), releasing the rest. `transfer_not_pending` once posted or voided,
        `transfer_expired` past its timeout."""
        amount = body.amount if body is not None else None
        receipt = await run_command(service.post_transfer, transfer_id, amount, command_id=key)
        return answer(receipt, response)

    @router.post("/transfers/{transfer_id}/void", status_code=200, **write)
    async def void_transfer(
        transfer_id: PendingTransferId,
        response: Response,
        body: VoidTransferRequest | None = None,
        key: IdempotencyKey = None,
    ):
        """Release a pending transfer's reservation; nothing moves. `transfer_not_pending` once
        posted or voided, `transfer_expired` past its timeout."""
        receipt = await run_command(service.void_transfer, transfer_id, command_id=key)
        return answer(receipt, response)

    @router.get("/pending-transfers", response_model=PendingTransferPage,
                dependencies=[guard("read")], responses=READ_ERRORS)  # fmt: skip
    def pending_transfers(
        account_id: Annotated[
            str | None, Query(description="Only this account's (either side).")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 100,
    ):
        """Open pending transfers: an account's (either side) or, without `account_id`, the
        ledger's (accounts in id order, at most `limit`)."""
        return {"items": open_holds(service, ledger.reads, account_id, limit)}

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
        items = [_item(raw) for raw in body.items]
        run = ledger_process.transfer_batch if ledger_process else service.transfer_batch
        results = run(items, atomic=body.atomic)
        if all(result.status == "replayed" for result in results):
            response.headers["Idempotent-Replayed"] = "true"
        return {"results": [_result(r) for r in results], **tally(results)}

    @router.get("/transfers", response_model=TransferSearchPage, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def search_transfers(
        request: Request,
        account_id: Annotated[
            str | None, Query(max_length=64, description="Either side, or any leg.")
        ] = None,
        from_: Annotated[
            str | None, Query(alias="from", max_length=40, description="RFC 3339, inclusive.")
        ] = None,
        to: Annotated[str | None, Query(max_length=40, description="RFC 3339, exclusive.")] = None,
        status: Annotated[
            str | None, Query(max_length=20, description="pending, posted, voided or expired.")
        ] = None,
        after: Annotated[
            str | None, Query(max_length=800, description="The `next` of the page before.")
        ] = None,
        limit: Annotated[str, Query(max_length=10, description="1 to 200.")] = "50",
    ):
        """Transfers and transactions, oldest first; filter with `metadata.KEY=VALUE` (each must
        match) and the parameters. One indexed read (by account, else by the first metadata
        pair, else by time) examines at most 1,000 rows per request, so a page may hold fewer
        than `limit` items, even none, while `next` is not null: follow `next` until it is."""
        metadata = {name.removeprefix("metadata."): value
                    for name, value in request.query_params.items()
                    if name.startswith("metadata.")}  # fmt: skip
        items, cursor = find_transfers(
            ledger.reads, account_id=account_id, metadata=metadata, from_=from_, to=to,
            status=status, after=after, limit=limit,
        )  # fmt: skip
        return {"items": items, "next": cursor}

    @router.get("/transfers/{transfer_id}", response_model=TransferRecord,
                response_model_exclude_none=True, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def get_transfer(transfer_id: str):
        """A transfer or transaction, once projected: `status` posted for one made final at
        once; a pending transfer's pending, posted, voided or expired, with `pending_amount`,
        what it reserved; its metadata, reversal links and (a transaction's) legs."""
        return queries.transfer(transfer_id)

    @router.get("/transactions/{transaction_id}", response_model=TransferRecord,
                response_model_exclude_none=True, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def get_transaction(transaction_id: str):
        """A multi-leg transaction, once projected, with its legs (as `/transfers/{id}`)."""
        view = queries.transfer(transaction_id)
        if view["kind"] != "transaction":
            raise TransferNotFound(f"{transaction_id!r} is a transfer, not a transaction")
        return view

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
    return BatchItem(item.from_account_id, item.to_account_id, item.amount, item.idempotency_key,
                     metadata=item.metadata)  # fmt: skip


def _result(result: ItemResult) -> dict[str, Any]:
    body: dict[str, Any] = {"index": result.index, "idempotency_key": result.idempotency_key,
                            "status": result.status}  # fmt: skip
    if result.outcome is not None:
        body["transfer"] = dict(result.outcome)
    if result.error is not None:
        code = result.error.code
        body["error"] = {"type": f"/problems/{code}", "code": code, "detail": str(result.error)}
    return body
