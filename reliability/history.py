"""The run's history: one JSON object per line, appended as each operation or fault completes.

Written line by line and flushed, so what a run did survives a harness that dies mid-run.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class History:
    """Thread-safe appender; every line gets ``t``, seconds since the history was opened."""

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def now(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def record(self, op: str, **fields: Any) -> None:
        line = json.dumps({"op": op, "t": self.now(), **fields})
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_history(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]
