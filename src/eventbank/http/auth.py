"""Bearer tokens with roles. Only sha256 hashes of tokens are stored; comparison is constant-time.

Roles and what they may do:

- ``teller``  — read accounts and transfers, and move money
- ``auditor`` — read accounts and transfers, the raw event feed, and audits
- ``admin``   — everything

Tokens come from a JSON file (``{"tokens": [{"name", "role", "sha256", "created_at",
"last_used_at"}]}``, written 0600; the two times are optional) and from ``EVENTBANK_TOKENS``
(``role:token`` pairs, comma-separated, for deployments that inject secrets through the
environment). On first start ``serve`` creates an admin token, stores its hash and prints the
token once, as Jupyter does.

A running server sees the file change: at most once a second, on authentication, it compares
the file's inode, size and times with what it loaded, and re-reads it if they differ; so tokens
added with ``eventbank tokens add`` work, and revoked ones stop working, within a second or two.
A file that cannot be read or parsed then is logged as an error and the tokens loaded before
stay in force (a typo in the file locks nobody out); a deleted file leaves only the
``EVENTBANK_TOKENS`` tokens. Every writer of the file (the CLI, and the server recording when
tokens were last used) holds a lock on the file's directory while it reads, changes and
atomically replaces it, so no writer loses another's change.

"Last used" is known to the server the moment a token authenticates; it keeps that in memory
and writes it to the file at most once a minute and when it stops (``TokenStore.
record_last_used``), so ``eventbank tokens list`` may show it up to a minute late.

The CLI (``cli/tokens.py``) and the HTTP API (``http/tokens.py``) change the file through the
same functions: ``add_token`` and ``revoke_token`` here. A server changing it through
``TokenStore.add`` and ``TokenStore.revoke`` re-reads it at once, so the change holds for its
own next request; other processes see it within a second, as any change.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eventbank.application.write_path import current_actor
from eventbank.domain.errors import EventbankError, InvalidInput, RuleViolation

PERMISSIONS: dict[str, frozenset[str]] = {
    "teller": frozenset({"read", "write"}),
    "auditor": frozenset({"read", "events", "audit"}),
    "admin": frozenset({"read", "write", "events", "audit", "admin"}),
}

RELOAD_CHECK_EVERY_S = 1.0
"""How often, at most, authentication looks whether the token file changed (one ``stat``)."""

RECORD_LAST_USED_EVERY_S = 60.0
"""How often, at most, a server writes when its tokens were last used to the token file."""

log = logging.getLogger("eventbank.auth")


class Unauthorized(EventbankError):
    code = "unauthorized"


class Forbidden(EventbankError):
    code = "forbidden"


class LastAdminToken(RuleViolation):
    code = "last_admin_token"


class InvalidTokenName(InvalidInput):
    code = "invalid_token_name"


class InvalidTokenRole(InvalidInput):
    code = "invalid_token_role"


# Unknown and duplicate names are InvalidInput to the CLI (exit 2, as they always were); the
# HTTP API answers them 404 and 409 (problems.py).
class TokenNotFound(InvalidInput):
    code = "token_not_found"


class TokenExists(InvalidInput):
    code = "token_exists"


class TokenReadOnly(RuleViolation):
    """A token from ``EVENTBANK_TOKENS``, or a server with no token file: not changed here."""

    code = "token_read_only"


TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}")
"""A token's name: it is recorded as the ``actor`` of every event its requests write."""
ENV_PREFIX = "env-"
"""The names of ``EVENTBANK_TOKENS``' tokens (``env-0``, ``env-1``, …): no file token takes it."""


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    role: str
    sha256: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``eventbank tokens list`` shows of a token: never its secret or hash."""

    name: str
    role: str
    created_at: str | None
    last_used_at: str | None


@dataclass(frozen=True, slots=True)
class ListedToken:
    """A token a server accepts, as ``GET /tokens`` shows it: from the file, or from the
    environment (read-only: only a change of ``EVENTBANK_TOKENS`` and a restart change it)."""

    info: TokenInfo
    source: str  # "file" | "environment"

    @property
    def read_only(self) -> bool:
        return self.source == "environment"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def utc_now() -> str:
    return _utc(time.time())


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


FileSignature = tuple[int, int, int, int, int]


def _signature(path: Path) -> FileSignature | None:
    """What changes whenever the file is replaced or edited; None when there is no file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_entries(path: Path) -> list[dict[str, Any]]:
    """The file's entries as stored (extra fields kept); [] when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidInput(f"token file {path} cannot be read: {exc.strerror}") from None
    try:
        entries = json.loads(text)["tokens"]
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and all(isinstance(e[k], str) for k in ("name", "role", "sha256"))
            for e in entries
        ):
            raise TypeError("each token needs a name, a role and a sha256 (strings)")
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"token file {path} is malformed: {exc}") from None
    return entries


def _tokens_of(entries: list[dict[str, Any]], path: Path) -> list[Token]:
    tokens = [Token(e["name"], e["role"], e["sha256"]) for e in entries]
    try:
        _check_roles(tokens)
    except InvalidInput as exc:
        raise InvalidInput(f"token file {path}: {exc}") from None
    return tokens


def _info(entry: dict[str, Any]) -> TokenInfo:
    return TokenInfo(entry["name"], entry["role"], entry.get("created_at"),
                     entry.get("last_used_at"))  # fmt: skip


def check_new_token(name: str, role: str) -> None:
    """Refuse a name or role that ``add_token`` would not store (before the file is touched)."""
    if type(name) is not str or not TOKEN_NAME.fullmatch(name):
        shown = repr(name[:80] + "…" if type(name) is str and len(name) > 80 else name)
        raise InvalidTokenName(
            f"a token's name is 1-64 letters, digits, _ . : @ or -, starting with a letter or "
            f"digit; not {shown}"
        )
    if name.lower().startswith(ENV_PREFIX):
        raise InvalidTokenName(
            f"names starting with {ENV_PREFIX!r} belong to EVENTBANK_TOKENS; not {name!r}"
        )
    if type(role) is not str or role not in PERMISSIONS:
        raise InvalidTokenRole(
            f"role must be one of {', '.join(PERMISSIONS)}, not {str(role)[:80]!r}"
        )


def _check_roles(tokens: Sequence[Token]) -> None:
    for token in tokens:
        if token.role not in PERMISSIONS:
            raise InvalidInput(f"token {token.name!r} has unknown role {token.role!r}")


def _env_tokens(env_value: str | None) -> list[Token]:
    tokens = []
    for n, pair in enumerate(filter(None, (env_value or "").split(","))):
        role, _, secret = pair.strip().partition(":")
        if not secret:
            raise InvalidInput("EVENTBANK_TOKENS entries must look like role:token")
        tokens.append(Token(f"env-{n}", role, digest(secret)))
    _check_roles(tokens)
    return tokens


class TokenStore:
    """The tokens a server accepts: the file's, re-read when it changes, and the environment's."""

    def __init__(
        self,
        tokens: list[Token],
        *,
        path: Path | None = None,
        env_tokens: Sequence[Token] = (),
        signature: FileSignature | None = None,
        reload_check_every_s: float = RELOAD_CHECK_EVERY_S,
    ):
        _check_roles(tokens)
        self.tokens = tokens  # replaced whole on reload, never changed in place
        self.path = path
        self.reload_check_every_s = reload_check_every_s
        self._env_tokens = list(env_tokens)
        self._signature = signature
        self._checked_at = time.monotonic()
        self._reload_lock = threading.Lock()
        self._used: dict[str, float] = {}  # sha256 -> when it last authenticated (time.time)
        self._recorded: dict[str, float] = {}  # sha256 -> the use last written to the file

    @classmethod
    def load(
        cls,
        path: Path | None,
        env_value: str | None = None,
        *,
        reload_check_every_s: float = RELOAD_CHECK_EVERY_S,
    ) -> TokenStore:
        """The file's tokens (none if it is missing) and ``EVENTBANK_TOKENS``'s; a malformed file
        or entry is InvalidInput."""
        env_tokens = _env_tokens(env_value)
        # The signature is taken before the file is read: a change in between is seen as one
        # at the next check, not missed.
        signature = _signature(path) if path is not None else None
        file_tokens = _tokens_of(_read_entries(path), path) if path is not None else []
        return cls(
            [*file_tokens, *env_tokens],
            path=path,
            env_tokens=env_tokens,
            signature=signature,
            reload_check_every_s=reload_check_every_s,
        )

    def authenticate(self, presented: str) -> Token | None:
        """The token matching ``presented``; every stored hash is compared, in constant time."""
        self._reload_if_changed()
        presented_digest = digest(presented)
        found = None
        for token in self.tokens:
            if hmac.compare_digest(token.sha256, presented_digest):
                found = token
        if found is not None:
            self._used[found.sha256] = time.time()
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

    def _reload_if_changed(self, *, now: bool = False) -> None:
        """One ``stat`` at most every ``reload_check_every_s`` (or ``now``); the file re-read if
        it changed."""
        if self.path is None:
            return
        if not now and time.monotonic() - self._checked_at < self.reload_check_every_s:
            return
        with self._reload_lock:
            if not now and time.monotonic() - self._checked_at < self.reload_check_every_s:
                return  # another thread checked meanwhile
            self._checked_at = time.monotonic()
            try:
                signature = _signature(self.path)
            except OSError as exc:
                log.error("token file %s cannot be checked (%s); keeping the tokens loaded "
                          "before", self.path, exc.strerror)  # fmt: skip
                return
            if signature == self._signature:
                return
            self._signature = signature  # a bad version is reported once, not every second
            try:
                file_tokens = _tokens_of(_read_entries(self.path), self.path)
            except InvalidInput as exc:
                log.error("%s; keeping the tokens loaded before", exc)
                return
            before, self.tokens = self.tokens, [*file_tokens, *self._env_tokens]
            if signature is None:
                log.warning("token file %s is gone: only EVENTBANK_TOKENS tokens are accepted",
                            self.path)  # fmt: skip
            elif set(self.tokens) != set(before):  # not when only last use was written
                log.info("token file %s reloaded: %d token(s)", self.path, len(file_tokens))

    def listing(self) -> list[ListedToken]:
        """Every token this server accepts: the file's (read now), then the environment's. Each
        was last used when the file says or, if later, when this process last saw it; never a
        secret or a hash."""
        entries = _read_entries(self.path) if self.path is not None else []
        if self.path is not None:
            _tokens_of(entries, self.path)
        used = self._used.copy()

        def seen(sha256: str, recorded: str | None) -> str | None:
            here = _utc(used[sha256]) if sha256 in used else None
            return max((t for t in (recorded, here) if t), default=None)  # ISO sorts

        listed = []
        for entry in entries:
            info = _info(entry)
            last = seen(entry["sha256"], info.last_used_at)
            listed.append(ListedToken(replace(info, last_used_at=last), "file"))
        for token in self._env_tokens:
            last = seen(token.sha256, None)
            listed.append(ListedToken(TokenInfo(token.name, token.role, None, last), "environment"))
        return listed

    def add(self, name: str, role: str) -> tuple[str, TokenInfo]:
        """``add_token`` to this server's file, in force for this server at once: the secret
        (to show once) and the new token."""
        added = _add_entry(self._writable(), name, role)
        assert added is not None  # only ensure_admin_token may add nothing
        self._reload_if_changed(now=True)
        secret, info = added
        log.info("token %r (%s) added by %s", info.name, info.role, current_actor.get())
        return secret, info

    def revoke(self, name: str) -> TokenInfo:
        """``revoke_token`` (never the file's last admin token) from this server's file, refused
        by this server at once; an environment token is read-only."""
        if any(token.name == name for token in self._env_tokens):
            raise TokenReadOnly(
                f"{name!r} comes from EVENTBANK_TOKENS: change the environment and restart"
            )
        revoked = revoke_token(self._writable(), name)
        self._reload_if_changed(now=True)
        log.info("token %r (%s) revoked by %s", revoked.name, revoked.role, current_actor.get())
        return revoked

    def _writable(self) -> Path:
        if self.path is None:
            raise TokenReadOnly("this server has no token file: its tokens come from "
                                "EVENTBANK_TOKENS only")  # fmt: skip
        return self.path

    def record_last_used(self) -> None:
        """Write when tokens were last used to the file, if any was used since the last write;
        a failure (a read-only file, say) is logged and never affects authentication."""
        used = self._used.copy()  # one step under the GIL: requests go on adding to it
        pending = {h: t for h, t in used.items() if t > self._recorded.get(h, 0.0)}
        if self.path is None or not pending:
            return
        stamps = {h: _utc(t) for h, t in pending.items()}

        def stamp(entries: list[dict[str, Any]]) -> bool:
            changed = False
            for entry in entries:
                when = stamps.get(entry["sha256"])
                if when is not None and when > str(entry.get("last_used_at") or ""):
                    entry["last_used_at"] = when  # the latest of every server's, ISO sorts
                    changed = True
            return changed

        try:
            _update(self.path, stamp)
        except (OSError, InvalidInput) as exc:
            log.warning("cannot record when tokens were last used in %s: %s", self.path, exc)
            return
        self._recorded.update(pending)

    def keep_recording_last_used(
        self, stop: threading.Event, every_s: float = RECORD_LAST_USED_EVERY_S
    ) -> None:
        """Until ``stop``: ``record_last_used`` every ``every_s``, and once more at the end."""
        while not stop.wait(every_s):
            self.record_last_used()
        self.record_last_used()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the token file's directory (the file itself is replaced, so
    it cannot carry the lock); every writer of the file takes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _update(path: Path, change: Callable[[list[dict[str, Any]]], bool]) -> None:
    """Read the file's entries, let ``change`` edit them, and replace the file atomically if it
    says it changed something; all under the lock."""
    with _locked(path):
        entries = _read_entries(path)
        _tokens_of(entries, path)  # refuse to rewrite a file with an unknown role in it
        if change(entries):
            _write_entries(path, entries)


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"tokens": entries}, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def add_token(path: Path, name: str, role: str, *, unless_role_exists: bool = False) -> str | None:
    """Create a token, store only its hash (and when it was made) in ``path``, and return the
    token (shown once). With ``unless_role_exists``: None, and nothing added, if the file holds
    a token of ``role`` already. A bad name or role, or a name taken, changes nothing."""
    added = _add_entry(path, name, role, unless_role_exists=unless_role_exists)
    return added[0] if added is not None else None


def _add_entry(
    path: Path, name: str, role: str, *, unless_role_exists: bool = False
) -> tuple[str, TokenInfo] | None:
    """``add_token``'s work: the secret and the entry as stored, or None if nothing was added."""
    check_new_token(name, role)
    secret = "eb_" + secrets.token_urlsafe(32)
    added: list[dict[str, Any]] = []

    def add(entries: list[dict[str, Any]]) -> bool:
        if unless_role_exists and any(e["role"] == role for e in entries):
            return False
        if any(e["name"] == name for e in entries):
            raise TokenExists(f"a token named {name!r} already exists in {path}")
        added.append({"name": name, "role": role, "sha256": digest(secret),
                      "created_at": utc_now()})  # fmt: skip
        entries.append(added[0])
        return True

    _update(path, add)
    return (secret, _info(added[0])) if added else None


def ensure_admin_token(path: Path) -> str | None:
    """On first start: create an admin token and return it; afterwards None."""
    return add_token(path, "admin", "admin", unless_role_exists=True)


def list_tokens(path: Path) -> list[TokenInfo]:
    """The file's tokens, by name and role, with when each was created and last used (None
    where the file does not say: tokens made before eventbank recorded it, or never used)."""
    _require_file(path)
    entries = _read_entries(path)
    _tokens_of(entries, path)
    return [_info(e) for e in entries]


def revoke_token(path: Path, name: str, *, force: bool = False) -> TokenInfo:
    """Remove the token ``name`` from the file; a running server refuses it within seconds.
    The file's last admin token is kept unless ``force``: without one the running server has
    no admin until it restarts (a start with no admin token in the file makes a new one)."""
    _require_file(path)
    revoked: list[dict[str, Any]] = []

    def revoke(entries: list[dict[str, Any]]) -> bool:
        revoked[:] = [e for e in entries if e["name"] == name]
        if not revoked:
            known = ", ".join(e["name"] for e in entries) or "none"
            raise TokenNotFound(f"no token named {name!r} in {path} (tokens: {known})")
        admins_left = [e for e in entries if e["role"] == "admin" and e["name"] != name]
        if revoked[0]["role"] == "admin" and not admins_left and not force:
            raise LastAdminToken(
                f"{name!r} is the last admin token in {path}; revoking it leaves the running "
                "server without an admin until it restarts and makes a new one. Add another "
                "admin token first"
            )
        entries[:] = [e for e in entries if e["name"] != name]
        return True

    _update(path, revoke)
    return _info(revoked[0])


def _require_file(path: Path) -> None:
    """A command about existing tokens, pointed at no file, says so: it was likely run from
    another directory, and "no tokens" would mislead."""
    if not path.exists():
        raise InvalidInput(
            f"no token file at {path.absolute()} (`eventbank serve` makes one on first start; "
            "or pass --tokens-file)"
        )
