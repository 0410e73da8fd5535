"""The README's five-minute tour, run as written: every example must work when pasted.

README.md marks each runnable block with an HTML comment on the line before its opening fence:

- ``<!-- tour: before serving -->``: shell commands run in order in one empty directory, with
  this virtualenv's ``bin`` on ``PATH`` (so the default store is ``eventbank.db`` there);
- ``<!-- tour: while serving -->``: shell commands run after ``eventbank serve`` has started in
  that directory, as ``make run`` starts it, on a free port that replaces ``8000`` in the
  examples; the variables the earlier blocks set (``TOKEN``) are still set;
- ``<!-- tour: python -->``: a Python program; each ``print`` line's trailing comment is the line
  it must print.

Every shell command must exit 0 unless its comment ends with ``(exit N)``, and then exactly N, so
the test fails when an example fails (curl examples use ``-f`` or ``--fail-with-body``) and when
a refusal the tour shows stops being refused.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.serving import EVENTBANK, free_port, stop_server

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = str(Path(sys.executable).parent)
BLOCK = re.compile(r"^<!-- tour: (?P<phase>[a-z ]+) -->\n```(?P<lang>\w+)\n(?P<body>.*?)^```$",
                   re.MULTILINE | re.DOTALL)  # fmt: skip
PORT_IN_EXAMPLES = re.compile(r"\b(?:localhost|127\.0\.0\.1):8000\b")
EXPECTED_EXIT = re.compile(r"\(exit (\d+)\)\s*$")
ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)


def tour_blocks(phase: str, lang: str = "sh") -> list[str]:
    blocks = [m["body"] for m in BLOCK.finditer(README.read_text())
              if m["phase"] == phase and m["lang"] == lang]  # fmt: skip
    assert blocks, f"README.md has no ```{lang} block marked <!-- tour: {phase} -->"
    return blocks


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment-only lines dropped."""
    found, pending = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command, pending = pending + line, ""
        if command.strip() and not command.lstrip().startswith("#"):
            found.append(command.strip())
    assert not pending, f"a command ends in a line continuation: {pending!r}"
    return found


def checked_script(blocks: list[str]) -> str:
    """One bash script running every command of ``blocks`` and stopping at the first one whose
    exit code is not the one the README gives it (0 unless its comment says ``(exit N)``)."""
    lines = ["set -o pipefail"]
    for block in blocks:
        for command in commands(block):
            expected = int(m[1]) if (m := EXPECTED_EXIT.search(command)) else 0
            lines += [
                f"printf '\\n$ %s\\n' {shlex.quote(command)}",
                command,
                f"rc=$?; if [ $rc -ne {expected} ]; then printf '\\nREADME tour: exit %s, expected "
                f"{expected}: %s\\n' $rc {shlex.quote(command)} >&2; exit 1; fi",
            ]
    return "\n".join(lines) + "\n"


def run_shell(script: str, folder: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120"}
    done = subprocess.run(["bash", "-c", script], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"{done.stderr}\n--- output so far ---\n{done.stdout}"
    return done.stdout


def start_service(folder: Path, log: Path) -> tuple[subprocess.Popen, int]:
    """``eventbank serve`` in ``folder`` with the defaults ``make run`` uses (store, read store,
    token file), on a free port; returns once it answers."""
    port = free_port()
    with log.open("w") as sink:
        process = subprocess.Popen([EVENTBANK, "serve", "--port", str(port)], cwd=folder,
                                   stdout=sink, stderr=subprocess.STDOUT)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port
        except httpx.TransportError:
            time.sleep(0.1)
    stop_server(process)
    raise AssertionError(f"eventbank serve did not start:\n{log.read_text()}")


def test_the_tour_runs_as_written(tmp_path):
    assert shutil.which("curl"), "the README's HTTP examples need curl 7.76+ (apt-get install curl)"
    before, during = tour_blocks("before serving"), tour_blocks("while serving")
    assert any(c.startswith("curl ") for b in during for c in commands(b))
    assigned = sorted({name for block in before for name in ASSIGNMENT.findall(block)})
    state = tmp_path / "tour-variables.sh"
    save = f"declare -p {' '.join(assigned)} > {shlex.quote(str(state))}\n" if assigned else ""
    run_shell(checked_script(before) + save, tmp_path)

    process, port = start_service(tmp_path, tmp_path / "serve.log")
    try:
        served = [PORT_IN_EXAMPLES.sub(f"127.0.0.1:{port}", block) for block in during]
        restore = f"source {shlex.quote(str(state))}\n" if assigned else ""
        output = run_shell(restore + checked_script(served), tmp_path)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            token = re.search(r"eb_[A-Za-z0-9_-]+", state.read_text()) if assigned else None
            headers = {"Authorization": f"Bearer {token.group()}"} if token else {}
            balances = [client.get(f"/accounts/{name}", headers=headers).json()["balance"]
                        for name in ("alice", "bob", "fees")]  # fmt: skip
    finally:
        stop_server(process)
    assert re.search(r"^idempotent-replayed: true", output, re.IGNORECASE | re.MULTILINE)
    assert sum(map(Decimal, balances)) == Decimal("100.00")  # moved about, never twice


def test_the_library_example_prints_what_its_comments_say(tmp_path):
    (program,) = tour_blocks("python", lang="python")
    expected = [line.split("#", 1)[1].strip() for line in program.splitlines()
                if line.startswith("print(") and "#" in line]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == expected


@pytest.mark.parametrize("path", [README, *sorted((README.parent / "docs").glob("*.md"))],
                         ids=lambda p: p.name)  # fmt: skip
def test_every_relative_link_resolves(path):
    """A link in the README or docs/ to a file of the repository points at one that exists."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    missing = [t for t in targets if not re.match(r"[a-z]+:|#", t)
               and not (path.parent / t.split("#")[0]).exists()]  # fmt: skip
    assert missing == []
