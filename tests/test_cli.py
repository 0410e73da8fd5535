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
from eventbank.engines.urls import open_store
from tests.serving import free_port


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
                               "currency": "USD", "balance": "0.00", "pending_debits": "0.00",
                               "pending_credits": "0.00", "overdraft_limit": "0.00",
                               "available": "0.00", "version": 4, "status": "OPEN"}  # fmt: skip
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
            ["init"],
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
        (["serve", "--group-wait-ms", "500"], "error: Invalid value for '--group-wait-ms'"),
        (["withdraw", "acc-1", "5", "6"], "error: Got unexpected extra argument"),
        (["payroll", "start"], "error: Missing argument 'FILE'."),
        (
            ["payroll", "start", "pay.csv", "--from", "acc-1"],
            "error: Missing option '--idempotency-key'.",
        ),
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
    open_store(env["EVENTBANK_STORE"]).close()  # `eventbank init`, without a second process
    done = subprocess.run(
        [Path(sys.executable).parent / "eventbank", "balance", "nobody"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.strip() == "refused: account 'nobody' does not exist"


# ------------------------------------------------------------------ a store that is not there


@pytest.fixture
def elsewhere_cli(tmp_path, capsys, monkeypatch):
    """The CLI run from an empty directory with no --store: the default store is not there."""
    monkeypatch.chdir(tmp_path)
    for name in ("EVENTBANK_STORE", "EVENTBANK_READ_STORE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["eventbank", *args])
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.mark.parametrize(
    "args",
    [
        ["balance", "x"],
        ["deposit", "x", "5"],
        ["open", "x", "--owner", "X", "--type", "CHECKING"],
        ["events"],
        ["audit"],
        ["projections", "status"],
        ["payroll", "resume"],
    ],
)
def test_a_command_on_a_missing_store_exits_2_and_creates_nothing(tmp_path, elsewhere_cli, args):
    assert elsewhere_cli(*args) == (
        2,
        "",
        f"error: no eventbank store at {tmp_path / 'eventbank.db'} "
        "(run `eventbank init`, or pass --store)\n",
    )
    assert list(tmp_path.iterdir()) == []  # neither eventbank.db nor eventbank.read.db


def test_init_creates_the_store_and_then_commands_find_it(tmp_path, elsewhere_cli):
    assert elsewhere_cli("balance", "x")[0] == 2
    code, out, _ = elsewhere_cli("init")
    assert (code, out) == (0, "event store ready at sqlite:///eventbank.db\n")
    assert {p.name for p in tmp_path.iterdir()} >= {"eventbank.db", "eventbank.read.db"}
    assert elsewhere_cli("balance", "x")[:2] == (3, "")
    assert elsewhere_cli("open", "x", "--owner", "X", "--type", "CHECKING")[0] == 0
    assert elsewhere_cli("balance", "x")[0] == 0


def test_a_store_given_with_store_that_is_missing_is_named(tmp_path, elsewhere_cli):
    missing = tmp_path / "sub" / "books.db"
    code, _, err = elsewhere_cli("--store", f"sqlite:///{missing}", "totals")
    assert (code, err) == (
        2,
        f"error: no eventbank store at {missing} (run `eventbank init`, or pass --store)\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_the_read_store_is_made_again_beside_an_existing_event_store(tmp_path, elsewhere_cli):
    """Read models are derived: a deleted .read.db is rebuilt, not an error."""
    assert elsewhere_cli("init")[0] == 0
    assert elsewhere_cli("open", "x", "--owner", "X", "--type", "CHECKING")[0] == 0
    (tmp_path / "eventbank.read.db").unlink()
    assert elsewhere_cli("projections", "rebuild")[0] == 0
    assert elsewhere_cli("balance", "x")[0] == 0


# ------------------------------------------------------------------ malformed or unreachable


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://127.0.0.1:99999/x", "invalid PostgreSQL URL"),
        ("postgresql://db:port/x", "invalid PostgreSQL URL"),
        ("postgresql://[::1/x", "malformed store URL"),
        ("postgresql://127.0.0.1/x?no_such_option=1", "invalid PostgreSQL URL"),
        ("postgresql://127.0.0.1/x?sslmode=sometimes", "invalid PostgreSQL URL"),
        ("postgresql://%zz@127.0.0.1/x", "invalid PostgreSQL URL"),
        ("dynamodb://ledger?endpoint_url=http://127.0.0.1:abc&region=us-east-1", "DynamoDB URL"),
        ("dynamodb://ledger?endpoint_url=http://127.0.0.1:99999&region=us-east-1", "DynamoDB URL"),
        ("dynamodb://ledger?endpoint_url=127.0.0.1&region=us-east-1", "DynamoDB URL"),
        ("dynamodb://ledger?region=", "DynamoDB URL"),
        ("sqlite://relative.db", "invalid SQLite URL"),
        ("sqlite:relative.db", "invalid SQLite URL"),
        ("mysql://x", "unsupported store URL"),
        ("eventbank.db", "unsupported store URL"),
    ],
)
def test_a_malformed_store_url_exits_2_saying_what_a_valid_one_looks_like(
    tmp_path, elsewhere_cli, url, message
):
    code, out, err = elsewhere_cli("--store", url, "balance", "x")
    assert (code, out) == (2, ""), err
    assert err.startswith("error: ") and message in err and "use " in err, err
    assert "sqlite:///" in err or "postgresql://USER" in err or "dynamodb://TABLE" in err
    assert err.count("\n") == 1 and "unexpected" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_read_store_url_exits_2(tmp_path, elsewhere_cli):
    assert elsewhere_cli("init")[0] == 0
    code, _, err = elsewhere_cli("--read-store", "postgresql://[x/y", "balance", "x")
    assert code == 2 and err.startswith("error: malformed read store URL"), err


def test_a_password_in_a_malformed_url_is_not_printed(elsewhere_cli):
    code, _, err = elsewhere_cli("--store", "postgresql://ann:s3cret@db:port/x", "balance", "x")
    assert code == 2 and "s3cret" not in err and "ann:***@db:port" in err, err


def test_a_read_while_postgresql_is_down_says_it_is_unavailable(tmp_path, elsewhere_cli):
    url = f"postgresql://eventbank@127.0.0.1:{free_port()}/x?connect_timeout=1"  # nobody listens
    code, out, err = elsewhere_cli("--store", url, "balance", "x")
    assert (code, out) == (1, ""), err
    assert err.startswith("error: PostgreSQL is unavailable ("), err
    assert err.endswith("; nothing was read or written\n"), err
    assert "interrupted write" not in err and "unexpected" not in err


def test_the_command_line_starts_without_the_web_framework():
    """Every command but `serve` answers without importing FastAPI (a fifth of a second of
    start-up on the benchmark machine): the token file and its checks need none of it."""
    program = (
        "import sys, eventbank.cli; "
        "print(sorted({'fastapi', 'starlette', 'uvicorn'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
