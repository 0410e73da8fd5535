"""``/tokens``: admins list, add and revoke API tokens over HTTP, on a real ``eventbank serve``
with a real token file, through the functions ``eventbank tokens`` uses."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventbank.http.auth import TokenReadOnly, TokenStore, add_token, digest
from reliability.serve import ServeProcess
from tests.serving import AUDITOR, EVENTBANK, TELLER, Server, serve

FIELDS = {"name", "role", "created_at", "last_used_at", "source", "read_only"}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("tokens-http"))


@pytest.fixture
def admin(server) -> Iterator[httpx.Client]:
    with server.client(server.admin) as client:
        yield client


def new_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def stored(tokens_file: Path) -> list[tuple[str, str, str, str | None]]:
    """The file's tokens as they matter (the server may stamp ``last_used_at`` at any time)."""
    entries = json.loads(tokens_file.read_text())["tokens"]
    return [(e["name"], e["role"], e["sha256"], e.get("created_at")) for e in entries]


def status_within(server: Server, token: str, path: str, wanted: int, seconds: float) -> int:
    """Poll ``GET path`` with ``token`` until it answers ``wanted`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    with server.client(token) as client:
        while True:
            status = client.get(path).status_code
            if status == wanted or time.monotonic() > deadline:
                return status
            time.sleep(0.05)


# ------------------------------------------------------------------ list


def test_admin_lists_every_token_never_a_secret_or_hash(server, admin):
    listed = admin.get("/tokens")
    assert listed.status_code == 200, listed.text
    items = {t["name"]: t for t in listed.json()["items"]}
    assert all(set(t) == FIELDS for t in items.values())
    first = items["admin"]  # made by the first start
    assert (first["role"], first["source"], first["read_only"]) == ("admin", "file", False)
    assert first["created_at"].endswith("Z")
    assert first["last_used_at"] is not None  # this very request: known before the file says
    assert items["env-0"] == {"name": "env-0", "role": "teller", "created_at": None,
                              "last_used_at": items["env-0"]["last_used_at"],
                              "source": "environment", "read_only": True}  # fmt: skip
    assert (items["env-1"]["role"], items["env-1"]["read_only"]) == ("auditor", True)

    hashes = [sha for _, _, sha, _ in stored(server.tokens_file)]
    for secret in (server.admin, TELLER, AUDITOR):
        hashes.append(digest(secret))
        assert secret not in listed.text
    assert not any(h in listed.text or h[:16] in listed.text for h in hashes)


def test_a_token_used_shows_when_at_once(server, admin):
    with server.client(TELLER) as teller:
        assert teller.get("/accounts").status_code == 200
    after = {t["name"]: t for t in admin.get("/tokens").json()["items"]}["env-0"]
    assert after["last_used_at"] is not None and after["last_used_at"].endswith("Z")


# ------------------------------------------------------------------ add


@pytest.mark.parametrize(
    ("role", "allowed", "forbidden"),
    [("teller", ("GET", "/accounts"), ("GET", "/events")),
     ("auditor", ("GET", "/events"), ("POST", "/accounts")),
     ("admin", ("GET", "/tokens"), None)],
)  # fmt: skip
def test_a_new_token_is_shown_once_and_works_at_once_for_its_role(
    server, admin, role, allowed, forbidden
):
    name = new_name(role)
    made = admin.post("/tokens", json={"name": name, "role": role})
    assert made.status_code == 201, made.text
    body = made.json()
    secret = body.pop("token")
    assert secret.startswith("eb_") and len(secret) > 40
    assert body == {"name": name, "role": role, "created_at": body["created_at"],
                    "last_used_at": None, "source": "file", "read_only": False}  # fmt: skip
    assert made.headers["cache-control"] == "no-store"

    # only its hash is kept, and the listing never shows it again
    assert secret not in server.tokens_file.read_text()
    assert (name, role, digest(secret), body["created_at"]) in stored(server.tokens_file)
    listed = admin.get("/tokens")
    assert name in listed.text and secret not in listed.text

    # at once: no waiting for the file check
    with server.client(secret) as new:
        whoami = new.get("/whoami")
        assert whoami.status_code == 200, whoami.text
        assert (whoami.json()["name"], whoami.json()["role"]) == (name, role)
        assert new.request(*allowed, json={}).status_code not in (401, 403)
        if forbidden is not None:
            problem(new.request(*forbidden, json={}), 403, "forbidden")


def test_a_token_made_over_http_is_the_clis_token(server, admin):
    name = new_name("shared")
    assert admin.post("/tokens", json={"name": name, "role": "auditor"}).status_code == 201
    listed = subprocess.run(
        [EVENTBANK, "tokens", "list", "--json", "--tokens-file", str(server.tokens_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert name in {t["name"] for t in json.loads(listed.stdout)}
    revoked = subprocess.run(
        [EVENTBANK, "tokens", "revoke", name, "--tokens-file", str(server.tokens_file)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert revoked.returncode == 0, revoked.stderr
    assert name not in {t["name"] for t in admin.get("/tokens").json()["items"]}


def test_a_retry_mints_no_second_secret(server, admin):
    name = new_name("retry")
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = admin.post("/tokens", json={"name": name, "role": "teller"}, headers=key)
    assert first.status_code == 201
    again = problem(admin.post("/tokens", json={"name": name, "role": "teller"}, headers=key),
                    409, "token_exists")  # fmt: skip
    assert "token" not in again and "eb_" not in json.dumps(again)
    assert [e for e in stored(server.tokens_file) if e[0] == name] == [
        (name, "teller", digest(first.json()["token"]), first.json()["created_at"])
    ]
    with server.client(first.json()["token"]) as still:
        assert still.get("/whoami").status_code == 200


# ------------------------------------------------------------------ revoke


def test_a_revoked_token_is_refused_within_seconds(server, admin):
    name = new_name("leaver")
    secret = admin.post("/tokens", json={"name": name, "role": "teller"}).json()["token"]
    assert status_within(server, secret, "/accounts", 200, 5) == 200

    revoked = admin.delete(f"/tokens/{name}")
    assert (revoked.status_code, revoked.content) == (204, b"")
    assert status_within(server, secret, "/accounts", 401, 2) == 401
    assert name not in {t["name"] for t in admin.get("/tokens").json()["items"]}
    assert name not in {e[0] for e in stored(server.tokens_file)}
    problem(admin.delete(f"/tokens/{name}"), 404, "token_not_found")  # once only
    assert admin.get("/whoami").status_code == 200  # the others still work


def test_refusals_change_nothing(server, admin):
    taken = new_name("taken")
    assert admin.post("/tokens", json={"name": taken, "role": "teller"}).status_code == 201
    before = stored(server.tokens_file)
    refusals = [
        (admin.post("/tokens", json={"name": taken, "role": "auditor"}), 409, "token_exists"),
        (admin.post("/tokens", json={"name": "x", "role": "boss"}), 422, "invalid_token_role"),
        (admin.post("/tokens", json={"name": "x", "role": "Admin"}), 422, "invalid_token_role"),
        (admin.post("/tokens", json={"name": "has space", "role": "teller"}), 422,
         "invalid_token_name"),
        (admin.post("/tokens", json={"name": "", "role": "teller"}), 422, "invalid_token_name"),
        (admin.post("/tokens", json={"name": "a" * 65, "role": "teller"}), 422,
         "invalid_token_name"),
        (admin.post("/tokens", json={"name": "-x", "role": "teller"}), 422, "invalid_token_name"),
        (admin.post("/tokens", json={"name": "env-0", "role": "admin"}), 422,
         "invalid_token_name"),
        (admin.post("/tokens", json={"name": "ENV-9", "role": "admin"}), 422,
         "invalid_token_name"),
        (admin.post("/tokens", json={"name": "x"}), 422, "validation_error"),
        (admin.post("/tokens", json={"name": 5, "role": "teller"}), 422, "validation_error"),
        (admin.post("/tokens", json={"name": "x", "role": "teller", "sha256": "00"}), 422,
         "validation_error"),
        (admin.post("/tokens", content=b"{", headers={"content-type": "application/json"}),
         400, "malformed_json"),
        (admin.delete("/tokens/nobody-at-all"), 404, "token_not_found"),
        (admin.delete("/tokens/env-0"), 409, "token_read_only"),
    ]  # fmt: skip
    for response, status, code in refusals:
        problem(response, status, code)
    assert stored(server.tokens_file) == before
    with server.client(TELLER) as teller:  # the environment's token still works
        assert teller.get("/whoami").status_code == 200


@pytest.mark.parametrize("who", [TELLER, AUDITOR, "wrong-token", None])
def test_only_admins_manage_tokens(server, who):
    before = stored(server.tokens_file)
    status, code = (401, "unauthorized") if who in ("wrong-token", None) else (403, "forbidden")
    with server.client(who) as client:
        problem(client.get("/tokens"), status, code)
        problem(client.post("/tokens", json={"name": new_name(), "role": "admin"}), status, code)
        problem(client.delete("/tokens/admin"), status, code)
        problem(client.delete("/tokens/nobody"), status, code)  # no telling which names exist
    assert stored(server.tokens_file) == before


@pytest.fixture
def fresh_server(tmp_path) -> Iterator[Server]:
    """A server of its own: the module's may have gained admin tokens from other tests."""
    yield from serve(tmp_path)


