"""``/webhooks``: subscriptions that deliver the event feed to other systems (admins only).

The subscriptions live in the event store (application/webhooks), so every server process and
``eventbank webhooks`` see the same ones. ``POST /webhooks`` shows the signing secret once, in
its answer (``Cache-Control: no-store``); the store keeps it only encrypted. As for tokens, the
answer is not replayed by ``Idempotency-Key``: that would keep the secret in the idempotency
record. Delivery itself runs in ``eventbank serve`` (one process of ``--workers N``) or in
``eventbank webhooks run``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from eventbank.application.webhooks import Subscription, WebhookService
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard

EventTypes = Annotated[
    list[Annotated[str, Field(max_length=100)]],
    Field(max_length=50, description="Event types to deliver (`FundsDeposited`, …); empty: all."),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewWebhook(_Strict):
    url: Annotated[str, Field(max_length=2000, description="https; http only to loopback when "
                              "the server allows it (`--allow-http-webhooks`).")]  # fmt: skip
    event_types: EventTypes = []
    description: Annotated[str, Field(max_length=500)] = ""


class WebhookChange(_Strict):
    url: Annotated[str | None, Field(max_length=2000)] = None
    event_types: EventTypes | None = None
    description: Annotated[str | None, Field(max_length=500)] = None
    paused: bool | None = None


class Replay(_Strict):
    from_position: Annotated[int, Field(ge=0, description="Deliver again from this position on.")]


class Rotation(_Strict):
    secret: Annotated[
        str | None,
        Field(min_length=1, max_length=200, description="At least 32 bytes; absent: a new one."),
    ] = None
    overlap_s: Annotated[int, Field(ge=0, le=604_800, description="How long the old secret "
                                    "still signs beside the new one.")] = 86_400  # fmt: skip


class WebhookView(BaseModel):
    webhook_id: str
    url: str
    event_types: list[str]
    description: str
    paused: bool
    created_at: str
    failing: bool
    last_error: str | None
    status: Annotated[
        dict[str, Any] | None,
        Field(description="Delivery: checkpoint, lag_events, lag_seconds, last_success_at, "
              "last_error, attempts, failing (GET by id)."),
    ] = None  # fmt: skip


class NewWebhookView(WebhookView):
    secret: Annotated[str, Field(description="Shown once: sign-checking key for the receiver.")]


class WebhookPage(BaseModel):
    items: list[WebhookView]


class Secret(BaseModel):
    secret: str


def webhook_routes(webhooks: WebhookService, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["webhooks"])
    admin = [guard("admin")]

    @router.post("/webhooks", status_code=201, response_model=NewWebhookView, dependencies=admin,
                 responses=WRITE_ERRORS)  # fmt: skip
    def add_webhook(body: NewWebhook, response: Response):
        """Subscribe a URL to the feed: each event (of `event_types`, or all) is POSTed to it in
        feed order, signed (`Eventbank-Signature`), until it answers 2xx. The secret is in this
        answer only."""
        subscription, secret = webhooks.add(body.url, tuple(body.event_types), body.description)
        response.headers["Cache-Control"] = "no-store"
        return {**view(subscription), "secret": secret}

    @router.get("/webhooks", response_model=WebhookPage, dependencies=admin,
                responses=READ_ERRORS)  # fmt: skip
    def list_webhooks():
        """Every subscription, with whether it is paused or failing."""
        return {"items": [view(s) for s in webhooks.list()]}

    @router.get("/webhooks/{webhook_id}", response_model=WebhookView, dependencies=admin,
                responses=READ_ERRORS)  # fmt: skip
    def get_webhook(webhook_id: str):
        """One subscription and how its delivery goes: lag, last success, last error."""
        return {**view(webhooks.get(webhook_id)), "status": webhooks.status(webhook_id)}

    @router.patch("/webhooks/{webhook_id}", response_model=WebhookView, dependencies=admin,
                  responses=WRITE_ERRORS)  # fmt: skip
    def change_webhook(webhook_id: str, body: WebhookChange):
        """Pause or resume (`paused`), or change the url, types or description."""
        types = None if body.event_types is None else tuple(body.event_types)
        return view(webhooks.update(webhook_id, url=body.url, event_types=types,
                                    description=body.description, paused=body.paused))  # fmt: skip

    @router.delete("/webhooks/{webhook_id}", status_code=204, response_class=Response,
                   dependencies=admin, responses=WRITE_ERRORS)  # fmt: skip
    def remove_webhook(webhook_id: str) -> Response:
        """Stop delivering to it, for good."""
        webhooks.remove(webhook_id)
        return Response(status_code=204)

    @router.post("/webhooks/{webhook_id}/replay", response_model=WebhookView, dependencies=admin,
                 responses=WRITE_ERRORS)  # fmt: skip
    def replay(webhook_id: str, body: Replay):
        """Deliver again every event from `from_position` on; receivers de-duplicate by
        `event_id`."""
        return view(webhooks.replay(webhook_id, body.from_position))

    @router.post("/webhooks/{webhook_id}/rotate-secret", response_model=Secret,
                 dependencies=admin, responses=WRITE_ERRORS)  # fmt: skip
    def rotate_secret(webhook_id: str, body: Rotation, response: Response):
        """A new signing secret (given, of at least 32 bytes, or made); the old one keeps
        signing beside it for `overlap_s`, so receivers can switch without losing an event."""
        response.headers["Cache-Control"] = "no-store"
        return {"secret": webhooks.rotate_secret(webhook_id, body.secret, body.overlap_s)}

    return router


def view(s: Subscription) -> dict[str, Any]:
    return {"webhook_id": s.webhook_id, "url": s.url, "event_types": list(s.event_types),
            "description": s.description, "paused": s.paused, "created_at": s.created_at,
            "failing": s.failing, "last_error": s.last_error}  # fmt: skip
