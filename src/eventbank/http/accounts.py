"""``/accounts``: open, list, read, deposit, withdraw, close, freeze; an account's movements and
events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response

from eventbank.application.queries import SEARCH_SCAN
from eventbank.application.statements import (
    MAX_STATEMENT_EVENTS,
    balance_as_of,
    describe_statement,
    parse_as_of,
    parse_period,
    statement,
    statement_csv,
)
from eventbank.application.write_path import Receipt
from eventbank.http.commands import run_command
from eventbank.http.params import (
    READ_ERRORS,
    WRITE_ERRORS,
    Guard,
    IdempotencyKey,
    MinVersion,
    answer,
)
from eventbank.http.schemas import (
    AccountAsOfView,
    AccountPage,
    CommandResult,
    LimitRequest,
    MoneyRequest,
    MovementPage,
    OpenAccountRequest,
    ReasonRequest,
    StatementView,
    StoredEvent,
    StoredEventPage,
)
from eventbank.wiring import Ledger

MAX_PAGE = 1000
AS_OF = (
    "An RFC 3339 instant with its offset (2026-11-30T23:59:59Z): the account as it was then, "
    "folded from its events (balance, holds, status), with `as_of` in the answer. Not in the "
    "future: 422 invalid_as_of; before the account existed: 404 account_not_found."
)
PERIOD_BOUND = "A date (2026-11-01: that UTC day) or an RFC 3339 instant."
STATEMENT = (
    "The opening balance (just before `from`), every movement of the balance from `from` to "
    "`to` with the balance after it, the totals in and out and the closing balance, folded from "
    "the account's events. As CSV with `Accept: text/csv` or `format=csv`: a header, an "
    "opening-balance row, one row per movement, a closing-balance row. `from` after `to` or in "
    "the future, or either malformed: 422 invalid_period; a `to` in the future means now. More "
    f"than {MAX_STATEMENT_EVENTS:,} events in the period: 422 statement_too_long."
)
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}
MAX_ACCOUNTS_PAGE = 200
LIST_ACCOUNTS = (
    "Accounts in id order from the read model, a page from the cursor `after`; `q` searches id "
    "and owner, any case. Each call reads a bounded number of rows, whatever the number of "
    f"accounts: a search examines at most {SEARCH_SCAN:,} accounts, so its page may hold fewer "
    "than `limit` items, even none, while `next_after` is not null. Follow `next_after` until "
    "it is null."
)


def account_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["accounts"])
    service, queries = ledger.service, ledger.queries
    reader = guard("read")
    write: dict[str, Any] = {"dependencies": [guard("write")], "responses": WRITE_ERRORS,
             "response_model": CommandResult, "response_model_exclude_none": True,
             "response_model_by_alias": True}  # fmt: skip

    @router.post("/accounts", status_code=201, **write)
    async def open_account(
        body: OpenAccountRequest, response: Response, key: IdempotencyKey = None
    ):
        """Open an account, optionally with an initial deposit."""
        return answer(await run_command(
            service.open_account, body.account_id, owner=body.owner, account_type=body.type,
            currency=body.currency, initial_deposit=body.initial_deposit,
            overdraft_limit=body.overdraft_limit, command_id=key,
        ), response)  # fmt: skip

    @router.get("/accounts", response_model=AccountPage, dependencies=[reader],
                responses=READ_ERRORS, description=LIST_ACCOUNTS)  # fmt: skip
    def list_accounts(
        q: Annotated[str, Query(max_length=64, description="Part of an id or owner.")] = "",
        after: Annotated[str, Query(max_length=64, description="The next_after of the last "
                                    "page (the last id seen or examined).")] = "",
        limit: Annotated[int, Query(ge=1, le=MAX_ACCOUNTS_PAGE)] = 50,
    ):  # fmt: skip
        """Accounts in id order, a page from a cursor (LIST_ACCOUNTS says the rest)."""
        items, next_after = queries.find_accounts(q, after, limit)
        return {"items": items, "next_after": next_after}

    @router.get("/accounts/{account_id}", response_model=AccountAsOfView, dependencies=[reader],
                responses=READ_ERRORS, response_model_exclude_unset=True)  # fmt: skip
    def get_account(
        account_id: str,
        min_version: MinVersion = 0,
        as_of: Annotated[str | None, Query(max_length=64, description=AS_OF)] = None,
    ):
        """An account's balance and status, from the read model; with `as_of`, as of then."""
        if as_of is None:
            return queries.balance(account_id, min_version)
        return balance_as_of(ledger.events, account_id, parse_as_of(as_of), now=service.clock())

    @router.get("/accounts/{account_id}/statement", response_model=StatementView,
                dependencies=[reader], responses={**READ_ERRORS, **CSV_RESPONSE},
                description=STATEMENT)  # fmt: skip
    def get_statement(
        account_id: str,
        from_: Annotated[str, Query(alias="from", max_length=64, description=PERIOD_BOUND)],
        to: Annotated[str, Query(max_length=64, description=PERIOD_BOUND + " Included.")],
        format: Annotated[
            Literal["json", "csv"] | None, Query(description="csv: as `Accept: text/csv`.")
        ] = None,
        accept: Annotated[str, Header(include_in_schema=False)] = "",
    ):
        """An account's statement for a period (STATEMENT says the rest)."""
        start, end = parse_period(from_, to)
        found = statement(ledger.events, account_id, start, end, now=service.clock())
        if format == "csv" or (format is None and "text/csv" in accept.lower()):
            name = f"statement-{account_id}-{start:%Y%m%d}-{found.end:%Y%m%d}.csv"
            return Response(
                statement_csv(found),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return describe_statement(found)

    @router.get("/accounts/{account_id}/transactions", response_model=MovementPage,
                dependencies=[reader], responses=READ_ERRORS)  # fmt: skip
    def list_transactions(
        account_id: str,
        after_version: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        min_version: MinVersion = 0,
    ):
        """Money movements, oldest first, paginated by account version."""
        items = queries.history(account_id, after_version, limit, min_version)
        last = items[-1]["version"] if len(items) == limit else None
        return {"items": items, "next_after_version": last}

    @router.get("/accounts/{account_id}/events", tags=["audit"], response_model=StoredEventPage,
                dependencies=[guard("events")], responses=READ_ERRORS)  # fmt: skip
    def list_account_events(
        account_id: str,
        after_version: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ):
        """An account's stored events with their chain hashes, oldest first, by version."""
        found = queries.account_events(account_id, after_version, limit)
        items = [{name: getattr(e, name) for name in StoredEvent.model_fields} for e in found]
        last = found[-1].version if len(found) == limit else None
        return {"items": items, "next_after_version": last}

    @router.post("/accounts/{account_id}/deposits", status_code=201, tags=["money"], **write)
    async def deposit(
        account_id: str, body: MoneyRequest, response: Response, key: IdempotencyKey = None
    ):
        """Deposit money from outside the bank."""
        receipt = await run_command(service.deposit, account_id, body.amount,
                                    metadata=body.metadata, command_id=key)  # fmt: skip
        return answer(receipt, response)

    @router.post("/accounts/{account_id}/withdrawals", status_code=201, tags=["money"], **write)
    async def withdraw(
        account_id: str, body: MoneyRequest, response: Response, key: IdempotencyKey = None
    ):
        """Withdraw money; never below zero, or below minus the account's overdraft limit."""
        receipt = await run_command(service.withdraw, account_id, body.amount,
                                    metadata=body.metadata, command_id=key)  # fmt: skip
        return answer(receipt, response)

    @router.post("/accounts/{account_id}/close", **write)
    async def close_account(account_id: str, response: Response, key: IdempotencyKey = None):
        """Close an account whose balance is zero."""
        receipt = await run_command(service.close_account, account_id, command_id=key)
        return answer(receipt, response)

    admin = {**write, "dependencies": [guard("admin")]}

    @router.post("/accounts/{account_id}/limits", **admin)
    async def set_limits(
        account_id: str, body: LimitRequest, response: Response, key: IdempotencyKey = None
    ):
        """Set the overdraft limit (admin): the balance may go down to minus it. Lowering it
        below the current overdraft is allowed and blocks further debits."""
        receipt = await run_command(service.set_overdraft_limit, account_id,
                                    body.overdraft_limit, command_id=key)  # fmt: skip
        return answer(receipt, response)

    def with_reason(call: Callable[..., Receipt], doc: str) -> Callable[..., Any]:
        async def endpoint(
            account_id: str, body: ReasonRequest, response: Response, key: IdempotencyKey = None
        ):
            receipt = await run_command(call, account_id, body.reason, command_id=key)
            return answer(receipt, response)

        endpoint.__doc__ = doc
        return endpoint

    for verb, call, doc in (
        ("freeze", service.freeze_account, "Freeze an account (admin): withdrawals, outgoing "
         "transfers and closing are refused with `account_frozen` until it is unfrozen; deposits "
         "and incoming transfers still land."),
        ("unfreeze", service.unfreeze_account, "Let a frozen account be debited again (admin); "
         "`account_not_frozen` if it is not frozen."),
    ):  # fmt: skip
        router.add_api_route(f"/accounts/{{account_id}}/{verb}", with_reason(call, doc),
                             methods=["POST"], name=f"{verb}_account", **admin)  # fmt: skip

    return router
