"""Starting the service as an operator does: ``eventbank serve`` on a busy port is one line and
exit 2; ``make run PORT=N`` serves beside a busy default port and prints one start block before
the logs; ``/docs`` and ``/redoc`` render in headless Chromium with every non-loopback request
refused (their assets come from this process, not a CDN)."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.serving import EVENTBANK, TELLER, Server, free_port, serve, start_server, stop_server
from tests.test_dashboard import browser, shot  # noqa: F401 - browser: a fixture

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8000


@contextmanager
def port_in_use(port: int = 0) -> Iterator[int]:
    """A port that something listens on: held here, or already held by another process."""
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            yield port  # busy already: just as good
            return
        holder.listen()
        yield holder.getsockname()[1]


def test_a_busy_port_is_one_line_and_exit_2_and_creates_nothing(tmp_path):
    with port_in_use() as busy:
        done = subprocess.run(
            [EVENTBANK, "--store", f"sqlite:///{tmp_path / 'serve.db'}", "serve", "--port",
             str(busy), "--tokens-file", str(tmp_path / "tokens.json")],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr == (
        f"error: port {busy} is in use; pick another with --port N (make run PORT=N)\n"
    )
    assert done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no store, no admin token made for nothing


@contextmanager
def make_run(folder: Path, port: int) -> Iterator[tuple[str, str]]:
    """`make run PORT=port` from the repository root, the store and token file in ``folder``;
    yields (base URL, stderr up to readiness) and stops make and the server it started."""
    env = {**os.environ, "EVENTBANK_STORE": f"sqlite:///{folder / 'run.db'}",
           "EVENTBANK_TOKENS_FILE": str(folder / "tokens.json")}  # fmt: skip
    env.pop("EVENTBANK_TOKENS", None)
    env.pop("MAKEFLAGS", None)
    with (folder / "make.out").open("w") as make_out:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}"], cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=make_out, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group: make and the server stop together
        )  # fmt: skip
    drain = ThreadPoolExecutor(1)
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 180  # time for one `pip install -e .` if the stamp is old
        while time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
            seen.append(line)
            if "Uvicorn running" in line:
                break
        else:
            make_output = (folder / "make.out").read_text()
            pytest.fail(f"make run did not start:\n{make_output}{''.join(seen)}")
        drain.submit(lambda: [None for _ in process.stderr])  # the pipe never fills
        yield f"http://127.0.0.1:{port}", "".join(seen)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        drain.shutdown(wait=False)


def test_make_run_takes_port_beside_a_busy_default_and_prints_one_start_block(tmp_path):
    port = free_port()
    with port_in_use(DEFAULT_PORT), make_run(tmp_path, port) as (url, startup):
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
    block, _, logs = startup.partition("\n{")
    assert logs, startup  # JSON logs follow the block
    assert f"dashboard    {url}/\n" in block
    assert f"API docs     {url}/docs" in block
    token_line = next(line for line in block.splitlines() if "admin token" in line)
    token = token_line.split()[-1]
    assert token.startswith("eb_") and token not in (tmp_path / "tokens.json").read_text()
    assert f"only its hash is kept, in {tmp_path / 'tokens.json'}" in block
    assert f"event store  sqlite:///{tmp_path / 'run.db'}" in block


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    yield from serve(tmp_path_factory.mktemp("serve"))


def offline_page(browser: Browser, blocked: list[str]) -> Page:  # noqa: F811
    """A page whose every request off loopback is refused, as on a machine with no network."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()

    def loopback_only(route: Route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", loopback_only)
    return page


def test_api_docs_render_with_the_network_off(browser, server):  # noqa: F811
    blocked: list[str] = []
    errors: list[str] = []
    console: list[str] = []
    page = offline_page(browser, blocked)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and console.append(message.text))
    try:
        page.goto(f"{server.url}/docs")
        expect(page).to_have_title("eventbank API docs")
        expect(page.locator(".info .title")).to_contain_text("eventbank")
        expect(page.locator(".opblock").first).to_be_visible()
        assert page.locator(".opblock").count() > 10  # every operation, from /openapi.json
        expect(page.locator(".opblock-summary-path", has_text="/healthz")).to_be_visible()
        shot(page, "api-docs")
        assert console == []

        page.goto(f"{server.url}/redoc")
        expect(page.locator("h1").first).to_contain_text("eventbank")
        expect(page.get_by_text("/healthz").first).to_be_attached()
        shot(page, "api-reference")
    finally:
        page.context.close()
    assert blocked == []  # nothing was even asked of another host
    assert errors == []
    # ReDoc's "API docs by Redocly" credit points its logo at a CDN: the page's policy refuses it
    # in the browser (the image hides itself), so no request for it is even attempted
    assert all("cdn.redoc.ly" in text and "Content Security Policy" in text for text in console)


