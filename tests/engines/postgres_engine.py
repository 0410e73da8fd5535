"""The PostgreSQL engine's fixtures: one throwaway server per session, a fresh database per test.

With ``EVENTBANK_TEST_PG_URL`` set (a role allowed to CREATE DATABASE), that server is used.
Otherwise the session starts its own PostgreSQL 15 cluster with ``initdb`` + ``pg_ctl`` in a
temp dir on a free loopback port (trust auth on loopback, fsync left on) and stops it at the
end, whatever happened. initdb refuses to run as root, so as root the cluster belongs to the
``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
START_TIMEOUT_S = 60


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL of a server on which tests may create and drop databases."""
    if url := os.environ.get("EVENTBANK_TEST_PG_URL"):
        yield url
        return
    if not (PG_BIN / "initdb").exists():
        pytest.fail(
            f"PostgreSQL 15 server binaries not found in {PG_BIN}: install them with "
            "`apt-get install postgresql-15` (`make test` does it via scripts/ensure-postgres.sh)"
            " or set EVENTBANK_TEST_PG_URL to a server the tests may create databases on",
            pytrace=False,
        )
    base = Path(tempfile.mkdtemp(prefix="eventbank-pg-"))
    try:
        as_owner = _owner_prefix(base)
        data, log = base / "data", base / "server.log"
        _run([*as_owner, PG_BIN / "initdb", "-D", data, "-U", "postgres", "--auth=trust"], base)
        port = _free_port()
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=200"
        try:
            _run(
                [*as_owner, PG_BIN / "pg_ctl", "start", "-D", data, "-l", log, "-w",
                 "-t", str(START_TIMEOUT_S), "-o", options],
                base, log,
            )  # fmt: skip
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_owner, PG_BIN / "pg_ctl", "stop", "-D", data, "-m", "fast", "-w"],
                cwd=base, capture_output=True, check=False,
            )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_store_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database per test for the event store."""
    with _fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture
def postgres_read_store_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database of its own for the read models (the default, sharing the event store's
    database, is covered in tests/test_postgres_read_store.py)."""
    with _fresh_database(postgres_server_url) as url:
        yield url


@contextmanager
def _fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on ``server_url``, dropped afterwards (its connections closed)."""
    name = f"eb_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _owner_prefix(base: Path) -> list[str]:
    """Run server commands as ``postgres`` when we are root (creating the user if missing)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _run(["useradd", "--system", "postgres"], base)
    shutil.chown(base, user="postgres")
    return ["runuser", "-u", "postgres", "--"]


def _run(command: list, cwd: Path, log: Path | None = None) -> None:
    done = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        details = done.stdout + done.stderr
        if log is not None and log.exists():
            details += log.read_text(errors="replace")[-4000:]
        pytest.fail(
            f"exit {done.returncode}: {' '.join(map(str, command))}\n{details}", pytrace=False
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
