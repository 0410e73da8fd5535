"""Commands off the event loop in one hop: a bounded pool of threads of their own.

A ``def`` route runs in Starlette's shared thread pool (40 threads), and a ``def`` route with a
response model goes there twice: once for the handler, once more to validate what it returned.
Each hop is a thread woken and the event loop woken back. A write route is instead ``async def``
and awaits ``run_command``: the command runs on one of ``COMMAND_THREADS`` threads (the service
blocks there while its group commit is written), and the answer is validated and sent on the
event loop. The request's context (actor, request id, command id) goes with it, as it does into
Starlette's pool. A command whose client goes away still runs to its end, as before: its
outcome is recorded, and a retry with the same key gets it.

``COMMAND_THREADS`` bounds the commands in flight in this process (more wait here for a
thread); group commit writes the appends of those waiting together, so it is also the largest
batch the HTTP path forms. On the 2-CPU benchmark machine, with 16 connections, 4 to 32 threads
measured alike within the noise (docs/performance.md, "The request path"); 32 leaves room for
larger batches under more connections without the shared pool's 40.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

COMMAND_THREADS = 32

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(COMMAND_THREADS, thread_name_prefix="command")
    return _pool


async def run_command(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` on a command thread, in a copy of the caller's context."""
    context = contextvars.copy_context()
    job = functools.partial(context.run, call, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), job)
