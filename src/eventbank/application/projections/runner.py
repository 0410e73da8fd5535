"""Following the event feed into read models: exactly once, in stream order, never dropping.

- ``Projector.project(events, checkpoint)`` turns a batch into changes. Per stream, an event at or
  below the row's version is a duplicate and skipped; one beyond the next version means a gap,
  and the missing events are fetched from the stream first. Changes and the checkpoint are
  committed together by the read store, so a crash anywhere re-delivers at most a batch, which
  the version guard then skips.
- A handler that raises *parks* its stream: the failure is recorded (before the checkpoint moves
  past it) with the version it stopped at, later events of that stream wait, every other stream
  goes on. Parked streams are retried with capped exponential backoff until they succeed; a
  parked failure is visible in ``status()`` and never silently dropped.
- ``ProjectionRunner`` is the background loop (``eventbank projections run``); the same
  ``Projector`` serves inline projection right after a command's append
  (``project_appended``), which also moves the checkpoint when what it projects continues it
  without a gap, so the runner does not read the feed again for events already projected.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from eventbank.application.projections import accounts
from eventbank.application.projections.written_rows import WrittenRows
from eventbank.ports.event_store import EventStore, RecordedEvent
from eventbank.ports.read_store import BalanceRow, Change, Failure, ReadStore

log = logging.getLogger(__name__)

STATUS_WINDOW = 250  # events status() reads at most at each end of the lag (see status())

Handler = Callable[[BalanceRow | None, RecordedEvent], Change]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Projector:
    def __init__(
        self,
        events: EventStore,
        reads: ReadStore,
        *,
        handler: Handler = accounts.project,
        name: str = accounts.NAME,
        clock: Callable[[], datetime] = _utcnow,
        retry_base_s: float = 1.0,
        retry_cap_s: float = 300.0,
    ):
        self.events, self.reads, self.handler, self.name = events, reads, handler, name
        self.clock = clock
        self.retry_base_s, self.retry_cap_s = retry_base_s, retry_cap_s
        # the rows inline projection wrote, which it folds on next instead of reading them
        self.written = WrittenRows()

    def project(
        self,
        batch: Sequence[RecordedEvent],
        checkpoint: int | None = None,
        *,
        only_from: int | None = None,
    ) -> int:
        """Apply ``batch`` (and move the checkpoint to ``checkpoint``, forward or, with
        ``only_from``, only from there: ReadStore.apply); returns changes written."""
        return len(self._project(batch, checkpoint, only_from, self._read_rows))

    def _project(
        self,
        batch: Sequence[RecordedEvent],
        checkpoint: int | None,
        only_from: int | None,
        read_rows: Callable[[Mapping[str, int]], dict[str, BalanceRow]],
    ) -> list[Change]:
        """``project``, folding on the rows ``read_rows`` gives (asked with the version of
        each stream's first event in the batch); returns the changes written."""
        relevant = [e for e in batch if accounts.handles(e)]
        firsts: dict[str, int] = {}
        for event in relevant:
            firsts[event.aggregate_id] = min(
                event.version, firsts.get(event.aggregate_id, event.version)
            )
        rows = read_rows(firsts)
        # The parked streams are read only when a batch needs them: the event that parked a
        # stream was never applied, so every later one of that stream is past its row (a
        # gap), and a batch with no gap and no failure costs no read of them. The parked event
        # itself, delivered again (the runner re-reading what inline projection saw), is
        # folded again: failing, it stays parked as it was; passing, the row moves on, and
        # the stream's retry then finds nothing to fold and clears its failure.
        parked: set[str] | None = None
        changes: list[Change] = []
        for event in relevant:
            stream = event.aggregate_id
            row = rows.get(stream)
            current = row.version if row else 0
            if event.version <= current:
                continue  # delivered twice
            pending = [event]
            if event.version > current + 1:  # a gap: parked, or fetch what is missing, in order
                parked = self._parked() if parked is None else parked
                if stream in parked:
                    continue  # waits for its retry, which reads the stream from where it stopped
                pending = [
                    e
                    for e in self.events.read_stream(stream, current)
                    if e.version <= event.version
                ]
            fresh, failure = self._fold(row, pending)
            changes.extend(fresh)
            if fresh:
                rows[stream] = fresh[-1].row
            if failure is not None:
                parked = self._parked() if parked is None else parked
                if stream not in parked:  # else this was its parked event again: left to retry
                    self._park(stream, failure[0], failure[1], previous=None)
                    parked.add(stream)
        self.reads.apply(self.name, changes, checkpoint, only_from=only_from)
        return changes

    def project_appended(self, batch: Sequence[RecordedEvent]) -> int:
        """Project events this process has just appended (inline projection); returns changes
        written. When their positions follow the checkpoint with no gap (the batch holds every
        event from the checkpoint's next position to its last, as one group-commit batch does
        when it is the feed's next), the checkpoint moves to the last of them in the same
        transaction: every event up to it has then been delivered, exactly as when the runner
        reads them from the feed, and the runner does not read them again. Otherwise (another
        writer's or an earlier batch's events are not projected yet, or the engine's positions
        have gaps) the checkpoint stays, and the runner covers the range later. Whether the
        checkpoint is where the batch starts is asked in the read store's own transaction.

        It folds on the rows it wrote last where it has them (written_rows.py), and forgets
        them all if the read store refuses the batch."""
        checkpoint = only_from = None
        positions = [e.position for e in batch]
        if batch and all(type(p) is int for p in positions):
            numbered = cast("list[int]", positions)
            first, last = numbered[0], numbered[-1]
            if numbered == list(range(first, last + 1)):
                checkpoint, only_from = last, first - 1
        try:
            changes = self._project(
                batch,
                checkpoint,
                only_from,
                functools.partial(self.written.rows, read=self.reads.balances),
            )
        except BaseException:
            self.written.forget()
            raise
        self.written.remember(change.row for change in changes)
        return len(changes)

    def _read_rows(self, firsts: Mapping[str, int]) -> dict[str, BalanceRow]:
        return self.reads.balances(list(firsts))

    def _parked(self) -> set[str]:
        """The streams this projection has parked, waiting for their retry."""
        return {failure.aggregate_id for failure in self.reads.failures(self.name)}

    def retry_parked(self) -> int:
        """Retry every parked stream that is due; returns how many recovered."""
        recovered = 0
        now = self.clock().isoformat()
        for failure in self.reads.failures(self.name):
            if failure.next_attempt_at > now:
                continue
            row = self.reads.balance(failure.aggregate_id)
            pending = self.events.read_stream(failure.aggregate_id, row.version if row else 0)
            changes, still_failing = self._fold(row, pending)
            self.reads.apply(self.name, changes)
            if still_failing is None:
                self.reads.clear_failure(self.name, failure.aggregate_id)
                recovered += 1
            else:
                self._park(failure.aggregate_id, *still_failing, previous=failure)
        return recovered

    def _fold(
        self, row: BalanceRow | None, events: Sequence[RecordedEvent]
    ) -> tuple[list[Change], tuple[RecordedEvent, Exception] | None]:
        changes: list[Change] = []
        for event in events:
            try:
                change = self.handler(row, event)
            except Exception as exc:  # noqa: BLE001 - any handler bug parks only its stream
                return changes, (event, exc)
            changes.append(change)
            row = change.row
        return changes, None

    def _park(
        self, stream: str, event: RecordedEvent, exc: Exception, previous: Failure | None
    ) -> None:
        attempts = previous.attempts + 1 if previous else 1
        now = self.clock()
        delay_s = min(self.retry_cap_s, self.retry_base_s * 2 ** (attempts - 1))
        log.warning("projection %s parked %s at v%s: %s", self.name, stream, event.version, exc)
        self.reads.save_failure(
            Failure(
                projection=self.name,
                aggregate_id=stream,
                version=event.version,
                error=f"{type(exc).__name__}: {exc}"[:500],
                attempts=attempts,
                first_failed_at=previous.first_failed_at if previous else now.isoformat(),
                next_attempt_at=(now + timedelta(seconds=delay_s)).isoformat(),
            )
        )


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    name: str
    checkpoint: int
    lag_events: int  # among the events examined (status()); ``lag_capped``: a lower bound
    lag_capped: bool
    lag_seconds: float  # age of the oldest event not yet projected; 0 when caught up
    failures: list[Failure]
    last_error: str | None


class ProjectionRunner:
    """Polls the feed and projects it; survives errors by backing off, never by skipping."""

    def __init__(
        self,
        projector: Projector,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.2,
        error_backoff_cap_s: float = 30.0,
    ):
        self.projector = projector
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.error_backoff_cap_s = error_backoff_cap_s
        self.last_error: str | None = None

    def run_once(self) -> int:
        """Retry due parked streams, then project one batch; returns events read from the feed."""
        p = self.projector
        p.retry_parked()
        batch = p.events.read_all(p.reads.checkpoint(p.name), self.batch_size)
        if batch:
            p.project(batch, batch[-1].position)
        return len(batch)

    def run(self, stop: threading.Event, on_batch: Callable[[int], None] | None = None) -> None:
        """Loop until ``stop`` is set; a failing batch is retried with capped backoff."""
        errors = 0
        while not stop.is_set():
            try:
                handled = self.run_once()
                errors, self.last_error = 0, None
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("projection batch failed (attempt %s)", errors)
                stop.wait(min(self.error_backoff_cap_s, 0.1 * 2**errors))
                continue
            if on_batch is not None and handled:
                on_batch(handled)
            if handled < self.batch_size:
                stop.wait(self.poll_interval_s)

    def catch_up(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Project until the feed is exhausted; returns events read."""
        total = 0
        while handled := self.run_once():
            total += handled
            if on_batch is not None:
                on_batch(handled)
        return total

    def rebuild(self, on_batch: Callable[[int], None] | None = None) -> tuple[int, float]:
        """Drop the read models and replay the whole store; returns (events, seconds)."""
        started = time.perf_counter()
        self.projector.reads.reset(self.projector.name)
        self.projector.written.forget()  # rows ahead of the emptied read model
        total = self.catch_up(on_batch)
        return total, time.perf_counter() - started

    def status(self) -> ProjectionStatus:
        """Lag counts events past the checkpoint that no read-model row reflects yet (inline
        projection may apply events without moving the checkpoint: ``project_appended``).

        Bounded (``/readyz``, ``/metrics`` and ``/stats`` ask it every few seconds): a fixed
        number of store reads whatever the store's size, at most ``2 * STATUS_WINDOW`` events.
        Examined are the first ``STATUS_WINDOW`` events after the checkpoint (where the oldest
        unprojected event, hence ``lag_seconds``, is) and, where the store knows its last
        position (SQLite, PostgreSQL), the last ``STATUS_WINDOW`` before it (so events the
        inline projection missed recently show while the checkpoint is far behind). If events
        in between went unexamined, ``lag_capped`` says so: ``lag_events`` is then a lower
        bound. On DynamoDB only the first window is examined."""
        p = self.projector
        checkpoint = p.reads.checkpoint(p.name)
        behind = p.events.read_all(checkpoint, STATUS_WINDOW)
        capped = False
        if len(behind) == STATUS_WINDOW:
            seen = behind[-1].position or checkpoint
            last = p.events.last_position()
            if last is None:  # no global position to read back from
                capped = True
            elif last > seen:
                start = max(seen, last - STATUS_WINDOW)
                behind += p.events.read_all(start, STATUS_WINDOW)
                capped = start > seen
        rows = p.reads.balances([e.aggregate_id for e in behind if accounts.handles(e)])
        pending = [
            e
            for e in behind
            if accounts.handles(e)
            and e.version > (rows[e.aggregate_id].version if e.aggregate_id in rows else 0)
        ]
        lag_seconds = 0.0
        if pending and (recorded_at := pending[0].metadata.get("recorded_at")):
            age = p.clock() - datetime.fromisoformat(recorded_at)
            lag_seconds = max(0.0, age.total_seconds())
        return ProjectionStatus(
            name=p.name,
            checkpoint=checkpoint,
            lag_events=len(pending),
            lag_capped=capped,
            lag_seconds=round(lag_seconds, 3),
            failures=p.reads.failures(p.name),
            last_error=self.last_error,
        )
