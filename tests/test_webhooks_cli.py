"""`eventbank webhooks …` run as a user runs it: real subprocesses of the installed command on an
SQLite store in the test's folder, a real loopback receiver (tests/test_webhooks.py), and a real
`eventbank webhooks run` worker serving its metrics. Secrets shown once and never stored in clear
text; delivery in feed order, signed; pause, resume, replay, rotation, SIGTERM and remove; and
bad input refused with one stderr line, the documented exit code, and nothing stored."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from eventbank.engines.urls import open_store
from eventbank.webhooks import SIGNATURE_HEADER, SignatureError, parse, verify
from tests.serving import EVENTBANK, free_port
from tests.test_cli import cli_against
from tests.test_webhooks import Receiver

T = TypeVar("T")

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# The caller's EVENTBANK_* settings (a store, a webhook key) must not leak into these processes;
# a wide terminal so that tables print whole ids.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBANK_")} | {"COLUMNS": "200"}


@dataclass
class Bank:
    """An SQLite store in ``folder``; ``run``: the installed command, a process of its own run
    from ``folder``; ``local``: the same CLI in this process (tests/test_cli.py), for setting up
    and checking (a process costs most of a second to start)."""

    folder: Path
    cli: Callable[..., tuple[int, str, str]]

    @property
    def url(self) -> str:
        return f"sqlite:///{self.folder / 'bank.db'}"

    @property
    def key_file(self) -> Path:
        return self.folder / "webhook.key"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [EVENTBANK, "--store", self.url, *args],
            cwd=self.folder, env=ENV, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    def webhooks(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("webhooks", command, *args, "--webhook-key-file", str(self.key_file))

    def webhooks_ok(self, command: str, *args: str) -> str:
        done = self.webhooks(command, *args)
        assert (done.returncode, done.stderr) == (0, ""), (command, args, done)
        return done.stdout

    def local(self, *args: str) -> str:
        code, out, err = self.cli(*args)
        assert (code, err) == (0, ""), (args, code, err)
        return out

    def listed(self) -> str:
        """`webhooks list --json`, as printed."""
        return self.local("webhooks", "list", "--json", "--webhook-key-file", str(self.key_file))

    def status(self, webhook_id: str) -> dict[str, Any]:
        shown = self.local("webhooks", "show", webhook_id, "--webhook-key-file", str(self.key_file))
        return json.loads(shown)["status"]

    def feed(self) -> list[tuple[int, str, str, str]]:
        """(position, event id, stream, type) of every stored event, read from the store."""
        store = open_store(self.url)
        try:
            return [(e.position or 0, e.event_id, e.aggregate_id, e.event_type)
                    for e in store.read_all(0, 1000)]  # fmt: skip
        finally:
            store.close()


def new_bank(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any = None) -> Bank:
    """A new store with alice's account (100.00 USD) in ``folder``."""
    monkeypatch.chdir(folder)  # whatever a command made by default would land there
    bank = Bank(folder, cli_against(f"sqlite:///{folder / 'bank.db'}",
                                    f"sqlite:///{folder / 'bank.read.db'}", monkeypatch,
                                    capsys))  # fmt: skip
    assert bank.cli("init")[0] == 0
    bank.local("open", "alice", "--owner", "Alice", "--type", "CHECKING",
               "--initial-deposit", "100")  # fmt: skip
    return bank


@pytest.fixture
def bank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Bank:
    return new_bank(tmp_path, monkeypatch, capsys)


