"""``eventbank bench``: runs the benchmark harness of the source checkout (``python -m bench``).

The harness lives in the repository's bench/, not in the installed package: it installs a peer
library into a venv of its own and starts servers, which is development tooling. So this
command works from a checkout (an editable install, as ``make install`` makes) and says so
otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from eventbank.domain.errors import InvalidInput

CHECKOUT = Path(__file__).resolve().parents[3]  # src/eventbank/cli/bench.py -> the checkout

bench_app = typer.Typer()


@bench_app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # --help goes to the harness, which knows its options
)
def bench(ctx: typer.Context) -> None:
    """Benchmark eventbank against the eventsourcing library and raw-SQL floors (--help)."""
    if not (CHECKOUT / "bench" / "__main__.py").is_file():
        raise InvalidInput(
            "eventbank bench needs a source checkout (bench/ beside src/); "
            "install eventbank from one with `make install`"
        )
    # From the caller's directory (a relative --out means what it says), finding bench/ by path.
    paths = [str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    raise typer.Exit(subprocess.call([sys.executable, "-m", "bench", *ctx.args], env=env))
