"""Refuse a JSON request body that names a key twice, before any route reads it.

``{"amount": "1.00", "amount": "2.00"}`` is valid JSON to most parsers, but they disagree on what
it means (Python keeps the last value, others the first), so a proxy or a log could see another
payment than the ledger makes. Every body sent as JSON (``application/json`` or
``application/*+json``, the types FastAPI parses) is checked here, on every route, and one with
a duplicate key at any depth is answered ``400 malformed_json`` naming the key; nothing runs.
A body that is not JSON at all passes through, for the route to refuse as it always has.
"""

from __future__ import annotations

import email.message

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventbank.domain.json_input import MalformedJson, loads_without_duplicates
from eventbank.http import problems


class RefuseDuplicateKeys:
    """ASGI middleware; install it inside the body-size limit, which bounds what it reads."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            return await self.app(scope, receive, send)
        messages: list[Message] = []
        body = bytearray()
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break  # the client went away: the route meets the disconnect as before
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except HTTPException as exc:  # the body limit's 413, raised while reading
            response = await problems.http_error(Request(scope), exc)
            return await response(scope, receive, send)
        try:
            loads_without_duplicates(bytes(body))
        except MalformedJson as exc:
            response = await problems.eventbank_error(Request(scope), exc)
            return await response(scope, receive, send)
        except (ValueError, RecursionError):
            pass  # not JSON: the route answers that (malformed_json too), as it always has

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this body as JSON (the same test it makes)."""
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), None)
    if content_type is None:
        return False
    if content_type == b"application/json":  # the common case, without parsing the header
        return True
    parsed = email.message.Message()
    parsed["content-type"] = content_type.decode("latin-1")
    subtype = parsed.get_content_subtype()
    return parsed.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )
