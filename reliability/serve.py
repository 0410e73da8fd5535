"""``eventbank serve`` as a real process on a fixed loopback port, for the chaos harness.

The port never changes across ``kill()`` and ``start()``, so clients keep one base URL while
the nemesis crashes the server under them. Its output is appended to one log across restarts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from reliability.servers import ServerError, free_port, local_aws_env

EVENTBANK = str(Path(sys.executable).parent / "eventbank")
START_TIMEOUT_S = 60.0


class ServeProcess:
    """One ``eventbank --store URL serve`` on ``127.0.0.1:port``; ``tokens`` maps role to the
    bearer token injected through ``EVENTBANK_TOKENS``. With ``workers`` above 1 it is
    ``serve --workers N``: a supervisor and its workers, all in the process group that
    ``kill()`` ends. Several may share ``folder`` (and its token file) under distinct ``name``s,
    which name their logs. ``options``: more of ``serve``'s (``--ledger-process``)."""

    def __init__(
        self,
        store_url: str,
        folder: Path,
        tokens: Mapping[str, str],
        *,
        workers: int = 1,
        name: str = "serve",
        options: Sequence[str] = (),
    ):
        self.folder, self.store_url, self.name = folder, store_url, name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [EVENTBANK, "--store", store_url, "serve", "--port", str(self.port),
                     "--tokens-file", str(folder / "tokens.json"),
                     *(["--workers", str(workers)] if workers > 1 else []), *options]  # fmt: skip
        tokens_env = ",".join(f"{role}:{token}" for role, token in tokens.items())
        self.env = {**local_aws_env(), "EVENTBANK_TOKENS": tokens_env}
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start and wait until ``/healthz`` answers; a start that fails (its store still
        recovering) is tried again until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                cwd=self.folder, start_new_session=True,
            )  # fmt: skip
            threading.Thread(target=_copy, args=(self.process.stdout, self.log_path),
                             daemon=True).start()  # fmt: skip
            if self._wait_healthy(deadline):
                return
            if time.monotonic() > deadline:
                self.kill()
                log = self.log_path.read_text(errors="replace")[-4000:]
                raise ServerError(f"eventbank serve did not start in {timeout_s} s:\n{log}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown, no flush) and reap."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a graceful shutdown); SIGKILL if it has not exited within ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def _wait_healthy(self, deadline: float) -> bool:
        """True once it answers; False if the process exited first or the deadline passed."""
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        return False


def _copy(output: IO[bytes], log_path: Path) -> None:
    """Copy the server's output to its log from this process, so a file-size limit put on the
    server (the disk-full fault) never silences its log."""
    with open(log_path, "ab") as log:
        for line in output:
            log.write(line)
            log.flush()