def test_without_inline_projection_the_runner_brings_reads_up_to_what_was_answered(tmp_path):
    """`serve --no-inline-projection` says so on start, answers commands, and the background
    runner projects them: the balances and the lag come right within seconds."""
    process, url, startup = start_server(tmp_path, "--no-inline-projection")
    try:
        assert "projection   in the background only" in startup
        teller = {"Authorization": f"Bearer {TELLER}"}
        with httpx.Client(base_url=url, headers=teller, timeout=10) as client:
            for account, deposit in (("acc-a", "50.00"), ("acc-b", None)):
                opened = client.post("/accounts", json={
                    "account_id": account, "owner": "O", "type": "CHECKING",
                    "initial_deposit": deposit})  # fmt: skip
                assert opened.status_code == 201, opened.text
            sent = client.post(
                "/transfers",
                json={"from_account_id": "acc-a", "to_account_id": "acc-b", "amount": "20.00"},
            )
            assert sent.status_code == 201, sent.text
            deadline = time.monotonic() + 15
            while True:
                lag = client.get("/stats").json()["projection"]["lag_events"]
                balances = [client.get(f"/accounts/{a}").json().get("balance")
                            for a in ("acc-a", "acc-b")]  # fmt: skip
                if lag == 0 and balances == ["30.00", "20.00"]:
                    break
                assert time.monotonic() < deadline, (lag, balances)
                time.sleep(0.1)
    finally:
        stop_server(process)


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPUs each thread of process ``pid`` may run on."""
    tasks = Path(f"/proc/{pid}/task")
    return {frozenset(os.sched_getaffinity(int(tid.name))) for tid in tasks.iterdir()}


def test_one_server_process_keeps_its_threads_on_one_cpu_unless_told_any_cpu(tmp_path):
    everywhere = frozenset(os.sched_getaffinity(0))
    assert len(everywhere) >= 2, "this test needs a machine with two CPUs or more"
    teller = {"Authorization": f"Bearer {TELLER}"}
    for options, folder in (((), tmp_path / "one"), (("--any-cpu",), tmp_path / "any")):
        folder.mkdir()
        process, url, startup = start_server(folder, *options)
        try:  # a command and a read first: the threads that run them are started by now
            opened = httpx.post(f"{url}/accounts", headers=teller, timeout=10, json={
                "account_id": "acc-cpu", "owner": "O", "type": "CHECKING"})  # fmt: skip
            assert opened.status_code == 201, opened.text
            assert httpx.get(f"{url}/accounts/acc-cpu", headers=teller, timeout=10).is_success
            cpus = thread_cpus(process.pid)
        finally:
            stop_server(process)
        if options:
            assert cpus == {everywhere}, cpus
            assert "  cpu  " not in startup, startup
        else:
            ((cpu,),) = cpus  # every thread on the one CPU
            assert cpu in everywhere
            assert f"  cpu          {cpu}: the process's threads stay on it" in startup, startup


def test_threads_started_before_are_moved_to_the_one_cpu_too():
    """serve pins itself before it starts threads, but a thread an import started earlier must
    not be left free: every thread of the process moves."""
    script = (
        "import os, threading\n"
        "from eventbank.http.one_cpu import stay_on_one_cpu\n"
        "stop = threading.Event()\n"
        "early = threading.Thread(target=stop.wait)\n"
        "early.start()\n"
        "cpu = stay_on_one_cpu()\n"
        "late = threading.Thread(target=stop.wait)\n"
        "late.start()\n"
        "print(cpu, sorted(os.sched_getaffinity(early.native_id)),"
        " sorted(os.sched_getaffinity(late.native_id)), sorted(os.sched_getaffinity(0)))\n"
        "stop.set()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    cpu = int(done.stdout.split()[0])
    assert done.stdout.split(maxsplit=1)[1].strip() == f"[{cpu}] [{cpu}] [{cpu}]", done.stdout