def wait_for(what: str, condition: Callable[[], T], timeout_s: float = 30.0) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def files_bytes(folder: Path) -> bytes:
    """Every file the store left in ``folder`` (event store, read store, WAL, …)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


# ------------------------------------------------------------------ add, list, show


def test_add_prints_the_id_and_secret_once_and_list_and_show_never_again(bank: Bank) -> None:
    feed_end = bank.feed()[-1][0]
    added = json.loads(bank.webhooks_ok(
        "add", "http://127.0.0.1:9/hooks", "--allow-http", "--type", "FundsDeposited",
        "--type", "TransferredIn", "--description", "the ledger mirror", "--json",
    ))  # fmt: skip
    secret = added.pop("secret")
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{40,}", secret), secret
    webhook_id = added["webhook_id"]
    assert UUID.fullmatch(webhook_id)
    assert added == {"webhook_id": webhook_id, "url": "http://127.0.0.1:9/hooks",
                     "event_types": ["FundsDeposited", "TransferredIn"],
                     "description": "the ledger mirror", "paused": False, "failing": False,
                     "last_error": None, "created_at": added["created_at"]}  # fmt: skip

    # The text form: the id in the first line, the secret alone on the last.
    out = bank.webhooks_ok("add", "http://127.0.0.1:9/other", "--allow-http")
    found = UUID.search(out)
    assert found and f"webhook {found.group()} to http://127.0.0.1:9/other" in out, out
    other_id, other_secret = found.group(), out.splitlines()[-1]
    assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{40,}", other_secret) and other_secret != secret

    printed = []  # every output of list and show, to look for the secrets in
    done = bank.webhooks("list", "--json")
    printed.append(done.stdout + done.stderr)
    listed = json.loads(done.stdout)
    assert [row["webhook_id"] for row in listed] == [webhook_id, other_id]
    assert listed[0] == added  # the row add printed, less the secret
    assert (listed[1]["url"], listed[1]["event_types"]) == ("http://127.0.0.1:9/other", [])

    done = bank.webhooks("list")
    printed.append(done.stdout + done.stderr)
    mine = next(line for line in done.stdout.splitlines() if webhook_id in line)
    for cell in ("http://127.0.0.1:9/hooks", "FundsDeposited, TransferredIn", "active",
                 "the ledger mirror"):  # fmt: skip
        assert cell in mine, done.stdout
    assert re.search(rf"{other_id}.*http://127.0.0.1:9/other.*\ball\b.*\bactive\b", done.stdout)

    done = bank.webhooks("show", webhook_id)
    printed.append(done.stdout + done.stderr)
    shown = json.loads(done.stdout)
    status = shown.pop("status")
    assert shown == added
    assert status == {"webhook_id": webhook_id, "checkpoint": feed_end, "lag_events": 0,
                      "lag_capped": False, "lag_seconds": 0.0, "last_success_at": None,
                      "last_error": None, "attempts": 0, "next_attempt_at": None,
                      "failing": False, "paused": False}  # fmt: skip

    # No worker runs: a wanted event is one behind; an unwanted one is no lag.
    bank.local("withdraw", "alice", "1")
    bank.local("deposit", "alice", "5")
    done = bank.webhooks("show", webhook_id)
    printed.append(done.stdout + done.stderr)
    status = json.loads(done.stdout)["status"]
    assert (status["checkpoint"], status["lag_events"], status["paused"]) == (feed_end, 1, False)
    assert 0 < status["lag_seconds"] < 60
    assert status["last_success_at"] is None
    assert bank.status(other_id)["lag_events"] == 2  # every type

    stored = files_bytes(bank.folder)
    assert b"FundsDeposited" in stored  # the store's files are read as they are
    for s in (secret, other_secret):
        assert not any(s in text for text in printed)
        assert s.removeprefix("whsec_").encode() not in stored
    assert (bank.key_file.stat().st_mode & 0o777) == 0o600


# ------------------------------------------------------------------ a running worker


def metric(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    assert found, f"{sample} not in:\n{text}"
    return float(found.group(1))


def verifies(body: bytes, header: str, secret: str) -> bool:
    try:
        verify(body, header, secret)
    except SignatureError:
        return False
    return True


def test_run_delivers_in_order_signed_and_obeys_pause_resume_replay_rotate_and_sigterm(
    bank: Bank, receiver: Receiver
) -> None:
    bank.local("open", "bob", "--owner", "Bob", "--type", "CHECKING")
    added = json.loads(bank.webhooks_ok("add", receiver.url, "--allow-http", "--json"))
    webhook_id, secret = added["webhook_id"], added["secret"]
    start = bank.feed()[-1][0]  # the subscription's own events are never delivered

    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    out_path, err_path = bank.folder / "run.out", bank.folder / "run.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        worker = subprocess.Popen(
            [EVENTBANK, "--store", bank.url, "webhooks", "run", "--allow-http",
             "--webhook-key-file", str(bank.key_file), "--metrics-port", str(port)],
            cwd=bank.folder, env=ENV, stdout=out, stderr=err,
        )  # fmt: skip
    try:
        lag_sample = f'eventbank_webhook_lag_events{{webhook_id="{webhook_id}"}}'
        delivered = 'eventbank_webhook_deliveries_total{outcome="delivered"}'

        def metrics() -> str:
            """The metrics once they show a delivery and this subscription caught up, else ""
            (the lag is set before a post and back to 0 only after its checkpoint commits)."""
            try:
                text = httpx.get(metrics_url, timeout=2).text
            except httpx.TransportError:
                assert worker.poll() is None, err_path.read_text()
                return ""
            if lag_sample not in text or delivered not in text:
                return ""
            return text if metric(text, lag_sample) == 0 and metric(text, delivered) > 0 else ""

        # Every wanted event made after the subscription, in feed order, signed.
        bank.local("transfer", "alice", "bob", "5")
        bank.local("deposit", "bob", "2.50")
        wanted = [e for e in json.loads(bank.local("events", "--json", "--after", str(start)))
                  if not e["aggregate_id"].startswith("webhook#")]  # fmt: skip
        assert [e["event_type"] for e in wanted] == [
            "TransferredOut", "TransferredIn", "FundsDeposited"
        ]  # fmt: skip
        wait_for("the first events", lambda: len(receiver.events()) >= len(wanted))
        assert [(e["event_id"], e["position"], e["event_type"])
                for e in receiver.events(secret)] == [
            (e["event_id"], e["position"], e["event_type"]) for e in wanted
        ]  # fmt: skip
        assert all(json.loads(body)["webhook_id"] == webhook_id for _, body in receiver.accepted())
        text = wait_for("the delivery metrics", metrics)
        assert metric(text, 'eventbank_webhook_deliveries_total{outcome="failed"}') == 0

        # A new secret, printed once; the old one keeps signing beside it (the overlap).
        new_secret = bank.webhooks_ok("rotate-secret", webhook_id).strip()
        assert re.fullmatch(r"whsec_[A-Za-z0-9_-]{40,}", new_secret) and new_secret != secret

        # Paused: an event made meanwhile is not delivered. `run` reads the subscriptions
        # again every second; it is given 5 s to see the pause (and the rotation), since a
        # busy machine can hold it up past the next read.
        assert bank.webhooks_ok("pause", webhook_id) == f"webhook {webhook_id} paused\n"
        time.sleep(5)
        requests_before = len(receiver.requests)
        bank.local("withdraw", "alice", "1")
        made_at, paused_event = time.monotonic(), bank.feed()[-1]
        assert paused_event[3] == "FundsWithdrawn"
        status = bank.status(webhook_id)
        assert status["paused"] and status["lag_events"] == 1
        assert status["checkpoint"] >= wanted[-1]["position"] and status["last_success_at"]
        assert (status["attempts"], status["last_error"]) == (0, None)
        time.sleep(max(0.0, made_at + 2 - time.monotonic()))
        assert len(receiver.requests) == requests_before

        assert bank.webhooks_ok("resume", webhook_id) == f"webhook {webhook_id} resumed\n"
        wait_for("the event made while paused", lambda: len(receiver.events()) > len(wanted))
        assert [e["event_id"] for e in receiver.events()[len(wanted) :]] == [paused_event[1]]
        headers, body = receiver.accepted()[-1]
        assert len(parse(headers[SIGNATURE_HEADER])[1]) == 2  # one v1= per secret
        assert verifies(body, headers[SIGNATURE_HEADER], secret)
        assert verifies(body, headers[SIGNATURE_HEADER], new_secret)
        assert not verifies(body, headers[SIGNATURE_HEADER], "whsec_" + "x" * 43)

        # Replay from a position: the wanted events from it on, again, in order.
        from_position = wanted[1]["position"]
        again = [(p, i) for p, i, stream, _ in bank.feed()
                 if p >= from_position and not stream.startswith("webhook#")]  # fmt: skip
        assert [i for _, i in again] == [wanted[1]["event_id"], wanted[2]["event_id"],
                                         paused_event[1]]  # fmt: skip
        mark = len(receiver.events())
        said = bank.webhooks_ok("replay", webhook_id, "--from-position", str(from_position))
        assert said == f"webhook {webhook_id} delivers again from position {from_position}\n"
        wait_for("the replay", lambda: len(receiver.events()) >= mark + len(again))
        assert [(e["position"], e["event_id"]) for e in receiver.events()[mark:]] == again
        for headers, body in receiver.accepted()[-1:]:
            assert verifies(body, headers[SIGNATURE_HEADER], secret)
            assert verifies(body, headers[SIGNATURE_HEADER], new_secret)

        # SIGTERM: `run` stops, exit code 0, within a few seconds.
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    assert len(receiver.events()) == mark + len(again)  # nothing beyond the range asked
    assert "delivering webhooks" in out_path.read_text()
    assert "Traceback" not in err_path.read_text(), err_path.read_text()

    assert bank.webhooks_ok("remove", webhook_id) == f"webhook {webhook_id} removed\n"
    assert json.loads(bank.webhooks_ok("list", "--json")) == []


# ------------------------------------------------------------------ refusals


@pytest.fixture(scope="module")
def refusals_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one subscription, shared by the refusals below: each proves it stored
    nothing, so the next finds the store as set up here."""
    folder = tmp_path_factory.mktemp("refusals")
    with pytest.MonkeyPatch.context() as monkeypatch:
        bank = new_bank(folder, monkeypatch)
        bank.local("webhooks", "add", "http://127.0.0.1:9/hooks", "--allow-http",
                   "--webhook-key-file", str(bank.key_file))  # fmt: skip
    return folder


