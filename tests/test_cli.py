"""The CLI scenario on every engine: documented exit codes, JSON shapes, and refusals that
change nothing in the store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventbank.cli import main


def cli_against(store_url: str, read_store_url: str, monkeypatch, capsys=None):
    """Runs ``eventbank ARGS`` in-process against the store; returns (code, out, err), the
    output empty when nothing captures it."""
    monkeypatch.setenv("EVENTBANK_STORE", store_url)
    monkeypatch.setenv("EVENTBANK_READ_STORE", read_store_url)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["eventbank", *args])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr() if capsys else None
        return code, captured.out if captured else "", captured.err if captured else ""

    return run


@pytest.fixture
def cli(store_url, tmp_path, capsys, monkeypatch):
    """The CLI against the test's own fresh store."""
    return cli_against(store_url, f"sqlite:///{tmp_path / 'cli.read.db'}", monkeypatch, capsys)


def event_count(cli) -> int:
    code, out, _ = cli("events", "--json", "--limit", "10000")
    assert code == 0
    return len(json.loads(out))


def test_the_five_minute_tour(cli):
    assert cli("init")[0] == 0
    assert cli("init")[0] == 0  # idempotent
    code, out, _ = cli("open", "acc-1", "--owner", "Ann", "--type", "CHECKING",
                       "--initial-deposit", "100")  # fmt: skip
    assert code == 0 and "acc-1 balance 100.00 USD" in out
    assert cli("open", "acc-2", "--owner", "Bob", "--type", "savings")[0] == 0
    assert cli("withdraw", "acc-1", "20.50")[0] == 0
    assert cli("deposit", "acc-2", "0.50", "--idempotency-key", "dep-1")[0] == 0
    code, out, _ = cli("deposit", "acc-2", "0.50", "--idempotency-key", "dep-1")
    assert code == 0 and "replayed" in out
    code, out, _ = cli("transfer", "acc-1", "acc-2", "79.50", "--json")
    assert code == 0 and json.loads(out)["to"]["balance"] == "80.00"

    code, out, _ = cli("balance", "acc-1", "--json")
    assert code == 0
    assert json.loads(out) == {"account_id": "acc-1", "owner": "Ann", "type": "CHECKING",
                               "currency": "USD", "balance": "0.00", "version": 4,
                               "status": "OPEN"}  # fmt: skip
    assert cli("close", "acc-1")[0] == 0
    code, out, _ = cli("history", "acc-2", "--json")
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in json.loads(out)] == [
        ("deposit", "0.50", "0.50"), ("transfer_in", "79.50", "80.00")
    ]  # fmt: skip
    code, out, _ = cli("history", "acc-2")
    assert code == 0 and "transfer_in" in out
    code, out, _ = cli("totals", "--json")
    assert json.loads(out) == [{"currency": "USD", "accounts_open": 1, "balance": "80.00"}]
    code, out, _ = cli("events", "--aggregate", "acc-1", "--json")
    assert [e["version"] for e in json.loads(out)] == [1, 2, 3, 4, 5]
    assert event_count(cli) == 8


@pytest.fixture(scope="module")
def refusals_store(module_store_url, tmp_path_factory) -> tuple[str, str]:
    """The state every refusal below starts from (6 events), set up once per engine: each
    refusal checks it finds those 6 events and proves it changed nothing, so the next one finds
    the store exactly as set up here."""
    read_store_url = f"sqlite:///{tmp_path_factory.mktemp('cli') / 'cli.read.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        cli = cli_against(module_store_url, read_store_url, monkeypatch)
        for args in [
            ["open", "acc-1", "--owner", "Ann", "--type", "CHECKING", "--initial-deposit", "100"],
            ["open", "eur-1", "--owner", "Eve", "--type", "CHECKING", "--currency", "EUR"],
            ["open", "closed-1", "--owner", "Cy", "--type", "CHECKING"],
            ["close", "closed-1"],
            ["deposit", "acc-1", "1", "--idempotency-key", "k-1"],
        ]:
            assert cli(*args)[0] == 0, args
    return module_store_url, read_store_url


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["withdraw", "acc-1", "101.01"], 3, "insufficient funds"),
        (["withdraw", "acc-1", "1.001"], 2, "at most 2 decimal places"),
        (["withdraw", "acc-1", "abc"], 2, "not a decimal amount"),
        (["withdraw", "acc-1", "NaN"], 2, "not a number of money"),
        (["withdraw", "acc-1", "0"], 2, "greater than zero"),
        (["withdraw", "acc-1", "99999999999999999"], 2, "over the maximum"),
        (["deposit", "ghost", "1"], 3, "does not exist"),
        (["deposit", "closed-1", "1"], 3, "is closed"),
        (["transfer", "acc-1", "acc-1", "1"], 3, "to itself"),
        (["transfer", "acc-1", "eur-1", "1"], 3, "cannot transfer between USD"),
        (["open", "acc-1", "--owner", "X", "--type", "CHECKING"], 3, "already exists"),
        (["open", "new-1", "--owner", "X", "--type", "LOAN"], 2, "CHECKING or SAVINGS"),
        (
            ["open", "new-1", "--owner", "X", "--type", "CHECKING", "--currency", "XYZ"],
            2,
            "unknown currency",
        ),
        (["open", "bad id", "--owner", "X", "--type", "CHECKING"], 2, "invalid account id"),
        (["close", "acc-1"], 3, "still holds"),
        (["deposit", "acc-1", "2", "--idempotency-key", "k-1"], 4, "different request"),
        (["withdraw", "acc-1"], 2, "Missing argument 'AMOUNT'"),
        (["withdraw", "acc-1", "-5"], 2, "amounts are positive"),
        (["deposit", "acc-1", "-5"], 2, "amounts are positive"),
        (["deposit", "acc-1", "-0.50", "--json"], 2, "amounts are positive"),
        (["transfer", "acc-1", "eur-1", "-5"], 2, "amounts are positive"),
        (
            ["open", "new-1", "--owner", "X", "--type", "CHECKING", "--initial-deposit", "-5"],
            2,
            "amounts are positive",
        ),
        (["withdraw", "acc-1", "5", "--jsn"], 2, "No such option: --jsn"),
        (["--store", "mysql://x", "balance", "acc-1"], 2, "unsupported store URL"),
        (["balance", "acc-1", "--store=mysql://x"], 2, "unsupported store URL"),
    ],
)
def test_bad_input_exits_with_the_documented_code_and_changes_nothing(
    refusals_store, capsys, monkeypatch, args, code, message
):
    cli = cli_against(*refusals_store, monkeypatch, capsys)
    assert event_count(cli) == 6  # as set up: no earlier refusal changed anything

    exit_code, out, err = cli(*args)
    assert exit_code == code, (out, err)
    assert message in err
    assert "Traceback" not in err
    assert event_count(cli) == 6


