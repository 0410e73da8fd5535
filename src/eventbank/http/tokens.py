"""``/tokens``: list, add and revoke API tokens (admins only), as ``eventbank tokens`` does.

Both go through the same functions in ``auth.py`` on the same token file, so the same rules
hold: only the sha256 of a token is stored; a name is used once; the file's last admin token is
never revoked here (the CLI's ``--force`` has no HTTP twin); a refusal writes nothing. The
server that made a change re-reads the file at once, so a new token works and a revoked one gets
401 from its very next request; other processes (``serve --workers N``, other servers on the
file) see the change within a second or two. Tokens from ``EVENTBANK_TOKENS`` are listed, marked
``read_only``, and cannot be revoked (``token_read_only``).

``POST /tokens`` shows the secret once, in its answer (``Cache-Control: no-store``). It is not
replayed by ``Idempotency-Key`` as other POSTs are: replaying would mean keeping the secret
(the idempotency records live in the event store, forever), and a retry must not mint a second
one. The name is the idempotency key instead: a retry is refused ``409 token_exists`` and makes
nothing. A client that lost the answer revokes the token and adds it again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from eventbank.http.auth import ListedToken, TokenInfo, TokenStore
from eventbank.http.params import READ_ERRORS, WRITE_ERRORS, Guard
from eventbank.http.schemas import NewToken, NewTokenRequest, TokenPage


def token_routes(tokens: TokenStore, guard: Guard) -> APIRouter:
    router = APIRouter(tags=["tokens"])
    admin = [guard("admin")]

    @router.get("/tokens", response_model=TokenPage, dependencies=admin, responses=READ_ERRORS)
    def list_tokens():
        """Every token this server accepts: the token file's, then `EVENTBANK_TOKENS`'
        (`read_only`), with when each was made and last used; never a secret or a hash."""
        return {"items": [_view(token) for token in tokens.listing()]}

    @router.post("/tokens", status_code=201, response_model=NewToken, dependencies=admin,
                 responses=WRITE_ERRORS)  # fmt: skip
    def add_token(body: NewTokenRequest, response: Response):
        """Create a token: its secret is in this answer and nowhere else (only its sha256 is
        kept). It works at once. A name is used once (`token_exists`), which also makes a retry
        safe: no `Idempotency-Key` replay here, as that would keep the secret. A bad name or
        role is `invalid_token_name` or `invalid_token_role`."""
        secret, info = tokens.add(body.name, body.role)
        response.headers["Cache-Control"] = "no-store"
        return {**_view(ListedToken(info, "file")), "token": secret}

    @router.delete("/tokens/{name}", status_code=204, response_class=Response,
                   dependencies=admin, responses=WRITE_ERRORS)  # fmt: skip
    def revoke_token(name: str) -> Response:
        """Revoke a token: refused at once by this server, within a second or two by the
        others. Never the token file's last admin token (`last_admin_token`); an
        `EVENTBANK_TOKENS` token is `token_read_only`; an unknown name `token_not_found`."""
        tokens.revoke(name)
        return Response(status_code=204)

    return router


def _view(token: ListedToken) -> dict[str, Any]:
    info: TokenInfo = token.info
    return {"name": info.name, "role": info.role, "created_at": info.created_at,
            "last_used_at": info.last_used_at, "source": token.source,
            "read_only": token.read_only}  # fmt: skip
