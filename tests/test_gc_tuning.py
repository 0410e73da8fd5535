"""A server process's garbage collector settings (gc_tuning.py), each test in a process of its
own: freezing is for the life of the process."""

from __future__ import annotations

import subprocess
import sys

from eventbank.gc_tuning import YOUNG_THRESHOLD


def printed_after_tuning(script: str) -> list[str]:
    """What ``script`` prints when run after ``tune_gc_for_serving`` in a fresh interpreter."""
    setup = "import gc\nfrom eventbank.gc_tuning import tune_gc_for_serving\n"
    done = subprocess.run([sys.executable, "-c", setup + script], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return done.stdout.split()


def test_a_tuned_process_freezes_what_it_holds_and_collects_young_objects_less_often():
    printed = printed_after_tuning(
        "before = gc.get_threshold()\n"
        "kept = [{} for _ in range(1000)]\n"
        "tune_gc_for_serving()\n"
        "print(before[1:] == gc.get_threshold()[1:], gc.get_threshold()[0],\n"
        "      gc.get_freeze_count() >= 1000, gc.isenabled())\n"
    )
    assert printed == ["True", str(YOUNG_THRESHOLD), "True", "True"]


def test_cyclic_garbage_is_still_collected_once_enough_waits():
    """Reference cycles wait for a collection of the young generation, which comes once about
    ``YOUNG_THRESHOLD`` of them wait: memory held by them stays bounded."""
    printed = printed_after_tuning(
        "import weakref\n"
        "tune_gc_for_serving()\n"
        "class Node:\n"
        "    pass\n"
        "first = Node(); first.me = first; alive = weakref.ref(first); del first\n"
        f"for _ in range({YOUNG_THRESHOLD * 2}):\n"
        "    node = Node(); node.me = node; del node\n"
        "print(alive() is None)\n"
    )
    assert printed == ["True"]