def test_the_last_admin_token_is_never_revoked(fresh_server):
    server = fresh_server
    with server.client(server.admin) as admin:
        before = stored(server.tokens_file)
        refused = problem(admin.delete("/tokens/admin"), 409, "last_admin_token")
        assert "--force" not in refused["detail"]  # the CLI's way out, not HTTP's
        assert stored(server.tokens_file) == before
        assert admin.get("/tokens").status_code == 200  # still an admin

        # with a second admin, either may go, even the one asking; never both
        second = admin.post("/tokens", json={"name": "ops", "role": "admin"}).json()["token"]
        assert admin.delete("/tokens/admin").status_code == 204
        problem(admin.get("/tokens"), 401, "unauthorized")
    with server.client(second) as ops:
        problem(ops.delete("/tokens/ops"), 409, "last_admin_token")
    assert [e[0] for e in stored(server.tokens_file)] == ["ops"]


# ------------------------------------------------------------------ the store behind the routes


def test_a_change_through_the_store_holds_for_it_at_once(tmp_path):
    """Not at the next look at the file (an hour away here): at once."""
    file = tmp_path / "tokens.json"
    add_token(file, "admin", "admin")
    tokens = TokenStore.load(file, "teller:from-env", reload_check_every_s=3600)
    secret, info = tokens.add("clerk", "teller")
    assert (info.name, info.role, info.last_used_at) == ("clerk", "teller", None)
    assert tokens.authenticate(secret).name == "clerk"
    assert tokens.revoke("clerk").name == "clerk"
    assert tokens.authenticate(secret) is None
    with pytest.raises(TokenReadOnly):
        tokens.revoke("env-0")
    assert tokens.authenticate("from-env") is not None


