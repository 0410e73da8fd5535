"""Group commit: the appends of concurrent callers share one durable transaction.

Why: a durable commit waits for the disk (SQLite's WAL fsync, PostgreSQL's WAL flush), so one
transaction per command caps throughput at about one command per flush. Writing many commands'
appends in one transaction pays that wait once for all of them.

How (a leader and followers; no writer thread): a caller queues its append. If no batch is being
written, the caller leads: it opens an engine transaction, takes up to ``max_batch`` queued
appends (those that arrived while the transaction opened included), has the engine write them
in it (``write_many``: one statement reads what every check needs, the appends are screened in
queue order, the accepted ones inserted together; screening.py), commits, and only then
answers every caller in the batch with its own result or its own refusal. Callers that arrive
meanwhile wait; when the leader is done, the first of them leads the next batch, so batches
form while a commit is on its way to disk.

- A lone caller leads a batch of one at once, in its own thread, on its own connection and in
  a transaction of its own, exactly as without group commit: it waits for no one.
- When the previous batch had company, the leader waits up to ``max_wait_ms`` for as many
  callers as that batch had before it writes (PostgreSQL's ``commit_delay`` and
  ``commit_siblings`` idea), its transaction already open. Waiting for company adds at most
  ``max_wait_ms`` to a command, beyond the commit of the batch ahead of it.
- One append's own refusal (a conflict, a duplicate) is that caller's answer alone. Should the
  engine refuse the batch's inserts for a reason screening could not foresee (a constraint or
  trigger: any contract error), the transaction is rolled back and the batch written again in a
  new one, one append at a time, each under its own savepoint, so the failure stays with its
  append. A failure of the transaction itself (lock, I/O, a lost connection, the commit, an
  unexpected error) rolls everything back: a lone caller gets the engine's error, every caller
  of a larger batch ``StoreUnavailable`` (retrying the command is safe). No caller is
  acknowledged before the commit has returned, so an acknowledged append is durable, and a
  crash before the commit acknowledges nothing.
- A follower waits at most ``follower_timeout_s`` (10 s) from when it queued, then gets
  ``StoreUnavailable``. The engines bound their leaders' waits themselves (PostgreSQL every
  round trip, postgres/connection.py; SQLite its busy timeout); this is the backstop for a
  leader stuck where those do not reach (a disk that hangs a write or an fsync, a bug). What
  becomes of the append of a follower that gives up is decided under the mutex that batches
  are taken under, so it is one of these, and the follower is answered once:

  - still queued (no leader took it): it is taken out of the queue, so no leader ever writes
    it, and the caller is told nothing was written. An append queued after it that was built
    on it (``previous_hashes``) then fails its checks, as after a refusal.
  - promoted to lead, or answered, meanwhile: it leads (the queue waits for it), or returns
    its answer, as if it had not timed out.
  - in a batch being written: that cannot be undone, so the caller is told its outcome is
    unknown, and the answer the leader gives it once the commit returns is dropped. This is
    what a connection lost during a COMMIT tells, and as safe: ``StoreUnavailable`` means the
    command may be retried, and the retry carries the same command id, whose record is in the
    same transaction as the events, so an append that did land is found (``DuplicateCommand``,
    then its first outcome replayed), never written twice; the retry decides on what the store
    holds (the service drops the streams of a failed append from its cache), and any append
    built on the abandoned one stands or falls with it in the store's checks. An append
    written with no command record has no such guard, as with any lost connection.

  Giving up only ever yields an error, never a result, so no caller is acknowledged before
  its commit returns; an abandoned append that commits counts in ``appends`` for no one.

Settings, as engine constructor arguments or store URL query parameters
(``sqlite:///x.db?group_commit_wait_ms=1&group_commit_max=128``):

- ``group_commit_max`` (default 128, 1 to 1000): most appends in one transaction; 1 turns group
  commit off (one transaction per append).
- ``group_commit_wait_ms`` (default 1, 0 to 1000): longest a leader waits for company; 0 never
  waits (batches then form only while a commit is in flight).

``follower_timeout_s`` is a constructor argument of ``GroupCommit`` only (the engines keep the
default).

``after_commit`` (an attribute, None by default; wiring.py sets it to project inline): called by
each leader with the results of the batch it committed (abandoned appends included: they are
durable too), after the next leader is chosen (the next batch is gathered and written
meanwhile) and before any caller of the batch is answered; batches' calls run one at a time, in
commit order. One call per transaction, so work that follows every append (the inline
projection) is done once per batch rather than once per append. It must not raise: an
exception is logged, and the batch is answered as committed. A follower whose time runs out
while the hook runs is answered then, with its result: its append is committed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, TypedDict, TypeVar
from urllib.parse import unquote

from eventbank.domain.errors import EventbankError, InvalidInput
from eventbank.ports.event_store import StoreUnavailable

C = TypeVar("C")  # the engine's connection
log = logging.getLogger(__name__)

DEFAULT_MAX = 128
DEFAULT_WAIT_MS = 1.0
LIMIT_MAX = 1_000
LIMIT_WAIT_MS = 1_000.0
DEFAULT_FOLLOWER_TIMEOUT_S = 10.0

# Where a waiter is; it changes only under the mutex. queued -> taken (into a batch) ->
# answered; or queued -> withdrawn, taken -> abandoned (its follower gave up).
_QUEUED, _TAKEN, _ANSWERED, _WITHDRAWN, _ABANDONED = (
    "queued", "taken", "answered", "withdrawn", "abandoned",
)  # fmt: skip


class _Waiter:
    """One caller's queued append and, once its batch is done, its answer."""

    __slots__ = ("item", "signal", "leads", "state", "due", "result", "error")

    def __init__(self, item: object, due: float) -> None:
        self.item = item
        self.signal = threading.Lock()
        self.signal.acquire()  # released once: when answered, or when told to lead
        self.leads = False
        self.state = _QUEUED
        self.due = due  # a follower gives up then (time.monotonic())
        self.result: object = None
        self.error: BaseException | None = None


