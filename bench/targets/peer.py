"""Runs the eventsourcing peer (bench/targets/eventsourcing_app.py) in a venv of its own.

The library is installed from PyPI, pinned, into ``benchmarks/.venv-peer/`` (git-ignored) the
first time it is needed, and each scenario runs in a fresh subprocess of that venv, so its
dependencies never mix with eventbank's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.workload import Measurement, Scenario

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "benchmarks" / ".venv-peer"
# psycopg pinned to eventbank's own version, so both sides use the same PostgreSQL driver.
REQUIREMENTS = ("eventsourcing[postgres]==9.5.6", "psycopg[binary]==3.3.9")
RUN_TIMEOUT_S = 1800


class PeerError(RuntimeError):
    """The peer venv could not be made or the peer run failed; the message has its output."""


def peer_python() -> Path:
    """The peer venv's interpreter, creating the venv and installing the library if needed."""
    python = VENV / "bin" / "python"
    stamp = VENV / "installed.txt"
    wanted = "\n".join(REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"installing {', '.join(REQUIREMENTS)} into {VENV.relative_to(ROOT)} …", file=sys.stderr)
    _run([sys.executable, "-m", "venv", "--clear", str(VENV)])
    _run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS])
    stamp.write_text(wanted)
    return python


def measure_peer(
    store_url: str, scenario: Scenario, transfers: int, seed: int, cpu: int | None
) -> tuple[Measurement, str]:
    """One scenario on the peer, on the fresh store at ``store_url``; and its durability."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = _run(
        [
            str(peer_python()),
            "-m",
            "bench.targets.eventsourcing_app",
            store_url,
            scenario.name,
            str(transfers),
            str(seed),
            "any" if cpu is None else str(cpu),
        ],
        env=env,
    )
    answer = json.loads(done.stdout.splitlines()[-1])
    return Measurement(**answer["measurement"]), answer["durability"]


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise PeerError(f"exit {done.returncode}: {' '.join(argv)}\n{done.stdout}{done.stderr}")
    return done
