"""A real `eventbank serve` process on loopback for the HTTP and dashboard tests."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

EVENTBANK = str(Path(sys.executable).parent / "eventbank")
TELLER, AUDITOR = "teller-secret-1", "auditor-secret-1"


@dataclass
class Server:
    url: str
    admin: str
    process: subprocess.Popen
    tokens_file: Path

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(folder: Path, *options: str) -> tuple[subprocess.Popen, str, str]:
    """Start `eventbank serve` with its store, tokens and webhook key in ``folder`` and any more
    ``options``; returns (process, base URL, stderr so far up to readiness)."""
    port = free_port()
    env = {**os.environ, "EVENTBANK_TOKENS": f"teller:{TELLER},auditor:{AUDITOR}"}
    process = subprocess.Popen(
        [EVENTBANK, "--store", f"sqlite:///{folder / 'http.db'}", "serve", "--port", str(port),
         "--tokens-file", str(folder / "tokens.json"),
         "--webhook-key-file", str(folder / "webhook.key"), *options],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        seen.append(line)
        if "Uvicorn running" in line:
            return process, f"http://127.0.0.1:{port}", "".join(seen)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("eventbank serve did not start:\n" + "".join(seen))


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def serve(folder: Path, *options: str) -> Iterator[Server]:
    """A started server with its first-start admin token, stopped when the generator closes."""
    process, url, startup = start_server(folder, *options)
    admin = re.search(r"eb_[A-Za-z0-9_-]+", startup)
    assert admin, startup
    # drain the JSON log so the pipe never fills
    drain = ThreadPoolExecutor(1)
    drain.submit(lambda: [None for _ in process.stderr])
    yield Server(url, admin.group(), process, folder / "tokens.json")
    stop_server(process)
    drain.shutdown(wait=False)
