"""Single transfers decided and written in a process of their own, beside the HTTP server's.

Why: one Python process runs one thread at a time. In ``eventbank serve`` the event loop
(HTTP, authentication, validation, answers) and the ledger's threads (deciding, writing,
projecting) take turns on one interpreter, so a served transfer costs the sum of both, on one
CPU, however many the machine has. With ``serve --ledger-process`` the concurrent
``POST /transfers`` the server coalesces (http/commands.py) are sent, a group at a time, to a
child process that runs ``LedgerService.transfer_each`` on its own ledger (its own group commit
and inline projection), as are batches (``POST /transfers/batch``: ``transfer_batch``), and it
sends the answers back: each process has an interpreter of its own,
and the child may run on any CPU the server could (the server keeps its own threads on one,
http/one_cpu.py), so the two run at once (docs/performance.md, "A ledger process").

What stays the same: each transfer is the command it is in the server (its idempotency key, its
actor, its answer after the durable commit); everything else the server does runs in the server
as before, on the same stores (both processes write them, as two ``--workers`` do). The child's
command and append metrics come back with each group's answers and are counted in the server's
``/metrics``. The child ends when the server closes it or goes away (its end of the pipe
closes). If it dies, the transfers of a group it held fail with ``LedgerProcessLost`` (their
outcome is unknown: a retry with the same ``Idempotency-Key`` is answered from the first run if
it was written); the next group, or one that could not be sent, starts a new child.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from eventbank.application.batch import BatchItem, ItemResult
from eventbank.application.observability import Metrics
from eventbank.application.write_path import Receipt, current_actor
from eventbank.domain.errors import EventbankError
from eventbank.gc_tuning import tune_gc_for_serving
from eventbank.ports.event_store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0  # opening the stores: a PostgreSQL server may be starting
STOP_TIMEOUT_S = 10.0
SEND_ATTEMPTS = 3  # a group not sent (its child stopped meanwhile) goes to the next child

Answer = Receipt | EventbankError


class LedgerProcessLost(StoreUnavailable):
    """The ledger process ended while it held these transfers: each may or may not have been
    written (a retry with the same key is answered from its first run if it was)."""

    code = "ledger_process_lost"


@dataclass(frozen=True)
class _Settings:
    store_url: str
    read_store_url: str | None
    inline: bool
    json_logs: bool
    cpus: frozenset[int] | None  # the CPUs the child's threads may run on; None: the parent's


class LedgerProcess:
    """The parent's handle on the child: ``transfer_each`` and ``transfer_batch`` as the
    service answers them, run in the child. ``channels`` groups or batches at a time, each
    over a pipe of its own that a thread of the child serves: while one group's commit is
    written, the child decides the next (as two coalescer runners do in one process)."""

    def __init__(
        self,
        store_url: str,
        read_store_url: str | None = None,
        *,
        inline: bool = True,
        json_logs: bool = False,
        cpus: frozenset[int] | None = None,
        metrics: Metrics | None = None,
        channels: int = 2,
    ):
        self._settings = _Settings(store_url, read_store_url, inline, json_logs, cpus)
        self._metrics, self.channels = metrics, channels
        self._lock = threading.Lock()  # starting and stopping the child
        self._child: multiprocessing.process.BaseProcess | None = None
        # the child's pipes not in use; None wakes a caller waiting for one of a child stopped
        self._free: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self._conns: list[Connection] = []
        self._closed = False
        self._failed_starts = 0  # with the last one's error
        self._start_error: Exception | None = None

    def start(self) -> None:
        """Start the child and wait until its ledger is open; a store it cannot open is the
        ``StoreError`` it met."""
        failed_starts = self._failed_starts
        with self._lock:
            if self._child is None:
                self._start_unless_failed_since(failed_starts)

    def transfer_each(self, items: Sequence[BatchItem]) -> list[Answer]:
        """Each item's receipt or error, in order, as ``LedgerService.transfer_each`` answers
        them in the child (started if it is not running)."""
        try:
            answers: list[Answer] = self._call(("each", list(items)))
        except LedgerProcessLost as lost:
            return [lost] * len(items)
        return answers

    def transfer_batch(
        self, items: Sequence[BatchItem], *, atomic: bool = False
    ) -> list[ItemResult]:
        """``LedgerService.transfer_batch`` run in the child: each item's ``ItemResult``, in
        order (a batch the child lost is ``LedgerProcessLost``, raised)."""
        results: list[ItemResult] = self._call(("batch", list(items), atomic,
                                                current_actor.get()))  # fmt: skip
        return results

    def _call(self, message: tuple[Any, ...]) -> Any:
        """Send ``message`` on a free pipe and return the child's answer (or raise the error it
        sent). A message that could not be sent (the child stopped meanwhile) goes to the next
        child; one sent and not answered is lost."""
        for _ in range(SEND_ATTEMPTS):
            failed_starts = self._failed_starts
            with self._lock:
                if self._closed:
                    raise StoreUnavailable("the server is stopping: nothing was written")
                if self._child is None:
                    self._start_unless_failed_since(failed_starts)
                child, free = self._child, self._free
            conn = free.get()
            if conn is None:  # that child was stopped while this waited: wake the next waiter
                free.put(None)
                continue
            try:
                conn.send(message)
            except OSError:  # closed, or the child is gone: nothing was sent
                self._lost(child)
                continue
            try:
                answer, observed = conn.recv()
            except BaseException as exc:  # noqa: BLE001 - gone, or an answer that cannot be read
                self._lost(child)
                log.error("the ledger process ended with %d transfers in flight: %s",
                          len(message[1]), exc or type(exc).__name__)  # fmt: skip
                raise LedgerProcessLost(
                    "the ledger process ended while it held this transfer: it may have been "
                    "written; retry with the same Idempotency-Key to learn its outcome"
                ) from None
            break
        else:
            raise StoreUnavailable(
                f"the ledger process took no transfers in {SEND_ATTEMPTS} attempts; nothing "
                "was written, try again"
            )
        free.put(conn)
        if self._metrics is not None:
            _replay(self._metrics, observed)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def close(self) -> None:
        """Stop the child; what still calls afterwards is refused (``StoreUnavailable``)."""
        with self._lock:
            self._closed = True
            self._stop()

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    def _start_unless_failed_since(self, failed_starts: int) -> None:
        """Start the child, unless a start failed since the caller counted ``failed_starts``
        (while it waited for the lock): then that failure again. Callers queued behind a store
        that hangs on open fail together, instead of each waiting out ``START_TIMEOUT_S`` in
        turn; a caller that comes after the failure tries afresh."""
        if self._failed_starts != failed_starts and self._start_error is not None:
            raise copy.copy(self._start_error)  # a copy: each caller's traceback its own
        try:
            self._start()
        except Exception as exc:
            self._start_error = exc
            self._failed_starts += 1
            raise

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads forked
        pipes: list[tuple[Connection, Connection]] = []
        try:
            pipes += [context.Pipe() for _ in range(self.channels)]
            process = context.Process(target=_child_main,
                                      args=([c for _, c in pipes], self._settings),
                                      name="eventbank-ledger", daemon=True)  # fmt: skip
            process.start()
        except OSError as exc:  # no file descriptors or processes left, say
            _close([end for pipe in pipes for end in pipe])
            raise StoreUnavailable(f"the ledger process could not start: {exc}") from None
        for _, child_end in pipes:
            child_end.close()
        conns = [parent_end for parent_end, _ in pipes]
        try:
            if not conns[0].poll(START_TIMEOUT_S):
                raise StoreUnavailable(f"the ledger process did not start in {START_TIMEOUT_S} s")
            try:
                ready = conns[0].recv()
            except (EOFError, OSError):
                process.join(STOP_TIMEOUT_S)
                raise StoreUnavailable(
                    f"the ledger process exited ({process.exitcode}) before it was ready: its "
                    "log says why"
                ) from None
        except BaseException:
            process.kill()
            _close(conns)
            raise
        if isinstance(ready, BaseException):
            process.join(STOP_TIMEOUT_S)
            _close(conns)
            raise ready
        self._child, self._conns, self._free = process, conns, queue.SimpleQueue()
        for conn in conns:
            self._free.put(conn)

    def _lost(self, child: multiprocessing.process.BaseProcess | None) -> None:
        """A channel of ``child`` failed: stop it, unless another group did already."""
        with self._lock:
            if self._child is child:
                self._stop()

    def _stop(self) -> None:
        """Close the pipes (the child ends when it reads the end of them), then wait for it."""
        child, conns = self._child, self._conns
        self._child, self._conns = None, []
        _close(conns)
        for _ in conns:
            self._free.put(None)
        if child is not None:
            child.join(STOP_TIMEOUT_S)
            if child.is_alive():
                child.kill()
                child.join(STOP_TIMEOUT_S)


def _close(conns: Sequence[Connection]) -> None:
    for conn in conns:
        conn.close()


def _child_main(conns: list[Connection], settings: _Settings) -> None:
    """The child: open the ledger, say so on the first pipe, then answer groups on each pipe
    (a thread per pipe) until the parent closes them or goes away."""
    from eventbank.application.observability import configure_json_logging
    from eventbank.wiring import open_ledger

    # Its life is its pipes': a Ctrl-C or a SIGTERM to the whole process group leaves the
    # groups in flight to finish, and the child ends when the server closes the pipes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if settings.json_logs:
        configure_json_logging()
    else:
        logging.basicConfig(level=logging.INFO)
    if settings.cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, settings.cpus)  # a child starts on its parent's
    recorder = _Recorder()
    try:
        ledger = open_ledger(settings.store_url, settings.read_store_url, metrics=recorder,
                             channel="api", inline=settings.inline)  # fmt: skip
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        conns[0].send(_sendable(exc))
        return
    tune_gc_for_serving()

    def answer(conn: Connection) -> None:
        while True:
            try:
                kind, items, *options = conn.recv()
            except (EOFError, OSError):
                return  # the parent closed the pipe, or went away
            try:
                if kind == "batch":
                    atomic, actor = options
                    token = current_actor.set(actor)  # the request's, for what the batch records
                    try:
                        answers: Any = ledger.service.transfer_batch(items, atomic=atomic)
                    finally:
                        current_actor.reset(token)
                else:
                    answers = ledger.service.transfer_each(items)
            except BaseException as exc:  # noqa: BLE001 - every transfer of the message gets it
                answers = _sendable(exc)
            try:
                conn.send((answers, recorder.take()))
            except OSError:
                return  # the parent went away meanwhile: what was written stays recorded
            except Exception as exc:  # noqa: BLE001 - an answer that does not pickle
                conn.send((LedgerProcessLost(
                    f"the ledger process could not send its answer ({exc}): the transfers may "
                    "have been written; retry with the same Idempotency-Key to learn their "
                    "outcome"), []))  # fmt: skip

    try:
        conns[0].send("ready")
        threads = [threading.Thread(target=answer, args=(conn,), name=f"ledger-channel-{n}")
                   for n, conn in enumerate(conns)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        ledger.close()


def _sendable(exc: BaseException) -> BaseException:
    """``exc`` if it crosses the pipe intact, else a ``StoreError`` saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - whatever does not pickle
        return StoreError(f"the ledger process failed: {type(exc).__name__}: {exc}")
    return exc


