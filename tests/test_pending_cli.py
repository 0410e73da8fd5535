"""Pending transfers from the command line: `transfer --pending [--timeout S]`, `post`, `void`,
and `balance` showing what is reserved; exit codes as documented, refusals that write nothing."""

from __future__ import annotations

import json
import time

import pytest

from tests.test_cli import cli_against, event_count


@pytest.fixture
def cli(store_url, tmp_path, capsys, monkeypatch):
    """The CLI on every engine, with ann (100.00 USD) and bob (0.00) open."""
    return opened(cli_against(store_url, f"sqlite:///{tmp_path / 'r.db'}", monkeypatch, capsys))


@pytest.fixture
def sqlite_cli(sqlite_store_url, tmp_path, capsys, monkeypatch):
    """As ``cli``, on SQLite only: for what does not depend on the engine."""
    read_store = f"sqlite:///{tmp_path / 'r.db'}"
    return opened(cli_against(sqlite_store_url, read_store, monkeypatch, capsys))


def opened(run):
    assert run("init")[0] == 0
    assert run("open", "ann", "--owner", "Ann", "--type", "CHECKING",
               "--initial-deposit", "100")[0] == 0  # fmt: skip
    assert run("open", "bob", "--owner", "Bob", "--type", "CHECKING")[0] == 0
    return run


def test_open_pending_transfers_are_listed(sqlite_cli):
    first = pending(sqlite_cli, "10.00", "--timeout", "600")
    second = pending(sqlite_cli, "5.00")
    assert sqlite_cli("void", second["transfer_id"])[0] == 0
    code, out, _ = sqlite_cli("pending", "bob", "--json")
    assert code == 0
    (listed,) = json.loads(out)
    assert (listed["transfer_id"], listed["from_account_id"], listed["amount"],
            listed["expires_at"], listed["overdue"]) == (
        first["transfer_id"], "ann", "10.00", first["expires_at"], False)  # fmt: skip
    code, out, _ = sqlite_cli("pending")  # a table: ids folded to the terminal's width
    assert code == 0 and first["transfer_id"][:18] in out and "10.00 USD" in out
    assert second["transfer_id"][:18] not in out
    assert sqlite_cli("void", first["transfer_id"])[0] == 0
    assert sqlite_cli("pending")[1].strip() == "no open pending transfers"
    assert sqlite_cli("pending", "nobody")[0] == 3
    assert sqlite_cli("pending", "--limit", "0")[0] == 2


def balance(cli, account_id: str) -> dict:
    code, out, _ = cli("balance", account_id, "--json")
    assert code == 0
    return json.loads(out)


def money(account: dict) -> tuple[str, str, str, str]:
    return (account["balance"], account["pending_debits"], account["pending_credits"],
            account["available"])  # fmt: skip


def pending(cli, amount: str, *options: str) -> dict:
    code, out, err = cli("transfer", "ann", "bob", amount, "--pending", *options, "--json")
    assert code == 0, err
    outcome = json.loads(out)
    assert (outcome["kind"], outcome["status"], outcome["amount"]) == (
        "transfer", "pending", amount)  # fmt: skip
    return outcome


def test_a_pending_transfer_reserves_and_a_partial_post_moves_part(cli):
    held = pending(cli, "30.00", "--timeout", "3600")
    assert held["expires_at"].endswith("Z") and not held["replayed"]
    assert money(held["from"]) == ("100.00", "30.00", "0.00", "70.00")
    assert money(balance(cli, "ann")) == ("100.00", "30.00", "0.00", "70.00")
    assert money(balance(cli, "bob")) == ("0.00", "0.00", "30.00", "0.00")
    code, out, _ = cli("balance", "ann")
    assert code == 0
    assert " ".join(out.split()).startswith(
        "ann balance 100.00 USD, pending debits 30.00 USD, available 70.00 USD (CHECKING, OPEN,"
    )
    code, _, err = cli("withdraw", "ann", "70.01")  # the reserve is not available
    assert code == 3 and "insufficient funds" in err

    tid = held["transfer_id"]
    code, out, _ = cli("post", tid, "--amount", "12.50", "--idempotency-key", "post-1")
    assert code == 0
    assert out.split(";")[0] == f"posted 12.50 of 30.00 USD (transfer {tid})"
    assert money(balance(cli, "ann")) == ("87.50", "0.00", "0.00", "87.50")
    assert money(balance(cli, "bob")) == ("12.50", "0.00", "0.00", "12.50")
    code, out, _ = cli("balance", "ann")
    assert "pending" not in out  # nothing reserved: the line as before pending transfers

    events = event_count(cli)
    code, out, _ = cli("post", tid, "--amount", "12.50", "--idempotency-key", "post-1")
    assert code == 0 and "replayed" in out  # the same key: its first outcome, nothing new
    code, out, err = cli("post", tid, "--json")
    assert (code, out) == (3, "")
    assert err.startswith("refused: ") and f"transfer '{tid}' is not pending" in err
    code, _, err = cli("void", tid)
    assert code == 3 and "is not pending" in err
    assert event_count(cli) == events
    assert money(balance(cli, "ann")) == ("87.50", "0.00", "0.00", "87.50")


