"""One engine deployed for a chaos run: its store's servers, ``eventbank serve`` on it, and the
faults the nemesis may inject into them.

Every fault returns only once the system is whole again (restarted, limit lifted), so faults
never overlap and the run always ends with everything up. Crashes kill processes outright;
resource faults make the store unusable for a while and expect the running server to answer
503 meanwhile and recover by itself.

| engine   | crashes                                                | resource faults            |
|----------|--------------------------------------------------------|----------------------------|
| sqlite   | SIGKILL the server                                     | disk full (RLIMIT_FSIZE 0) |
| postgres | SIGKILL the server; immediate-mode restart of the      | PostgreSQL stopped;        |
|          | PostgreSQL server; terminate the server's backends;    | PostgreSQL paused (SIGSTOP |
|          | all three at once                                      | of it and its backends)    |
| dynamodb | SIGKILL the server; SIGKILL it and then DynamoDB Local | DynamoDB Local paused      |
|          | (-dbPath)                                              | (SIGSTOP)                  |

PostgreSQL paused is a server that hangs: connections stay open, nothing answers, and no TCP
timeout ends a wait, only eventbank's own deadlines (engines/postgres/connection.py: about 7 s).
It lasts ``PAUSE_S``, so at times the deadlines cut connections mid-commit, and the COMMITs the
server had received but not answered are carried out when it resumes: outcomes the clients
never learned, which their retries with the same key must not apply twice.
"""

from __future__ import annotations

import random
import resource
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from reliability.history import History
from reliability.serve import ServeProcess
from reliability.servers import FAST_START_JVM, DynamoDBLocal, PostgresCluster

ENGINES = ("sqlite", "postgres", "dynamodb")
ORDERED = {"sqlite": True, "postgres": True, "dynamodb": False}  # a global commit order
HOLD_S = (1.0, 4.0)  # how long a resource fault lasts
PAUSE_S = (2.0, 10.0)  # how long PostgreSQL is paused: past its clients' 7 s deadlines at times
DYNAMODB_SETTLE_S = 1.0  # DynamoDB Local commits an acknowledged transaction within this


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    crash: bool  # a process killed (counted as a crash) or a resource taken away
    weight: int
    inject: Callable[[random.Random], None]


@dataclass(frozen=True, slots=True)
class Deployment:
    engine: str
    store_url: str
    server: ServeProcess
    faults: list[Fault]

    @property
    def ordered(self) -> bool:
        return ORDERED[self.engine]


@contextmanager
def deploy(engine: str, folder: Path, tokens: Mapping[str, str]) -> Iterator[Deployment]:
    """Start ``engine``'s servers and ``eventbank serve`` under ``folder``; stop all at the end."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    with ExitStack() as stack:
        if engine == "sqlite":
            deployment = _sqlite(folder, tokens)
        elif engine == "postgres":
            deployment = _postgres(stack.enter_context(PostgresCluster()), folder, tokens)
        else:
            ddb = DynamoDBLocal(folder / "dynamodb", log_path=folder / "dynamodb.log",
                                jvm_options=FAST_START_JVM)  # fmt: skip
            deployment = _dynamodb(stack.enter_context(ddb), folder, tokens)
        stack.callback(deployment.server.stop)
        deployment.server.start()
        yield deployment


def _restart(server: ServeProcess) -> Callable[[random.Random], None]:
    def kill_and_start(_: random.Random) -> None:
        server.kill()
        server.start()

    return kill_and_start


def _sqlite(folder: Path, tokens: Mapping[str, str]) -> Deployment:
    store_url = f"sqlite:///{folder / 'events.db'}"
    server = ServeProcess(store_url, folder, tokens)

    def full_for_a_while(rng: random.Random) -> None:
        with disk_full(server.pid):
            time.sleep(rng.uniform(*HOLD_S))

    return Deployment("sqlite", store_url, server, [
        Fault("server_kill", True, 3, _restart(server)),
        Fault("disk_full", False, 1, full_for_a_while),
    ])  # fmt: skip


@contextmanager
def disk_full(pid: int) -> Iterator[None]:
    """Process ``pid`` may extend no file while this lasts, as on a full disk: its writes fail
    with EFBIG (``RLIMIT_FSIZE`` 0; Python ignores SIGXFSZ). The limit is lifted afterwards."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    try:
        yield
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


def _postgres(pg: PostgresCluster, folder: Path, tokens: Mapping[str, str]) -> Deployment:
    store_url = pg.create_database("chaos")
    server = ServeProcess(store_url, folder, tokens)

    def kill_all(_: random.Random) -> None:
        server.kill()
        pg.terminate_backends("chaos")
        pg.restart("immediate")
        server.start()

    def stopped(rng: random.Random) -> None:
        pg.stop("fast")
        time.sleep(rng.uniform(*HOLD_S))
        pg.start()

    def paused(rng: random.Random) -> None:
        with pg.paused():
            time.sleep(rng.uniform(*PAUSE_S))

    return Deployment("postgres", store_url, server, [
        Fault("server_kill", True, 2, _restart(server)),
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

    return Deployment("dynamodb", store_url, server, [
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
) -> None:
    """Until ``stop``: wait a random interval, inject the next fault, and record it once
    everything has recovered from it. Faults are dealt from shuffled decks: the first holds
    each kind once, the resource faults on top, so even a short run meets every kind early and
    the rarer resource faults first; the next hold each one ``weight`` times."""
    deck = list(deployment.faults)
    rng.shuffle(deck)
    deck.sort(key=lambda fault: not fault.crash)  # stable: dealt from the end, resources first
    while not stop.wait(rng.uniform(*interval_s)):
        if not deck:
            deck = [fault for fault in deployment.faults for _ in range(fault.weight)]
            rng.shuffle(deck)
        fault = deck.pop()
        started = history.now()
        fault.inject(rng)
        history.record("crash" if fault.crash else "fault", kind=fault.kind, started=started)
