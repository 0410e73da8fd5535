"""One engine deployed for a chaos run: its store's servers, ``eventbank serve`` on it, and the
faults the nemesis may inject into them.

Every fault returns only once the system is whole again (restarted, limit lifted), so faults
never overlap and the run always ends with everything up. Crashes kill processes outright;
resource faults make the store unusable for a while and expect the running server to answer
503 meanwhile and recover by itself.

| engine     | crashes                                                | resource faults            |
|------------|--------------------------------------------------------|----------------------------|
| sqlite     | SIGKILL the server                                     | disk full (RLIMIT_FSIZE 0) |
| postgres   | SIGKILL the server; immediate-mode restart of the      | PostgreSQL stopped;        |
|            | PostgreSQL server; terminate the server's backends;    | PostgreSQL paused (SIGSTOP |
|            | all three at once                                      | of it and its backends)    |
| postgres-2 | as postgres, with two servers: SIGKILL either, or both | as postgres                |
| dynamodb   | SIGKILL the server; SIGKILL it and then DynamoDB Local | DynamoDB Local paused      |
|            | (-dbPath)                                              | (SIGSTOP)                  |

``postgres-2`` is two ``eventbank serve`` processes on one PostgreSQL database, each with its
own connection pool, group commit and projection runner; the clients spread their requests
over both, and a retry goes to the other server, so one command id often runs in both at once.

PostgreSQL paused is a server that hangs: connections stay open, nothing answers, and no TCP
timeout ends a wait, only eventbank's own deadlines (engines/postgres/connection.py: about 7 s).
It lasts ``PAUSE_S``, so at times the deadlines cut connections mid-commit, and the COMMITs the
server had received but not answered are carried out when it resumes: outcomes the clients
never learned, which their retries with the same key must not apply twice.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from reliability.history import History
from reliability.serve import ServeProcess
from reliability.servers import LEAN_JVM, DynamoDBLocal, PostgresCluster

# postgres-2: two servers, one store; sqlite-ledger: serve --ledger-process on SQLite
ENGINES = ("sqlite", "sqlite-ledger", "postgres", "postgres-2", "dynamodb")
ORDERED = {"sqlite": True, "sqlite-ledger": True, "postgres": True, "postgres-2": True,
           "dynamodb": False}  # fmt: skip
HOLD_S = (1.0, 4.0)  # how long a resource fault lasts
PAUSE_S = (2.0, 10.0)  # how long PostgreSQL is paused: past its clients' 7 s deadlines at times
LEDGER_WAIT_S = 10.0  # for serve --ledger-process to have a child to kill
DYNAMODB_SETTLE_S = 1.0  # DynamoDB Local commits an acknowledged transaction within this


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    crash: bool  # a process killed (counted as a crash) or a resource taken away
    weight: int
    inject: Callable[[random.Random], None]


@dataclass(frozen=True, slots=True)
class Deployment:
    engine: str  # or a variant of one: postgres-2
    store_url: str
    servers: tuple[ServeProcess, ...]  # the clients spread over all of them
    faults: list[Fault]

    @property
    def ordered(self) -> bool:  # a global commit order
        return ORDERED[self.engine]

    @property
    def server(self) -> ServeProcess:
        return self.servers[0]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextmanager
def deploy(engine: str, folder: Path, tokens: Mapping[str, str]) -> Iterator[Deployment]:
    """Start ``engine``'s servers and ``eventbank serve`` under ``folder``; stop all at the end."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    with ExitStack() as stack:
        if engine in ("sqlite", "sqlite-ledger"):
            deployment = _sqlite(folder, tokens, ledger_process=engine == "sqlite-ledger")
        elif engine in ("postgres", "postgres-2"):
            servers = 2 if engine == "postgres-2" else 1
            pg = stack.enter_context(PostgresCluster())
            deployment = _postgres(pg, folder, tokens, servers)
        else:
            ddb = DynamoDBLocal(folder / "dynamodb", log_path=folder / "dynamodb.log",
                                jvm_options=LEAN_JVM)  # fmt: skip
            deployment = _dynamodb(stack.enter_context(ddb), folder, tokens)
        stack.callback(deployment.stop)
        for server in deployment.servers:
            server.start()
        yield deployment


def _restart(server: ServeProcess) -> Callable[[random.Random], None]:
    def kill_and_start(_: random.Random) -> None:
        server.kill()
        server.start()

    return kill_and_start


