"""Bearer tokens with roles. Only sha256 hashes of tokens are stored; comparison is constant-time.

Roles and what they may do:

- ``teller``  — read accounts and transfers, and move money
- ``auditor`` — read accounts and transfers, the raw event feed, and audits
- ``admin``   — everything

Tokens come from a JSON file (``{"tokens": [{"name", "role", "sha256"}]}``, written 0600) and
from ``EVENTBANK_TOKENS`` (``role:token`` pairs, comma-separated, for deployments that inject
secrets through the environment). On first start ``serve`` creates an admin token, stores its
hash and prints the token once, as Jupyter does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventbank.application.service import current_actor
from eventbank.domain.errors import EventbankError, InvalidInput

PERMISSIONS: dict[str, frozenset[str]] = {
    "teller": frozenset({"read", "write"}),
    "auditor": frozenset({"read", "events", "audit"}),
    "admin": frozenset({"read", "write", "events", "audit", "admin"}),
}


class Unauthorized(EventbankError):
    code = "unauthorized"


class Forbidden(EventbankError):
    code = "forbidden"


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    role: str
    sha256: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, tokens: list[Token]):
        for token in tokens:
            if token.role not in PERMISSIONS:
                raise InvalidInput(f"token {token.name!r} has unknown role {token.role!r}")
        self.tokens = tokens

    @classmethod
    def load(cls, path: Path | None, env_value: str | None = None) -> TokenStore:
        tokens = []
        if path is not None and path.exists():
            try:
                entries = json.loads(path.read_text())["tokens"]
                tokens = [Token(e["name"], e["role"], e["sha256"]) for e in entries]
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(f"token file {path} is malformed: {exc}") from None
        for n, pair in enumerate(filter(None, (env_value or "").split(","))):
            role, _, secret = pair.strip().partition(":")
            if not secret:
                raise InvalidInput("EVENTBANK_TOKENS entries must look like role:token")
            tokens.append(Token(f"env-{n}", role, digest(secret)))
        return cls(tokens)

    def authenticate(self, presented: str) -> Token | None:
        """The token matching ``presented``; every stored hash is compared, in constant time."""
        presented_digest = digest(presented)
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, presented_digest):
                found = token
        return found

    def require(self, authorization: str | None, permission: str) -> Token:
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        token = self.authenticate(presented.strip())
        if token is None:
            raise Unauthorized("invalid bearer token")
        if not token.may(permission):
            raise Forbidden(f"role {token.role!r} lacks the {permission!r} permission")
        return token


def add_token(path: Path, name: str, role: str) -> str:
    """Create a token, store only its hash in ``path``, and return the token (shown once)."""
    if role not in PERMISSIONS:
        raise InvalidInput(f"role must be one of {', '.join(PERMISSIONS)}, not {role!r}")
    existing = TokenStore.load(path).tokens
    if any(t.name == name for t in existing):
        raise InvalidInput(f"a token named {name!r} already exists in {path}")
    secret = "eb_" + secrets.token_urlsafe(32)
    entries = [asdict(t) for t in [*existing, Token(name, role, digest(secret))]]
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"tokens": entries}, handle, indent=2)
    os.replace(path.with_suffix(".tmp"), path)
    return secret


def ensure_admin_token(path: Path) -> str | None:
    """On first start: create an admin token and return it; afterwards None."""
    if any(t.role == "admin" for t in TokenStore.load(path).tokens):
        return None
    return add_token(path, "admin", "admin")


def permission_guard(tokens: TokenStore) -> Callable[[str], Any]:
    """``guard(permission)``: a route dependency that admits a bearer token whose role has
    ``permission``, and records the token's name as the actor of what the request does."""
    bearer = HTTPBearer(auto_error=False, description="A token from `serve` or the token file.")

    def guard(permission: str) -> Any:
        async def check(
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
        ) -> Token:
            header = f"Bearer {credentials.credentials}" if credentials else None
            token = tokens.require(header, permission)
            current_actor.set(token.name)
            return token

        return Depends(check)

    return guard
