"""The chaos nemesis deals every kind of fault in each run, however slow recovery is."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

from reliability.deployments import Deployment, Fault, run_nemesis
from reliability.history import History, read_history


def test_a_run_over_before_its_first_faults_recover_still_meets_every_kind_once(tmp_path: Path):
    """The run's time is up before the first fault has recovered: the first deck (each kind
    once, the resource fault first) is still dealt whole, and nothing after it."""

    def slow(_: random.Random) -> None:
        time.sleep(0.2)  # a restart slower than the whole run

    faults = [Fault("server_kill", True, 3, slow), Fault("ledger_process_kill", True, 3, slow),
              Fault("disk_full", False, 1, slow)]  # fmt: skip
    history = History(tmp_path / "history.jsonl")
    stop = threading.Event()
    stop.set()  # the duration has passed already
    run_nemesis(Deployment("sqlite", "sqlite:///x", (), faults), history, stop,
                random.Random(7), interval_s=(0.01, 0.02), quiet_s=0.0)  # fmt: skip
    history.close()
    dealt = [line["kind"] for line in read_history(tmp_path / "history.jsonl")]
    assert dealt[0] == "disk_full"
    assert sorted(dealt) == ["disk_full", "ledger_process_kill", "server_kill"]