@pytest.mark.parametrize("command", ["withdraw", "deposit"])
def test_a_negative_amount_is_refused_as_an_amount_and_moves_nothing(
    refusals_store, capsys, monkeypatch, command
):
    """Click would read ``-5`` as an unknown option; it is an amount, and amounts are positive."""
    cli = cli_against(*refusals_store, monkeypatch, capsys)
    before = cli("balance", "acc-1", "--json")

    assert cli(command, "acc-1", "-5") == (
        2,
        "",
        "error: Invalid value for 'AMOUNT': amounts are positive; got '-5' "
        f"(see eventbank {command} --help)\n",
    )
    assert cli("balance", "acc-1", "--json") == before
    assert event_count(cli) == 6


@pytest.fixture
def storeless_cli(tmp_path, capsys, monkeypatch):
    """The CLI for what fails or answers before any store is opened (help, usage errors)."""
    store = f"sqlite:///{tmp_path / 'unused.db'}"
    return cli_against(store, f"sqlite:///{tmp_path / 'unused.read.db'}", monkeypatch, capsys)


def command_paths(cli, *group: str) -> list[tuple[str, ...]]:
    """Every command under ``eventbank GROUP``, read from the Commands section of its help."""
    code, out, _ = cli(*group, "--help")
    assert code == 0, out
    names = re.findall(r"^  (\S+)  ", out.partition("\nCommands:\n")[2], re.MULTILINE)
    paths = [(*group, name) for name in names]
    subgroups = [path for path in paths if "\nCommands:\n" in cli(*path, "--help")[1]]
    return paths + [sub for path in subgroups for sub in command_paths(cli, *path)]


BOX_DRAWING = re.compile(r"[\u2500-\u257f]")  # │ ╭ ─ ╰ …


def test_help_shows_plain_names_no_type_tags_no_placeholders_no_boxes(storeless_cli):
    paths = [(), *command_paths(storeless_cli)]
    for path in paths:  # the top-level help first
        if path == ("bench",):
            continue  # its --help is the benchmark harness's own (argparse)
        code, out, err = storeless_cli(*path, "--help")
        assert (code, err) == (0, ""), path
        assert out.startswith(f"Usage: {' '.join(['eventbank', *path])} "), out
        assert not re.search(r"<[a-z][a-z ]*>", out), out  # <bool>, <str>, <int range>
        assert not re.search(r"\{\w+\}", out), out  # {account_id}
        assert not BOX_DRAWING.search(out), out
    assert {("deposit",), ("transfer",), ("payroll", "start"), ("tokens", "add")} <= set(paths)
    assert (
        "Usage: eventbank transfer [OPTIONS] FROM_ID TO_ID AMOUNT\n"
        in storeless_cli("transfer", "--help")[1]
    )


@pytest.mark.parametrize("columns", ["40", "200"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deposit", "acc-1"], "error: Missing argument 'AMOUNT'. (see eventbank deposit --help)"),
        (["transfer"], "error: Missing argument 'FROM_ID'. (see eventbank transfer --help)"),
        (["withdraw", "acc-1", "5", "--jsn"], "error: No such option: --jsn"),
        (["history", "acc-1", "--limit", "0"], "error: Invalid value for '--limit'"),
        (["withdraw", "acc-1", "5", "6"], "error: Got unexpected extra argument"),
        (["payroll", "start"], "error: Missing argument 'FILE'."),
        (["no-such-command"], "error: No such command 'no-such-command'."),
        (  # a negative number elsewhere must not cost the key its "requires an argument"
            ["open", "x", "--owner", "-5", "--type", "CHECKING", "--idempotency-key"],
            "error: Option '--idempotency-key' requires an argument.",
        ),
        (["--store", f"mysql://{'x' * 80}", "balance", "a"], "error: unsupported store URL"),
    ],
)
def test_an_error_is_one_line_on_stderr_at_any_terminal_width(
    storeless_cli, monkeypatch, columns, args, message
):
    monkeypatch.setenv("COLUMNS", columns)
    code, out, err = storeless_cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message) and err.count("\n") == 1 and err.endswith("\n"), err
    assert not BOX_DRAWING.search(err), err


def test_the_installed_command_exits_cleanly_with_one_line(tmp_path: Path):
    env = {**os.environ, "EVENTBANK_STORE": f"sqlite:///{tmp_path / 'cli.db'}"}
    done = subprocess.run(
        [Path(sys.executable).parent / "eventbank", "balance", "nobody"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.strip() == "refused: account 'nobody' does not exist"
