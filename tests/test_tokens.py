"""API tokens: ``eventbank tokens add|list|revoke``, and a running server that sees the token file
change within seconds (added tokens admitted, revoked ones refused) without a restart."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventbank.cli import main
from eventbank.http.auth import TokenStore, add_token, digest
from tests.serving import Server, serve, start_server, stop_server

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def tokens_cli(capsys, monkeypatch) -> Run:
    """``eventbank tokens ARGS --tokens-file FILE`` in-process; returns (code, out, err)."""
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("EVENTBANK_TOKENS_FILE", raising=False)

    def run(tokens_file: Path, *args: str) -> tuple[int, str, str]:
        argv = ["eventbank", "tokens", *args, "--tokens-file", str(tokens_file)]
        monkeypatch.setattr(sys, "argv", argv)
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def secret_of(out: str) -> str:
    return out.strip().splitlines()[-1]


# ------------------------------------------------------------------ a running server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("tokens"))


def status_within(server: Server, token: str, wanted: int, seconds: float = 5.0) -> int:
    """Poll ``GET /accounts`` with ``token`` until it answers ``wanted`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    with server.client(token) as client:
        while True:
            status = client.get("/accounts").status_code
            if status == wanted or time.monotonic() > deadline:
                return status
            time.sleep(0.1)


def test_a_token_added_to_a_running_server_works_within_seconds(server, tokens_cli):
    code, out, err = tokens_cli(server.tokens_file, "add", "late-teller", "--role", "teller")
    assert code == 0, err
    assert status_within(server, secret_of(out), 200) == 200  # no restart


def test_a_token_revoked_on_a_running_server_is_refused_within_seconds(server, tokens_cli):
    code, out, err = tokens_cli(server.tokens_file, "add", "leaver", "--role", "teller")
    assert code == 0, err
    secret = secret_of(out)
    assert status_within(server, secret, 200) == 200

    assert tokens_cli(server.tokens_file, "revoke", "leaver") == (
        0, "revoked the teller token leaver\n", ""
    )  # fmt: skip
    assert status_within(server, secret, 401) == 401
    assert status_within(server, server.admin, 200) == 200  # the others still work


def test_last_use_is_written_when_the_server_stops(tmp_path, tokens_cli):
    process, url, startup = start_server(tmp_path)
    try:
        code, out, _ = tokens_cli(tmp_path / "tokens.json", "add", "user", "--role", "auditor")
        server = Server(url, "", process, tmp_path / "tokens.json")
        assert status_within(server, secret_of(out), 200) == 200
    finally:
        stop_server(process)
    code, out, _ = tokens_cli(tmp_path / "tokens.json", "list", "--json")
    listed = {t["name"]: t for t in json.loads(out)}
    assert listed["user"]["last_used_at"] is not None
    assert listed["admin"]["last_used_at"] is None  # never presented


# ------------------------------------------------------------------ list and revoke


def test_list_shows_names_roles_and_times_never_a_secret_or_hash(tmp_path, tokens_cli):
    file = tmp_path / "tokens.json"
    secrets = [secret_of(tokens_cli(file, "add", name, "--role", role)[1])
               for name, role in [("ops", "admin"), ("till-1", "teller")]]  # fmt: skip
    hashes = [entry["sha256"] for entry in json.loads(file.read_text())["tokens"]]
    assert len(hashes) == 2

    code, out, err = tokens_cli(file, "list")
    assert (code, err) == (0, "")
    assert "ops" in out and "admin" in out and "till-1" in out and "teller" in out
    code, as_json, _ = tokens_cli(file, "list", "--json")
    listed = json.loads(as_json)
    assert [(t["name"], t["role"], t["last_used_at"]) for t in listed] == [
        ("ops", "admin", None), ("till-1", "teller", None)
    ]  # fmt: skip
    assert all(t["created_at"].endswith("Z") for t in listed)
    assert set(listed[0]) == {"name", "role", "created_at", "last_used_at"}
    for text in (out, as_json):
        assert not any(secret in text or secret[3:] in text for secret in secrets)
        assert not any(h in text or h[:16] in text for h in hashes)


def test_list_of_a_file_from_before_created_at_shows_a_dash(tmp_path, tokens_cli):
    file = tmp_path / "tokens.json"
    file.write_text(json.dumps({"tokens": [{"name": "old", "role": "admin", "sha256": "ab"}]}))
    code, out, _ = tokens_cli(file, "list")
    assert code == 0
    (row,) = [line for line in out.splitlines() if "old" in line]
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["old", "admin", "-", "-"]


def test_list_and_revoke_without_a_token_file_exit_2(tmp_path, tokens_cli):
    for args in (["list"], ["revoke", "x"]):
        code, out, err = tokens_cli(tmp_path / "missing.json", *args)
        assert (code, out) == (2, "")
        assert err.startswith(f"error: no token file at {tmp_path / 'missing.json'}")
    assert list(tmp_path.iterdir()) == []


def test_revoke_refuses_an_unknown_name_and_the_last_admin_unless_forced(tmp_path, tokens_cli):
    file = tmp_path / "tokens.json"
    tokens_cli(file, "add", "root", "--role", "admin")
    tokens_cli(file, "add", "till", "--role", "teller")
    before = file.read_text()

    code, out, err = tokens_cli(file, "revoke", "nobody")
    assert (code, out) == (2, "")
    assert err == f"error: no token named 'nobody' in {file} (tokens: root, till)\n"
    code, out, err = tokens_cli(file, "revoke", "root")
    assert (code, out) == (3, "")
    assert err.startswith("refused: 'root' is the last admin token") and "--force" in err
    assert file.read_text() == before  # nothing changed

    assert tokens_cli(file, "revoke", "root", "--force")[0] == 0
    assert [t["name"] for t in json.loads(file.read_text())["tokens"]] == ["till"]


# ------------------------------------------------------------------ the reloading store


def test_the_store_follows_the_file_and_keeps_environment_tokens(tmp_path):
    file = tmp_path / "tokens.json"
    first = add_token(file, "first", "teller")
    tokens = TokenStore.load(file, "auditor:from-env", reload_check_every_s=0)
    assert tokens.authenticate(first) is not None

    second = add_token(file, "second", "admin")
    assert tokens.authenticate(second).name == "second"
    file.write_text(json.dumps({"tokens": []}))
    assert tokens.authenticate(first) is None
    assert tokens.authenticate("from-env").role == "auditor"
    file.unlink()  # no file: only the environment's tokens
    assert tokens.authenticate(second) is None
    assert tokens.authenticate("from-env") is not None


@pytest.mark.parametrize(
    "content",
    ['{"tokens": [', '{"tokens": [{"name": "x", "role": "boss", "sha256": "00"}]}', "[]"],
)
def test_a_malformed_file_keeps_the_tokens_loaded_before_and_is_logged(tmp_path, caplog, content):
    file = tmp_path / "tokens.json"
    secret = add_token(file, "kept", "teller")
    tokens = TokenStore.load(file, reload_check_every_s=0)
    caplog.set_level(logging.ERROR, logger="eventbank.auth")

    file.write_text(content)
    assert tokens.authenticate(secret).name == "kept"  # nobody locked out
    assert tokens.authenticate(secret) is not None
    assert [r.levelname for r in caplog.records] == ["ERROR"]  # once per bad version
    assert str(file) in caplog.records[0].getMessage()


def test_the_file_is_looked_at_at_most_once_per_interval(tmp_path, monkeypatch):
    file = tmp_path / "tokens.json"
    add_token(file, "a", "teller")
    tokens = TokenStore.load(file, reload_check_every_s=3600)
    late = add_token(file, "late", "teller")
    looked: list[Path] = []
    stat = Path.stat
    monkeypatch.setattr(Path, "stat", lambda self, **kw: (looked.append(self), stat(self, **kw))[1])
    for _ in range(100):
        assert tokens.authenticate(late) is None  # not yet looked at again
    assert looked == []


def test_last_use_is_recorded_in_the_file_without_losing_a_concurrent_change(tmp_path):
    file = tmp_path / "tokens.json"
    used = add_token(file, "used", "teller")
    add_token(file, "idle", "teller")
    tokens = TokenStore.load(file, "admin:env-secret")
    assert tokens.authenticate(used) and tokens.authenticate("env-secret")
    add_token(file, "added-meanwhile", "auditor")  # after the server loaded the file

    tokens.record_last_used()
    entries = {e["name"]: e for e in json.loads(file.read_text())["tokens"]}
    assert set(entries) == {"used", "idle", "added-meanwhile"}
    assert entries["used"]["last_used_at"].endswith("Z")
    assert "last_used_at" not in entries["idle"]
    assert oct(file.stat().st_mode & 0o777) == "0o600"

    written = file.stat().st_mtime_ns
    tokens.record_last_used()  # nothing used since: the file is not rewritten
    assert file.stat().st_mtime_ns == written


def test_recording_stops_with_a_last_write(tmp_path):
    file = tmp_path / "tokens.json"
    used = add_token(file, "used", "teller")
    tokens = TokenStore.load(file)
    stop = threading.Event()
    recorder = threading.Thread(target=tokens.keep_recording_last_used, args=(stop, 3600))
    recorder.start()
    tokens.authenticate(used)
    stop.set()
    recorder.join(timeout=10)
    (entry,) = json.loads(file.read_text())["tokens"]
    assert entry["sha256"] == digest(used) and entry["last_used_at"]


def test_a_file_that_cannot_be_written_does_not_stop_authentication(tmp_path, caplog):
    file = tmp_path / "tokens.json"
    used = add_token(file, "used", "teller")
    tokens = TokenStore.load(file)
    file.with_suffix(".tmp").mkdir()  # where the new version would be written: not writable
    assert tokens.authenticate(used) is not None
    tokens.record_last_used()  # logged, not raised
    assert tokens.authenticate(used) is not None
    assert "cannot record when tokens were last used" in caplog.text
