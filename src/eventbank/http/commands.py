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

Single transfers go further (``Coalescer``): concurrent ``POST /transfers`` are queued, and
one of these threads takes whatever is queued and runs it in one call
(``LedgerService.transfer_each``), each transfer still its own command with its own key, actor
and answer. A command thread that waits for its own group commit, woken once per transfer,
costs the interpreter more than the transfer's own work; a thread deciding every queued
transfer in turn and waiting once for all of them does not (docs/performance.md, "The request
path").
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - an item queued to a Coalescer

COMMAND_THREADS = 32
# The longest a Coalescer's runner waits for the clients its last group answered (Coalescer),
# by default (``serve --group-wait-ms``) and at most.
GROUP_WAIT_MS = 5.0
MAX_GROUP_WAIT_MS = 100.0

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


# A queued request and where its answer goes: the item, its future and the future's loop.
_Queued = tuple[I, "asyncio.Future[Any]", asyncio.AbstractEventLoop]


class Coalescer(Generic[I, T]):
    """Requests queued from the event loop, run together on command threads: ``run(items)``
    answers each item in its place, with its result or the error to raise for it.

    At most ``runners`` command threads run queued items at a time, each taking up to
    ``max_group`` of them per call. One by default: what queues while a group is written joins
    the next group, and a group pays once, whatever its size, for its commit's and
    projection's statements and round trips. Two runners, each deciding a group while the
    other's was written, halved the groups: on PostgreSQL 15-25 % more server CPU per transfer
    and fewer transfers/s in every round; on SQLite faster in 2 rounds of 5, slower in 3
    (docs/performance.md). A request whose client goes away is still run (its outcome is
    recorded, as for ``run_command``); its answer is dropped. The calls run in a context of
    their own: a group holds several requests, so the request id is not in the log lines they
    write; the items carry what each request needs (its key, its actor).

    When the group before had company, a runner waits up to ``wait_ms`` for as many requests
    as that group and the queue hold together before it takes the next (group commit's rule,
    one step on): the clients just answered are likely to send again at once. Without it, 16
    busy connections settle into two groups of 8, each waiting for the other's whole run; with
    it, into one group of 16 waiting only for its own, which pays once for what two paid
    (docs/performance.md, "Groups that wait for the clients just answered"). A lone request,
    or one after a group of one, is taken at once. Requests that arrive on their own (many
    clients, each sending now and then) never fill the target, so then each group of several
    waits the whole ``wait_ms``: the price of the rule, bounded by it.
    """

    def __init__(
        self,
        run: Callable[[list[I]], Sequence[T | BaseException]],
        *,
        runners: int = 1,
        max_group: int = 128,
        wait_ms: float = GROUP_WAIT_MS,
    ):
        self._run, self.runners, self.max_group = run, runners, max_group
        self.wait_s = wait_ms / 1000
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queued: list[_Queued[I]] = []
        self._running = 0
        self._last = 0  # the size of the group taken last

    async def submit(self, item: I) -> T:
        """Queue ``item``; its result once its group has run, or its error raised."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._queued.append((item, future, loop))
            self._arrived.notify()
            start = self._running < self.runners
            self._running += start
        if start:
            _executor().submit(contextvars.Context().run, self._drain)
        return await future

    def _take(self) -> list[_Queued[I]]:
        """The next group, under the lock: after waiting for company (the class docstring)."""
        company = min(len(self._queued) + self._last, self.max_group)
        if self._last > 1 and self.wait_s:
            self._arrived.wait_for(lambda: len(self._queued) >= company, self.wait_s)
        group = self._queued[: self.max_group]
        del self._queued[: self.max_group]
        self._last = len(group)
        return group

    def _drain(self) -> None:
        """Run queued groups until the queue is empty, then leave."""
        while True:
            with self._lock:
                group = self._take()
                if not group:
                    self._running -= 1
                    return
            answers: Sequence[T | BaseException]
            try:
                answers = self._run([item for item, _, _ in group])
            except BaseException as exc:  # noqa: BLE001 - every request of the group gets it
                answers = [exc] * len(group)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, future, loop), answer in zip(group, answers, strict=True):
                by_loop.setdefault(loop, []).append((future, answer))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # the loop has closed: no request waits for these
                    continue


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the event loop: each future's answer, unless its request went away meanwhile."""
    for future, answer in settled:
        if future.done():
            continue
        if isinstance(answer, BaseException):
            future.set_exception(answer)
        else:
            future.set_result(answer)