def test_a_server_without_a_token_file_changes_nothing(tmp_path):
    tokens = TokenStore.load(None, "admin:from-env")
    assert [(t.info.name, t.source) for t in tokens.listing()] == [("env-0", "environment")]
    with pytest.raises(TokenReadOnly):
        tokens.add("clerk", "teller")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ several workers


def test_with_several_workers_every_worker_follows_within_seconds(postgres_store_url, tmp_path):
    """Each worker has its own token store: the one that made the change follows at once, the
    others at their next look at the file (at most a second later)."""
    boss = f"boss-{uuid.uuid4().hex}"
    server = ServeProcess(postgres_store_url, tmp_path, {"admin": boss}, workers=2)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"Authorization": f"Bearer {boss}"}) as admin:  # fmt: skip
            made = admin.post("/tokens", json={"name": "till", "role": "teller"})
            assert made.status_code == 201, made.text
            secret = made.json()["token"]
            time.sleep(2.0)
            assert answers_per_worker(server.url, secret) == {200}

            assert admin.delete("/tokens/till").status_code == 204
            time.sleep(2.0)
            assert answers_per_worker(server.url, secret) == {401}
    finally:
        server.stop()


def answers_per_worker(url: str, token: str, each: int = 5, within_s: float = 30.0) -> set[int]:
    """The statuses of ``GET /whoami`` with ``token`` until both workers answered ``each``
    times (a fresh connection per request: the kernel hands each to either worker)."""
    seen: dict[str, list[int]] = {}
    deadline = time.monotonic() + within_s
    headers = {"Authorization": f"Bearer {token}"}
    while len(seen) < 2 or min(len(statuses) for statuses in seen.values()) < each:
        assert time.monotonic() < deadline, f"not both workers answered: {seen}"
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.get("/whoami", headers=headers)
        seen.setdefault(response.headers["x-served-by"], []).append(response.status_code)
    return {status for statuses in seen.values() for status in statuses}