# An observation the child made: the name of a Metrics attribute, its labels, and the value
# observed (None: a counter's increment).
Observed = tuple[str, tuple[str, ...], float | None]


class _Recorder(Metrics):
    """The child's metrics: the service and the store call it as they call ``Metrics``, and it
    keeps what they observed for the parent to count (``take``). Its metric attributes are the
    attributes' names, which ``child`` hands back as a recording handle."""

    def __init__(self) -> None:
        self._observed: list[Observed] = []
        self._lock = threading.Lock()
        for name in _RECORDED:
            setattr(self, name, name)

    def child(self, metric: Any, *labels: str) -> Any:
        return _Handle(self, metric, labels)

    def watch_projections(self, runner: Any) -> None:
        """The child runs no projection runner; the server's reports the lag."""

    def record(self, observed: Observed) -> None:
        with self._lock:
            self._observed.append(observed)

    def take(self) -> list[Observed]:
        with self._lock:
            taken, self._observed = self._observed, []
        return taken


_RECORDED = ("appends", "append_seconds", "command_seconds", "command_retries")


@dataclass(frozen=True)
class _Handle:
    recorder: _Recorder
    metric: str
    labels: tuple[str, ...]

    def inc(self) -> None:
        self.recorder.record((self.metric, self.labels, None))

    def observe(self, value: float) -> None:
        self.recorder.record((self.metric, self.labels, value))


def _replay(metrics: Metrics, observed: Sequence[Observed]) -> None:
    for name, labels, value in observed:
        handle = metrics.child(getattr(metrics, name), *labels)
        if value is None:
            handle.inc()
        else:
            handle.observe(value)