def test_a_void_releases_the_reserve_and_moves_nothing(cli):
    code, out, _ = cli("transfer", "ann", "bob", "20", "--pending")
    assert code == 0
    out = " ".join(out.split())  # Rich wraps the line to the console's width
    assert out.startswith("reserved 20.00 USD (transfer ") and "pending, expires never" in out
    tid = out.split("(transfer ")[1].split(",")[0]
    assert money(balance(cli, "ann")) == ("100.00", "20.00", "0.00", "80.00")

    code, out, _ = cli("void", tid, "--json", "--idempotency-key", "void-1")
    assert code == 0
    voided = json.loads(out)
    assert (voided["kind"], voided["status"], voided["transfer_id"]) == ("void", "voided", tid)
    assert (voided["pending_amount"], voided["currency"]) == ("20.00", "USD")
    assert money(voided["from"]) == ("100.00", "0.00", "0.00", "100.00")
    assert money(balance(cli, "ann")) == ("100.00", "0.00", "0.00", "100.00")
    assert money(balance(cli, "bob")) == ("0.00", "0.00", "0.00", "0.00")

    code, _, err = cli("void", tid)
    assert code == 3 and "is not pending" in err
    code, _, err = cli("post", tid)
    assert code == 3 and "is not pending" in err


def test_a_whole_post_moves_all_of_it(sqlite_cli):
    tid = pending(sqlite_cli, "40.00")["transfer_id"]
    code, out, _ = sqlite_cli("post", tid)
    assert code == 0 and out.startswith(f"posted 40.00 of 40.00 USD (transfer {tid}); ")
    assert money(balance(sqlite_cli, "bob")) == ("40.00", "0.00", "0.00", "40.00")


def test_an_unknown_transfer_is_refused_as_not_found(sqlite_cli):
    events = event_count(sqlite_cli)
    for command in ("post", "void"):
        code, out, err = sqlite_cli(command, "no-such-transfer")
        assert (code, out) == (3, "")
        assert err == "refused: transfer 'no-such-transfer' is not known\n"
    assert event_count(sqlite_cli) == events


@pytest.mark.parametrize(
    "options, message",
    [
        (["--pending", "--timeout", "0"], "whole number of seconds from 1 to 2,592,000"),
        (["--pending", "--timeout", "2592001"], "whole number of seconds from 1 to 2,592,000"),
        (["--pending", "--timeout", "-5"], "whole number of seconds from 1 to 2,592,000"),
        (["--pending", "--timeout", "1.5"], "whole number of seconds from 1 to 2,592,000"),
        (["--timeout", "3600"], "--timeout applies to a pending transfer only: add --pending"),
    ],
)
def test_a_bad_timeout_is_a_usage_error_and_writes_nothing(sqlite_cli, options, message):
    events = event_count(sqlite_cli)
    code, out, err = sqlite_cli("transfer", "ann", "bob", "10", *options)
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert event_count(sqlite_cli) == events
    assert money(balance(sqlite_cli, "ann")) == ("100.00", "0.00", "0.00", "100.00")


def test_the_longest_timeout_is_taken(sqlite_cli):
    assert pending(sqlite_cli, "1.00", "--timeout", "2592000")["expires_at"] is not None


def test_posting_more_than_is_pending_is_refused_and_writes_nothing(sqlite_cli):
    tid = pending(sqlite_cli, "10.00")["transfer_id"]
    events = event_count(sqlite_cli)
    code, out, err = sqlite_cli("post", tid, "--amount", "12.50")
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and "10.00 USD pending" in err
    code, _, err = sqlite_cli("post", tid, "--amount", "-1")
    assert code == 2 and "amounts are positive" in err
    assert event_count(sqlite_cli) == events
    assert money(balance(sqlite_cli, "ann")) == ("100.00", "10.00", "0.00", "90.00")


def test_more_than_is_available_cannot_be_reserved(sqlite_cli):
    pending(sqlite_cli, "60.00")
    events = event_count(sqlite_cli)
    code, _, err = sqlite_cli("transfer", "ann", "bob", "40.01", "--pending")
    assert code == 3 and "insufficient funds" in err
    assert event_count(sqlite_cli) == events


@pytest.mark.parametrize("option", [["--pending"], ["--meta", "order=1"]])
def test_pending_and_metadata_do_not_go_with_a_batch(sqlite_cli, tmp_path, option):
    batch = tmp_path / "b.csv"
    batch.write_text("ann,bob,1.00,k-1\n")
    code, _, err = sqlite_cli("transfer", "--batch", str(batch), *option)
    assert code == 2 and f"{option[0]} applies to a single transfer" in err
    assert money(balance(sqlite_cli, "ann")) == ("100.00", "0.00", "0.00", "100.00")


def test_past_its_timeout_a_pending_transfer_cannot_be_posted(sqlite_cli):
    tid = pending(sqlite_cli, "10.00", "--timeout", "1")["transfer_id"]
    time.sleep(1.2)
    code, _, err = sqlite_cli("post", tid)
    assert code == 3 and f"pending transfer '{tid}' expired" in err
    assert balance(sqlite_cli, "bob")["balance"] == "0.00"
