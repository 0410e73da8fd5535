"""The HTTP scenario: ``eventbank serve`` as a process of its own, driven by wrk.

Per row, a server is started as its own process on a free loopback port: ``eventbank serve``
on a fresh store (one process, as it serves by default, its projection runner included), or
the framework's floor (bench/http_floor.py: a bare FastAPI endpoint taking the same body, on the
same uvicorn with the same options). A teller token is made with ``eventbank tokens add`` in the
token file the server reads. Before the clock, ``opened`` accounts are opened through the API
(each with enough money that no transfer is refused for funds) and the projections are let catch
up. Then Debian's ``wrk`` (a C load generator, not sharing the server's interpreter) sends
``POST /transfers`` over 16 keep-alive connections on 2 threads for a fixed time, each request a
random transfer between the scenario's first ``accounts`` accounts with an ``Idempotency-Key`` of
its own (bench/http_transfers.lua); in the batch scenario, ``POST /transfers/batch`` over 4
connections, each request 1,000 such transfers with a key each. Measured per row:

- transfers/s: transfers done (2xx responses; in a batch, the items that succeeded; a served
  batch row counts the transfers the store recorded while wrk ran) over wrk's run time; every
  other status is counted, by status;
- latency: wrk's percentiles over every response (it sends the next request on a connection
  when the last is answered, so these are the service times 16 clients see);
- the server process's CPU (user + system, all its threads, from /proc/PID/stat) from wrk's start
  to its end, per transfer done; PostgreSQL's own processes are not in it, nor is wrk;
- for eventbank, the projection lag (``GET /stats``) when the load ended, and how long it took
  to be 0 again (the goal: within 2 s).

A server process keeps its threads on the CPU it starts on, as ``eventbank serve`` does by
default (the floor too; ``serve --workers 2``'s processes run on any CPU), and wrk runs wherever
the kernel puts it: on 2 CPUs they share the machine, as a server and its clients on one host
do.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import closing, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench.workload import ACCOUNTS, INITIAL_MINOR, account_id, concurrently
from eventbank.application.batch import MAX_BATCH_ITEMS
from eventbank.domain.money import format_minor
from eventbank.engines.urls import open_store
from eventbank.ports.event_store import MAX_READ_LIMIT, EventStore
from reliability.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("http_transfers.lua")
HTTP_ENGINES = ("sqlite", "postgresql")
EVENTBANK, FLOOR = "eventbank serve", "FastAPI floor"
WORKERS_2 = "eventbank serve x2"  # `serve --workers 2` (PostgreSQL only: SQLite refuses it)
NOT_INLINE = "serve, no inline"  # `serve --no-inline-projection`: what the projection costs
LEDGER_PROCESS = "serve, ledger process"  # `serve --ledger-process` (ledger_process.py)
SERVED = (EVENTBANK, WORKERS_2, NOT_INLINE, LEDGER_PROCESS)
CONNECTIONS, WRK_THREADS = 16, 2
WRK_TIMEOUT_S = 10  # a response slower than this is a wrk timeout error, not a latency
LAG_GOAL_S = 2.0  # the projection lag is back to 0 this soon after the load, or it is a miss
LAG_WAIT_S = 30.0  # how long to watch the lag before giving up on it
START_TIMEOUT_S = 60.0
CURRENCY = "USD"


@dataclass(frozen=True, slots=True)
class HttpScenario:
    name: str
    accounts: int  # transfers go between the first ``accounts`` accounts
    opened: int = ACCOUNTS  # accounts opened beforehand
    batch: int = 1  # transfers per request: 1 is POST /transfers, more POST /transfers/batch
    connections: int = CONNECTIONS


HTTP = HttpScenario(f"HTTP: {CONNECTIONS} connections, {ACCOUNTS:,} accounts", ACCOUNTS)
HTTP_HOT = HttpScenario(f"HTTP hot: {CONNECTIONS} connections, 10 accounts", 10)
HTTP_SCENARIOS = (HTTP, HTTP_HOT)
# A few connections, each sending a batch of MAX_BATCH_ITEMS: where the batch bar is measured.
BATCH_CONNECTIONS, BATCH_ENGINES = 4, ("sqlite",)
HTTP_BATCH = HttpScenario(
    f"HTTP batches: {BATCH_CONNECTIONS} connections, {MAX_BATCH_ITEMS:,} per request",
    ACCOUNTS, batch=MAX_BATCH_ITEMS, connections=BATCH_CONNECTIONS,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class HttpMeasurement:
    system: str  # EVENTBANK, WORKERS_2, NOT_INLINE, LEDGER_PROCESS or FLOOR
    engine: str  # the store's; the floor's row names the engine it ran beside (it has no store)
    scenario: str
    connections: int
    accounts: int
    setup_s: float  # server started, accounts opened and projected
    seconds: float  # wrk's run
    requests: int  # responses received
    ok: int  # transfers answered: 2xx responses, or in a batch scenario its items that succeeded
    non_2xx: dict[str, int]  # status -> responses
    socket_errors: dict[str, int]  # wrk's connect/read/write/timeout errors, where any
    transfers_per_s: float  # ``done`` per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us: float  # the server process's CPU (all its threads) per ``done``, in the load
    server_cpu_s: float  # the same, in all (a row whose transfers were all refused has some)
    lag_events: int | None  # projection lag when the load ended (None: the floor has none)
    lag_zero_s: float | None  # seconds until the lag was 0 again; None: not within LAG_WAIT_S
    load_average: float  # the machine's 1-minute load when the run ended
    wrk: str = ""  # the command line (the token is in its environment)
    # of server_cpu_us, the server's main thread's: its event loop (HTTP, middleware,
    # validation, answers); None for serve --workers 2 (its main thread supervises) and rows
    # not served
    loop_cpu_us: float | None = None
    # transfers the store recorded during the run (served batches: a batch takes seconds, and
    # those in flight when wrk stops did work its answers do not count); None: not counted
    recorded: int | None = None

    @property
    def done(self) -> int:
        """The transfers the row's figures are per: recorded in the store where counted, else
        answered."""
        return self.ok if self.recorded is None else self.recorded

    @property
    def refused(self) -> int:
        return sum(self.non_2xx.values())

    @property
    def lag_ok(self) -> bool | None:
        """Whether the projection lag was 0 within LAG_GOAL_S (None: no projections)."""
        if self.system not in SERVED:
            return None
        return self.lag_zero_s is not None and self.lag_zero_s <= LAG_GOAL_S


def lag_text(m: HttpMeasurement) -> str:
    """The projection lag after the load, as the progress lines and the table say it."""
    if m.lag_events is None:
        return "-"
    if m.lag_zero_s is None:
        return f"{m.lag_events:,} events, not 0 in {LAG_WAIT_S:.0f} s"
    return f"{m.lag_events:,} events, 0 after {m.lag_zero_s:.2f} s"


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "wrk not found: the HTTP scenario needs it (`bash scripts/ensure-wrk.sh` installs "
            "Debian's; `make bench` runs it); or leave http out of --systems"
        )
    return found


def describe(seconds: int) -> dict[str, Any]:
    """How the HTTP rows were run, for the report's meta."""
    return {
        "seconds": seconds,
        "load": f"wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{seconds}s --latency "
        f"--timeout {WRK_TIMEOUT_S}s -s bench/http_transfers.lua",
        "server": stack(),
        "lag_goal_s": LAG_GOAL_S,
    }