def _sqlite(folder: Path, tokens: Mapping[str, str], *, ledger_process: bool = False) -> Deployment:
    """One server; with ``ledger_process``, ``serve --ledger-process``, whose child (deciding
    and writing the transfers) may be killed alone too, and is a writer the full disk stops."""
    store_url = f"sqlite:///{folder / 'events.db'}"
    options = ["--ledger-process"] if ledger_process else []
    server = ServeProcess(store_url, folder, tokens, options=options)

    def full_for_a_while(rng: random.Random) -> None:
        limited = [server.pid, *_ledger_children(server.pid)]
        for pid in limited:
            _limit_file_size(pid, 0)
        try:
            time.sleep(rng.uniform(*HOLD_S))
        finally:  # a child started meanwhile inherited the limit: lifted too
            for pid in {*limited, *_ledger_children(server.pid)}:
                _limit_file_size(pid, resource.RLIM_INFINITY)

    def kill_the_ledger_process(_: random.Random) -> None:
        """SIGKILL the child; the server starts another for its next transfers. One is waited
        for (the server starts it at its first transfers after a restart)."""
        deadline = time.monotonic() + LEDGER_WAIT_S
        while not (children := _ledger_children(server.pid)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no ledger process under serve after {LEDGER_WAIT_S:.0f} s")
            time.sleep(0.05)
        for pid in children:
            os.kill(pid, signal.SIGKILL)

    ledger = [Fault("ledger_process_kill", True, 3, kill_the_ledger_process)]
    return Deployment("sqlite-ledger" if ledger_process else "sqlite", store_url, (server,), [
        Fault("server_kill", True, 3, _restart(server)),
        *(ledger if ledger_process else []),
        Fault("disk_full", False, 1, full_for_a_while),
    ])  # fmt: skip


def _ledger_children(pid: int) -> list[int]:
    """The live ledger processes ``serve --ledger-process`` (``pid``) has started, whichever of
    its threads started them (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue
        if stat[1] == str(pid) and stat[0] != "Z" and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _limit_file_size(pid: int, limit: int) -> None:
    """``RLIMIT_FSIZE`` of ``pid`` (0: its writes fail as on a full disk), if it still runs."""
    with suppress(ProcessLookupError):
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


@contextmanager
def disk_full(pid: int) -> Iterator[None]:
    """Process ``pid`` may extend no file while this lasts, as on a full disk: its writes fail
    with EFBIG (``RLIMIT_FSIZE`` 0; Python ignores SIGXFSZ). The limit is lifted afterwards."""
    _limit_file_size(pid, 0)
    try:
        yield
    finally:
        _limit_file_size(pid, resource.RLIM_INFINITY)


def _postgres(
    pg: PostgresCluster, folder: Path, tokens: Mapping[str, str], servers: int = 1
) -> Deployment:
    """One server, or several on one database (``postgres-2``): then either may be killed, or
    all at once, and PostgreSQL's crash takes one of them with it."""
    store_url = pg.create_database("chaos")
    names = ["serve"] if servers == 1 else [f"serve-{n}" for n in range(1, servers + 1)]
    processes = tuple(ServeProcess(store_url, folder, tokens, name=name) for name in names)

    def kill_all(rng: random.Random) -> None:
        server = rng.choice(processes)
        server.kill()
        pg.terminate_backends("chaos")
        pg.restart("immediate")
        server.start()

    def kill_one(rng: random.Random) -> None:
        _restart(rng.choice(processes))(rng)

    def kill_every_server(_: random.Random) -> None:
        for server in processes:
            server.kill()
        for server in processes:
            server.start()

    def stopped(rng: random.Random) -> None:
        pg.stop("fast")
        time.sleep(rng.uniform(*HOLD_S))
        pg.start()

    def paused(rng: random.Random) -> None:
        with pg.paused():
            time.sleep(rng.uniform(*PAUSE_S))

    several = [Fault("servers_kill", True, 1, kill_every_server)] if servers > 1 else []
    return Deployment("postgres" if servers == 1 else f"postgres-{servers}", store_url, processes, [
        Fault("server_kill", True, 2, kill_one),
        *several,
        Fault("postgres_crash", True, 1, lambda _: pg.restart("immediate")),
        Fault("backends_terminated", True, 1, lambda _: pg.terminate_backends("chaos")),
        Fault("server_and_postgres_crash", True, 1, kill_all),
        Fault("postgres_stopped", False, 1, stopped),
        Fault("postgres_paused", False, 1, paused),
    ])  # fmt: skip


def _dynamodb(ddb: DynamoDBLocal, folder: Path, tokens: Mapping[str, str]) -> Deployment:
    store_url = ddb.store_url("chaos-events")
    server = ServeProcess(store_url, folder, tokens)

    def kill_both(_: random.Random) -> None:
        """The JVM dies only once the server is dead and its last writes have settled: DynamoDB
        Local acknowledges a TransactWriteItems before it has committed it, so killing it under
        load loses acknowledged writes — the emulator's flaw, not eventbank's
        (docs/reliability.md)."""
        server.kill()
        time.sleep(DYNAMODB_SETTLE_S)
        ddb.kill()
        ddb.start()
        server.start()

    def paused(rng: random.Random) -> None:
        with ddb.paused():
            time.sleep(rng.uniform(*HOLD_S))

    return Deployment("dynamodb", store_url, (server,), [
        Fault("server_kill", True, 2, _restart(server)),
        Fault("server_and_dynamodb_kill", True, 2, kill_both),
        Fault("dynamodb_paused", False, 1, paused),
    ])  # fmt: skip


def run_nemesis(
    deployment: Deployment,
    history: History,
    stop: threading.Event,
    rng: random.Random,
    interval_s: tuple[float, float],
    quiet_s: float,
) -> None:
    """Until ``stop``: after ``quiet_s`` with no fault, wait a random interval, inject the next
    fault, and record it once everything has recovered from it. Faults are dealt from shuffled
    decks: the first holds each kind once, the resource faults on top, and is dealt whole even
    past ``stop``, so every run meets every kind, the rarer resource faults first, however
    long the machine takes to recover from each; the next decks hold each one ``weight``
    times."""
    deck = list(deployment.faults)
    rng.shuffle(deck)
    deck.sort(key=lambda fault: not fault.crash)  # stable: dealt from the end, resources first
    first_deck = True  # while it is dealt, ``stop`` waits
    time.sleep(quiet_s)
    while True:
        pause = rng.uniform(*interval_s)
        if first_deck:
            time.sleep(pause)
        elif stop.wait(pause):
            return
        if not deck:
            first_deck = False
            if stop.is_set():
                return
            deck = [fault for fault in deployment.faults for _ in range(fault.weight)]
            rng.shuffle(deck)
        fault = deck.pop()
        started = history.now()
        fault.inject(rng)
        history.record("crash" if fault.crash else "fault", kind=fault.kind, started=started)
