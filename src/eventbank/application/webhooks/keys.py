"""The key that encrypts webhook secrets at rest, and the secrets themselves.

The event store holds a subscription's signing secret only as a Fernet token (AES-128-CBC and
HMAC-SHA256) under this key; the key lives in a file of its own (mode 0600) or in
``EVENTBANK_WEBHOOK_KEY``, never in the store. Every process that delivers or rotates needs the
same key.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from eventbank.application.webhooks.errors import InvalidWebhookKey, WebhookKeyMismatch

SECRET_PREFIX = "whsec_"
KEY_ENV = "EVENTBANK_WEBHOOK_KEY"


def check_key(key: bytes) -> bytes:
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise InvalidWebhookKey(
            "the webhook key is not a Fernet key (32 bytes, url-safe base64)"
        ) from None
    return key


def load_or_create_key(path: Path) -> bytes:
    """The key that encrypts webhook secrets at rest: ``EVENTBANK_WEBHOOK_KEY`` if set, else the
    key in ``path``, made (mode 0600, atomically: two processes starting together end up with
    the same key) if the file does not exist. Every process of one store needs the same key."""
    env = os.environ.get(KEY_ENV, "").strip()
    if env:
        return check_key(env.encode())
    path = Path(path)
    try:
        return check_key(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    key = Fernet.generate_key()
    fd, temporary = tempfile.mkstemp(prefix=".webhook-key-", dir=path.parent or ".")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(key + b"\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)  # fails if another process made it first
        except FileExistsError:
            return check_key(path.read_bytes().strip())
    finally:
        os.unlink(temporary)
    return key


def new_secret() -> str:
    return SECRET_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


class Vault:
    """Encrypts secrets for the store and decrypts them to sign. ``key`` may be a function that
    loads (or makes) it, called on first use: a command that never touches a secret (listing,
    pausing) then neither needs the key nor makes a key file."""

    def __init__(self, key: bytes | Callable[[], bytes]):
        self._load = key if callable(key) else None
        self._loaded = None if callable(key) else Fernet(check_key(key))

    @property
    def _fernet(self) -> Fernet:
        if self._loaded is None:
            assert self._load is not None
            self._loaded = Fernet(check_key(self._load()))
        return self._loaded

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise WebhookKeyMismatch(
                "the webhook key does not decrypt this subscription's secret; every process "
                "of one store needs the same key (EVENTBANK_WEBHOOK_KEY or its key file)"
            ) from None