def stack() -> str:
    """The server stack both servers run, for the report."""
    import importlib.util

    import fastapi
    import uvicorn

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return (
        f"uvicorn {uvicorn.__version__} ({http}, {loop}), FastAPI {fastapi.__version__}, 1 process"
    )


def eventbank_cli() -> list[str]:
    """The ``eventbank`` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("eventbank")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from eventbank.cli import main; main()"]


def measure_http(
    system: str,
    engine: str,
    scenario: HttpScenario,
    seconds: int,
    seed: int,
    store_url: str | None = None,
) -> HttpMeasurement:
    """One row: start the server (``eventbank serve`` on ``store_url``, or the floor), set up,
    run wrk for ``seconds``, stop the server."""
    with tempfile.TemporaryDirectory(prefix="eb-bench-http-") as folder:
        tokens = Path(folder) / "tokens.json"
        token = add_token(tokens)
        port = free_port()
        if system in SERVED:
            if store_url is None:
                raise ValueError("eventbank serve needs a store URL")
            argv = [*eventbank_cli(), "--store", store_url, "serve", "--host", "127.0.0.1",
                    "--port", str(port), "--tokens-file", str(tokens),
                    "--workers", "2" if system == WORKERS_2 else "1"]  # fmt: skip
            if system == NOT_INLINE:
                argv.append("--no-inline-projection")
            if system == LEDGER_PROCESS:
                argv.append("--ledger-process")
        elif system == FLOOR:
            argv = [sys.executable, "-m", "bench.http_floor", "--port", str(port)]
        else:
            raise ValueError(f"unknown HTTP system {system!r}")
        started = time.perf_counter()
        with ServerProcess(argv, port, Path(folder) / "server.log") as server:
            if system in SERVED:
                open_accounts(port, token, scenario.opened)
                if lag_zero(port, token, START_TIMEOUT_S)[1] is None:
                    raise RuntimeError(f"projections not caught up {START_TIMEOUT_S:.0f} s "
                                       "after the accounts were opened")  # fmt: skip
            setup_s = time.perf_counter() - started
            counted = store_url if system in SERVED and scenario.batch > 1 else None
            return drive(server, system, engine, scenario, seconds, seed, token, setup_s,
                         counted)  # fmt: skip


def drive(
    server: ServerProcess,
    system: str,
    engine: str,
    scenario: HttpScenario,
    seconds: int,
    seed: int,
    token: str,
    setup_s: float,
    counted: str | None = None,
) -> HttpMeasurement:
    """Run wrk against ``server``; then, for eventbank, watch the projection lag. With
    ``counted`` (the server's store URL), the transfers it recorded while wrk ran are counted
    there, and the row's figures are per those (``HttpMeasurement.recorded``)."""
    argv = [wrk_path(), f"-t{WRK_THREADS}", f"-c{scenario.connections}", f"-d{seconds}s",
            "--latency", "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(SCRIPT),
            f"http://127.0.0.1:{server.port}/transfers", "--", str(scenario.accounts),
            str(seed), uuid.uuid4().hex[:12], str(scenario.batch)]  # fmt: skip
    env = {**os.environ, "EVENTBANK_BENCH_TOKEN": token}
    with closing(open_store(counted)) if counted else nullcontext() as store:
        # the store's last position read beside the CPU, before and after wrk; the transfers
        # between the two are counted after, so that the reading takes none of wrk's time
        first = store.last_position() if store else None
        cpu_before, loop_before = server.cpu_seconds(), server.loop_cpu_seconds()
        done = subprocess.run(argv, capture_output=True, text=True, env=env,
                              timeout=seconds + 60, check=False)  # fmt: skip
        cpu_s = server.cpu_seconds() - cpu_before
        loop_s = server.loop_cpu_seconds() - loop_before
        last = store.last_position() if store else None
        recorded = transfers_between(store, first or 0, last or 0) if store else None
    figures = _wrk_figures(done, server)
    lag_events, lag_zero_s = (None, None)
    if system in SERVED:
        lag_events, lag_zero_s = lag_zero(server.port, token, LAG_WAIT_S)
    ok = figures["ok"]
    per = ok if recorded is None else recorded
    duration_s = figures["duration_us"] / 1e6
    latency = figures["latency_us"]
    return HttpMeasurement(
        system=system,
        engine=engine,
        scenario=scenario.name,
        connections=scenario.connections,
        accounts=scenario.accounts,
        setup_s=round(setup_s, 3),
        seconds=round(duration_s, 3),
        requests=figures["requests"],
        ok=ok,
        non_2xx=dict(sorted(figures["non_2xx"].items())),
        socket_errors={name: n for name, n in figures["errors"].items() if n},
        transfers_per_s=per / duration_s if duration_s else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        server_cpu_us=cpu_s / per * 1e6 if per else 0.0,
        server_cpu_s=round(cpu_s, 3),
        lag_events=lag_events,
        lag_zero_s=None if lag_zero_s is None else round(lag_zero_s, 3),
        load_average=round(os.getloadavg()[0], 2),
        wrk=" ".join(["wrk", *argv[1:]]),
        loop_cpu_us=loop_s / per * 1e6 if per and system != WORKERS_2 else None,
        recorded=recorded,
    )


def transfers_between(store: EventStore, after_position: int, last_position: int) -> int:
    """The transfers (``TransferredOut`` events) recorded after ``after_position``, up to and
    including ``last_position`` (positions follow commit order on the engines served batches
    run on)."""
    count, position = 0, after_position
    while position < last_position and (page := store.read_all(position, MAX_READ_LIMIT)):
        count += sum(e.event_type == "TransferredOut" for e in page
                     if cast(int, e.position) <= last_position)  # fmt: skip
        position = cast(int, page[-1].position)
    return count


def _wrk_figures(done: subprocess.CompletedProcess[str], server: ServerProcess) -> dict[str, Any]:
    for line in done.stdout.splitlines():
        if line.startswith("BENCH-JSON "):
            return json.loads(line.removeprefix("BENCH-JSON "))
    raise RuntimeError(
        f"wrk exited {done.returncode} without its figures:\n{done.stdout[-2000:]}"
        f"{done.stderr[-2000:]}\nserver log:\n{server.log_tail()}"
    )


def add_token(tokens: Path) -> str:
    """A teller token, made with ``eventbank tokens add`` in the file the server will read."""
    done = subprocess.run(
        [*eventbank_cli(), "tokens", "add", "bench", "--role", "teller", "--tokens-file",
         str(tokens)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"eventbank tokens add failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


class ServerProcess:
    """A server started as a process of its own, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, argv: list[str], port: int, log: Path):
        self.argv, self.port, self.log = argv, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("EVENTBANK_WORKERS", "EVENTBANK_TOKENS")}  # fmt: skip
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=ROOT,
            )  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.argv[:4])}… exited "
                                   f"{self.process.returncode}:\n{self.log_tail()}")  # fmt: skip
            try:
                status, _ = request(self.port, "GET", "/healthz", timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"no answer on port {self.port} in {START_TIMEOUT_S:.0f} s:\n"
                           f"{self.log_tail()}")  # fmt: skip

    def cpu_seconds(self) -> float:
        """User + system CPU of the process and of its children (the worker processes of
        ``serve --workers N``), all their threads (Linux /proc)."""
        assert self.process is not None
        root, ticks = self.process.pid, 0
        for pid in (int(name) for name in os.listdir("/proc") if name.isdigit()):
            fields = _stat(f"/proc/{pid}/stat")
            if fields is not None and (pid == root or fields[1] == str(root)):
                ticks += _cpu_ticks(fields)
        return ticks / os.sysconf("SC_CLK_TCK")

    def loop_cpu_seconds(self) -> float:
        """User + system CPU of the process's main thread alone, where uvicorn runs its event
        loop (Linux /proc/PID/task/PID); 0 once the process is gone."""
        assert self.process is not None
        pid = self.process.pid
        fields = _stat(f"/proc/{pid}/task/{pid}/stat")
        return 0.0 if fields is None else _cpu_ticks(fields) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _stat(path: str) -> list[str] | None:
    """A process's or a thread's ``stat`` (``/proc/PID/stat``, ``/proc/PID/task/TID/stat``)
    from its 3rd field (state) on: [1] is the parent's pid, [11] and [12] the user and system
    ticks. None for one gone meanwhile."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def _cpu_ticks(fields: list[str]) -> int:
    """User + system ticks of a ``_stat``."""
    return int(fields[11]) + int(fields[12])


def request(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: dict[str, Any] | None = None,
    timeout: float = 30,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    """(status, JSON body or None); on ``conn`` if given, else on a connection of its own."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)  # fmt: skip
        response = conn.getresponse()
        data = response.read()
    finally:
        if own:
            conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:
        return response.status, None


def open_accounts(port: int, token: str, count: int) -> None:
    """``count`` accounts through ``POST /accounts``, each with INITIAL_MINOR deposited."""
    local = threading.local()
    conns: list[http.client.HTTPConnection] = []  # one keep-alive connection per thread
    deposit = format_minor(INITIAL_MINOR, CURRENCY)

    def open_one(account: str) -> None:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conns.append(local.conn)
        body = {"account_id": account, "owner": "Bench", "type": "CHECKING",
                "currency": CURRENCY, "initial_deposit": deposit}  # fmt: skip
        status, answer = request(port, "POST", "/accounts", token, body, conn=local.conn)
        if status != 201:
            raise RuntimeError(f"POST /accounts {account}: {status} {answer}")

    try:
        concurrently(open_one, [account_id(i) for i in range(count)])
    finally:
        for conn in conns:
            conn.close()


def lag_zero(port: int, token: str, wait_s: float) -> tuple[int, float | None]:
    """(the projection lag in events now, seconds until it was 0; None if not within
    ``wait_s``), from ``GET /stats``."""
    started = time.perf_counter()
    first = None
    while True:
        status, stats = request(port, "GET", "/stats", token)
        if status != 200:
            raise RuntimeError(f"GET /stats: {status} {stats}")
        projection = stats["projection"]
        first = projection["lag_events"] if first is None else first
        elapsed = time.perf_counter() - started
        if projection["lag_events"] == 0 and not projection["lag_capped"]:
            return first, elapsed
        if elapsed > wait_s:
            return first, None
        time.sleep(0.05)
