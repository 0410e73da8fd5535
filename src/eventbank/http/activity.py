"""``GET /activity``: the recent-activity feed, the last money movements across all accounts,
newest first, paged (application/recent_activity.py); any valid token may read it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from eventbank.application.recent_activity import DEFAULT_LIMIT
from eventbank.application.recent_activity import recent_activity as feed
from eventbank.application.transfer_search import MAX_LIMIT
from eventbank.http.params import READ_ERRORS, Guard
from eventbank.http.schemas import MovementKind
from eventbank.wiring import Ledger


class ActivityItem(BaseModel):
    position: Annotated[int, Field(description="The event's position in the global feed.")]
    recorded_at: str | None
    account_id: str
    version: Annotated[int, Field(description="The account's version the movement made.")]
    kind: Annotated[MovementKind, Field(description="As in an account's movements.")]
    amount: str
    currency: str
    counterparty: str | None
    transfer_id: Annotated[str | None, Field(description="The transfer's or the transaction's id.")]
    metadata: Annotated[dict[str, str], Field(description="The command's metadata.")] = {}
    description: Annotated[str, Field(description="A transaction's description.")] = ""
    reverses: Annotated[
        str | None, Field(description="The transfer or transaction this movement reverses.")
    ] = None
    actor: Annotated[str | None, Field(description="Who made it: the token's name.")]


class ActivityPage(BaseModel):
    items: list[ActivityItem]
    next: Annotated[
        str | None,
        Field(description="Pass as `before` for the next, older page; null: the feed's "
              "beginning was reached. A page may be short, even empty, and still have one."),
    ]  # fmt: skip


def activity_routes(ledger: Ledger, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["dashboard"])

    @router.get("/activity", response_model=ActivityPage, dependencies=[guard("read")],
                responses=READ_ERRORS)  # fmt: skip
    def recent_activity(
        before: Annotated[
            str | None, Query(description="The `next` of the page before; absent: the newest.")
        ] = None,
        limit: Annotated[str, Query(description=f"1 to {MAX_LIMIT}.")] = str(DEFAULT_LIMIT),
    ):
        """The last money movements across all accounts, newest first. Each request examines
        one window of at most 1,000 events of the feed, so a page may hold fewer than `limit`
        items, even none, while `next` is not null: follow `next` until it is null."""
        items, cursor = feed(ledger.events, ledger.reads, before=before, limit=limit)
        return {"items": items, "next": cursor}

    return router
