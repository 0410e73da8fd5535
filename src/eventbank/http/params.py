"""Parameter types and documented error responses shared by every route module."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request, Response
from fastapi.security import HTTPBearer

from eventbank.application.observability import command_id
from eventbank.application.write_path import Receipt, current_actor
from eventbank.http import problems
from eventbank.http.auth import Token, TokenStore


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    content = {problems.PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {s: {"description": problems.TITLES.get(s, "Error"), "content": content}
            for s in statuses}  # fmt: skip


READ_ERRORS = problem_responses(400, 401, 403, 404, 413, 422, 503)
WRITE_ERRORS = problem_responses(400, 401, 403, 404, 409, 413, 422, 503)
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[!-~]+$",
           description="Command id: a retry with the same key and body moves money once."),
]  # fmt: skip
MinVersion = Annotated[
    int, Query(ge=0, le=2**62, description="Read-your-writes: at least this account version.")
]


Guard = Callable[[str], Any]
"""``guard(permission)``: a route dependency that admits only tokens whose role has it."""


def permission_guard(tokens: TokenStore) -> Guard:
    """``guard(permission)``: a route dependency that admits a bearer token whose role has
    ``permission``, and records the token's name as the actor of what the request does."""
    return lambda permission: Depends(_BearerWith(tokens, permission))


class _BearerWith(HTTPBearer):
    """The bearer scheme (the API docs show it as ``HTTPBearer``) and the permission check in
    one dependency: it reads the header itself, as a dependency on ``HTTPBearer`` below the
    check cost every request more than the check does."""

    def __init__(self, tokens: TokenStore, permission: str):
        super().__init__(auto_error=False, scheme_name="HTTPBearer",
                         description="A token from `serve` or the token file.")  # fmt: skip
        self.tokens, self.permission = tokens, permission

    async def __call__(self, request: Request) -> Token:  # type: ignore[override]
        token = self.tokens.require(request.headers.get("authorization"), self.permission)
        current_actor.set(token.name)
        return token


def answer(receipt: Receipt, response: Response) -> dict[str, Any]:
    """A command's outcome as the response body; a replayed command says so in a header."""
    command_id.set(receipt.command_id)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return dict(receipt.outcome)