@pytest.fixture
def refusals(refusals_folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> Bank:
    monkeypatch.chdir(refusals_folder)
    return Bank(refusals_folder, cli_against(f"sqlite:///{refusals_folder / 'bank.db'}",
                                             f"sqlite:///{refusals_folder / 'bank.read.db'}",
                                             monkeypatch, capsys))  # fmt: skip


def refused(bank: Bank, args: list[str], code: int, message: str) -> str:
    """Runs ``webhooks ARGS``: one line on stderr holding ``message``, exit ``code``, nothing
    on stdout, no traceback, and neither the store nor `list --json` changed."""
    feed, listed = bank.feed(), bank.listed()
    assert len(json.loads(listed)) == 1
    done = bank.webhooks(*args)
    assert done.returncode == code, done
    assert done.stdout == "", done
    assert done.stderr.count("\n") == 1 and done.stderr.endswith("\n"), done.stderr
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert bank.feed() == feed
    assert bank.listed() == listed
    return done.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "http://127.0.0.1:9/hooks"], 2,
         "error: url must be https; http to a loopback host is for development and must be "
         "allowed (eventbank serve --allow-http-webhooks; eventbank webhooks --allow-http)"),
        (["add", "https://"], 2, "error: url has no host"),
        (["add", "https://10.0.0.1/hooks"], 2,
         "error: url's host '10.0.0.1' resolves to 10.0.0.1, a private address"),
        (["add", "https://10.0.0.1/hooks", "--allow-private", "--type", "MoneyMoved"], 2,
         "error: unknown event type(s) 'MoneyMoved'; known: AccountClosed"),
        (["show", UNKNOWN_ID], 3, f"refused: webhook '{UNKNOWN_ID}' does not exist"),
        (["pause", UNKNOWN_ID], 3, f"refused: webhook '{UNKNOWN_ID}' does not exist"),
        (["remove", UNKNOWN_ID], 3, f"refused: webhook '{UNKNOWN_ID}' does not exist"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_with_the_documented_code_and_stores_nothing(
    refusals: Bank, args: list[str], code: int, message: str
) -> None:
    refused(refusals, args, code, message)


def test_a_negative_replay_position_is_a_usage_error(refusals: Bank) -> None:
    webhook_id = json.loads(refusals.listed())[0]["webhook_id"]
    err = refused(refusals, ["replay", webhook_id, "--from-position", "-1"], 2,
                  "error: Invalid value for '--from-position'")  # fmt: skip
    assert "greater than or equal to 0" in err


def test_run_on_a_metrics_port_in_use_exits_2(refusals: Bank) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = refused(refusals, ["run", "--allow-http", "--metrics-port", str(port)], 2,
                      f"error: cannot serve metrics on 127.0.0.1:{port}: ")  # fmt: skip
    assert "in use" in err


def test_commands_that_touch_no_secret_make_no_key_file(bank: Bank) -> None:
    """A mistyped id or a listing in the wrong folder must not leave a new, wrong key behind
    (one that a later `add` would use while the store's secrets need the old one)."""
    assert not bank.key_file.exists()
    assert json.loads(bank.webhooks_ok("list", "--json")) == []
    assert bank.webhooks("show", UNKNOWN_ID).returncode == 3
    assert bank.webhooks("pause", UNKNOWN_ID).returncode == 3
    assert not bank.key_file.exists()
    bank.webhooks_ok("add", "http://127.0.0.1:9/hooks", "--allow-http")
    assert bank.key_file.exists()
