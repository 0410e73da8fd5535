"""Parameter types and documented error responses shared by every route module."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Header, Query, Response

from eventbank.application.observability import command_id
from eventbank.application.write_path import Receipt
from eventbank.http import problems


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


def answer(receipt: Receipt, response: Response) -> dict[str, Any]:
    """A command's outcome as the response body; a replayed command says so in a header."""
    command_id.set(receipt.command_id)
    if receipt.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return dict(receipt.outcome)