# write_many(conn, items): for each item, in order, its result or its own refusal.
WriteMany = Callable[[C, list[Any]], list[Any]]


class GroupCommit(Generic[C]):
    """Runs appends from many threads in shared transactions (see the module docstring).

    ``transaction()`` opens one engine transaction and commits it on a clean exit; its
    connection must take SQL savepoints. ``write_many(conn, items)`` writes items inside it and
    returns, per item, its result or the ``EventbankError`` refusing it; it raises an
    ``EventbankError`` if the engine refused what it wrote. ``transactions`` and ``appends``
    count committed transactions and the appends acknowledged by them; ``in_flight`` is how
    many appends are queued or being written right now. A follower gives up after
    ``follower_timeout_s`` (module docstring).
    """

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[C]],
        write_many: WriteMany,
        *,
        max_batch: int = DEFAULT_MAX,
        max_wait_ms: float = DEFAULT_WAIT_MS,
        follower_timeout_s: float = DEFAULT_FOLLOWER_TIMEOUT_S,
    ):
        if type(max_batch) is not int or not 1 <= max_batch <= LIMIT_MAX:
            raise InvalidInput(f"group_commit_max must be an integer from 1 to {LIMIT_MAX}")
        if not isinstance(max_wait_ms, int | float) or not 0 <= max_wait_ms <= LIMIT_WAIT_MS:
            raise InvalidInput(f"group_commit_wait_ms must be from 0 to {LIMIT_WAIT_MS:g}")
        if not isinstance(follower_timeout_s, int | float) or not follower_timeout_s > 0:
            raise InvalidInput("follower_timeout_s must be a number of seconds above 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.follower_timeout_s = follower_timeout_s
        self._transaction = transaction
        self._write_many = write_many
        self._mutex = threading.Lock()
        self._arrived = threading.Condition(self._mutex)
        self._queue: list[_Waiter] = []
        self._leading = False  # a leader is collecting or writing a batch
        self._company = 1  # size of the previous batch: how many callers a leader waits for
        self.transactions = 0
        self.appends = 0
        self.in_flight = 0
        # Sees each committed batch's results before its callers are answered (module docstring).
        self.after_commit: Callable[[list[Any]], None] | None = None
        self._hook_turn = threading.Condition(threading.Lock())  # hooks run in commit order
        self._hooks_begun = self._hooks_done = 0

    def submit(self, item: object) -> Callable[[], Any]:
        """Queue ``item`` and return the call that waits for its answer: its result once
        committed, or its refusal (or the failure of the transaction) raised. Items are
        written in the order submitted, so a caller may submit, let another thread submit an
        item that builds on it, and only then wait. The caller must make that call, and soon:
        if it was chosen to lead the next batch, the queue waits for it."""
        mine = _Waiter(item, time.monotonic() + self.follower_timeout_s)
        with self._mutex:
            self._queue.append(mine)
            self.in_flight += 1
            if not self._leading:
                self._leading = mine.leads = True
            elif len(self._queue) >= self._company:
                self._arrived.notify()
        return functools.partial(self._answer, mine)

    def _answer(self, mine: _Waiter) -> Any:
        # A follower waits until answered, or promoted to lead the next batch, or out of time.
        out_of_time = not mine.leads and not mine.signal.acquire(
            timeout=max(0.0, mine.due - time.monotonic())
        )
        if out_of_time:
            self._give_up(mine)
        if mine.leads:
            self._lead()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _give_up(self, mine: _Waiter) -> None:
        """A follower out of time: raise ``StoreUnavailable``, after taking its append out of
        the queue if no leader has taken it yet, or abandoning it if one is writing it; return
        if it was promoted or answered meanwhile (module docstring)."""
        with self._mutex:
            if mine.leads or mine.state == _ANSWERED:
                return
            if mine.state == _QUEUED:
                self._queue.remove(mine)
                self.in_flight -= 1
                mine.state = _WITHDRAWN
                raise StoreUnavailable(
                    f"no group-commit transaction took this append within "
                    f"{self.follower_timeout_s:g} s; it was taken out of the queue, nothing was "
                    "written, and retrying the command is safe"
                )
            mine.state = _ABANDONED
        raise StoreUnavailable(
            f"the group-commit transaction writing this append had not returned after "
            f"{self.follower_timeout_s:g} s; its outcome is unknown, and retrying the command "
            "is safe"
        )

    def _lead(self) -> None:
        batch: list[_Waiter] = []  # filled by _write once its transaction is open
        committed = False
        hook, turn = None, 0
        try:
            committed = self._write(batch)
        finally:
            with self._mutex:
                if committed and self.after_commit is not None:
                    hook, turn = self.after_commit, self._hooks_begun
                    self._hooks_begun += 1
                self._company = len(batch)
                self.in_flight -= len(batch)
                answered = [waiter for waiter in batch if waiter.state == _TAKEN]
                for waiter in answered:  # not the abandoned: their callers are gone
                    waiter.state = _ANSWERED
                if committed:
                    self.transactions += 1
                    self.appends += sum(waiter.error is None for waiter in answered)
                if self._queue:
                    successor = self._queue[0]
                    successor.leads = True
                    successor.signal.release()
                else:
                    self._leading = False
            try:
                if hook is not None:
                    self._run_after_commit(hook, turn, batch)
            finally:
                for waiter in batch:
                    if not waiter.leads:
                        waiter.signal.release()

    def _run_after_commit(
        self, hook: Callable[[list[Any]], None], turn: int, batch: list[_Waiter]
    ) -> None:
        """Run the hook on a committed batch once the hooks of the batches committed before it
        have run: the next leader writes while this one runs the hook, and its hook waits."""
        with self._hook_turn:
            self._hook_turn.wait_for(lambda: self._hooks_done == turn)
        try:
            hook([waiter.result for waiter in batch if waiter.error is None])
        except Exception:  # noqa: BLE001 - the batch is committed whatever the hook does
            log.exception("after_commit failed; the batch it saw is committed")
        finally:
            with self._hook_turn:
                self._hooks_done += 1
                self._hook_turn.notify_all()

    def _gather(self, *, wait: bool = True) -> list[_Waiter]:
        """Take the next batch off the queue: up to ``max_batch`` callers, after waiting up to
        ``max_wait_s`` for as many as the previous batch had (with ``wait``)."""
        with self._mutex:
            company = min(self._company, self.max_batch)
            if wait and len(self._queue) < company and self.max_wait_s:
                self._arrived.wait_for(lambda: len(self._queue) >= company, self.max_wait_s)
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            for waiter in batch:
                waiter.state = _TAKEN
        return batch

    def _write(self, batch: list[_Waiter]) -> bool:
        """Write the next batch in one transaction (``_answers`` gathers it into ``batch``) and
        fill in every answer; True if it committed."""
        try:
            answers = self._answers(batch)
        except BaseException as exc:  # noqa: BLE001 - handed to the callers, raised there
            if not batch:  # the transaction failed before the batch was taken: it shares that
                batch += self._gather(wait=False)
            if len(batch) == 1:
                batch[0].error = exc
                return False
            shared = (
                f"the transaction this append shared failed ({exc}); it was rolled back or its "
                "outcome is unknown, and retrying the command is safe"
            )
            for waiter in batch:
                waiter.error = StoreUnavailable(shared)
            return False
        for waiter, answer in zip(batch, answers, strict=True):
            if isinstance(answer, BaseException):
                waiter.error = answer
            else:
                waiter.result = answer
        return True

    def _answers(self, batch: list[_Waiter]) -> list[Any]:
        """Open the transaction, gather the batch into ``batch`` and write it all in that
        transaction. The batch is gathered only once the transaction is open: opening it costs
        the engine a statement or two (PostgreSQL: BEGIN and the append lock, one round trip),
        during which the next callers get on with deciding, and the wait for company overlaps
        them. (The engine's write lock is then held up to ``max_wait_s`` longer; writers in
        other processes wait that much more.)

        If the engine refuses the writes, the transaction is rolled back and the items written
        again in a new one, one by one, each under a savepoint, so that what it refused is the
        answer of the one item that caused it. (No savepoint on the first try: it cost two more
        statements in every batch for a refusal screening should have foreseen.) A lone item's
        refusal is its answer: its transaction is rolled back and nothing else was in it."""
        try:
            with self._transaction() as conn:
                batch += self._gather()
                try:
                    return self._write_many(conn, [waiter.item for waiter in batch])
                except EventbankError as exc:
                    if len(batch) == 1:
                        raise
                    raise _RefusedInBatch from exc  # out of the transaction: rolls it back
        except _RefusedInBatch:
            pass
        with self._transaction() as conn:
            answers = []
            for waiter in batch:
                try:
                    with _savepoint(conn):
                        answers += self._write_many(conn, [waiter.item])
                except EventbankError as exc:
                    answers.append(exc)
            return answers


class _RefusedInBatch(Exception):
    """The engine refused a batch's writes: roll back, then write its items one by one."""


@contextmanager
def _savepoint(conn: Any) -> Iterator[None]:
    """Writes inside a group transaction, undone alone if they raise. Should the engine have
    rolled back the whole transaction already (SQLite does on a full disk), ROLLBACK TO fails,
    and with it the batch: nothing written before it in the batch is acknowledged."""
    conn.execute("SAVEPOINT append")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO SAVEPOINT append")
        conn.execute("RELEASE SAVEPOINT append")
        raise
    conn.execute("RELEASE SAVEPOINT append")


class GroupCommitOptions(TypedDict, total=False):
    group_commit_max: int
    group_commit_wait_ms: float


def split_group_commit(url: str) -> tuple[str, GroupCommitOptions]:
    """``url`` without its group-commit query parameters, and those as engine keyword arguments.

    Other parameters are kept byte for byte (libpq reads PostgreSQL's); the values are checked
    by the engines' GroupCommit.
    """
    base, _, query = url.partition("?")
    kept, options = [], GroupCommitOptions()
    for piece in query.split("&") if query else []:
        key, _, text = piece.partition("=")
        value = unquote(text)
        try:
            if key == "group_commit_max":
                options["group_commit_max"] = int(value)
            elif key == "group_commit_wait_ms":
                options["group_commit_wait_ms"] = float(value)
            else:
                kept.append(piece)
        except ValueError:
            raise InvalidInput(f"{key} must be a number, not {value!r}") from None
    return (f"{base}?{'&'.join(kept)}" if kept else base), options
