"""The composition root: one place that turns store URLs into a ready service, queries and
projection runner, so the CLI and the HTTP service are wired identically."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from eventbank.application.observability import InstrumentedStore, Metrics
from eventbank.application.projections.runner import ProjectionRunner, Projector
from eventbank.application.queries import (
    AccountQueries,
    find_original,
    transfer_accounts,
    transfer_outcome,
)
from eventbank.application.service import LedgerService
from eventbank.engines.sql.group_commit import GroupCommit
from eventbank.engines.urls import default_read_store_url, open_read_store, open_store
from eventbank.ports.event_store import EventStore, RecordedEvent
from eventbank.ports.read_store import ReadStore

log = logging.getLogger(__name__)


@dataclass
class Ledger:
    events: EventStore
    reads: ReadStore
    service: LedgerService
    queries: AccountQueries
    runner: ProjectionRunner

    def close(self) -> None:
        self.reads.close()
        self.events.close()


def open_ledger(
    store_url: str,
    read_store_url: str | None = None,
    *,
    inline: bool = True,
    metrics: Metrics | None = None,
    channel: str = "unknown",
    create: bool = True,
) -> Ledger:
    """Open both stores; with ``inline`` each append is projected right after it lands, before
    its command is answered; with ``metrics`` appends, commands and projection lag are measured.
    With ``create=False`` the event store must exist (a missing SQLite file is ``NoSuchStore``
    and nothing is created, read store included); the read store is made when missing either
    way, since it is rebuilt from the events.

    Inline projection on an engine that group-commits (SQLite, PostgreSQL) is done by each
    batch's leader, once per batch (``GroupCommit.after_commit``): one read-store transaction
    for the whole batch instead of one per command, while the next batch is written. It covers
    every append of this store object (the payroll saga's and the audit's too: the projection
    skips what it does not handle). Elsewhere (DynamoDB) the service projects each command's
    events itself (``after_append``)."""
    events: EventStore = open_store(store_url, create=create)
    if metrics is not None:
        events = InstrumentedStore(events, metrics, engine=urlsplit(store_url).scheme)
    try:
        reads = open_read_store(read_store_url or default_read_store_url(store_url))
    except BaseException:
        events.close()
        raise
    projector = Projector(events, reads)

    def project_inline(recorded: list[RecordedEvent]) -> None:
        """Best effort: a projection problem never fails a command; the runner catches up."""
        try:
            projector.project_appended(recorded)
        except Exception as exc:  # noqa: BLE001
            log.warning("inline projection failed (the runner will catch up): %s", exc)

    def project_batch(results: list[list[RecordedEvent]]) -> None:
        """A group-commit batch's events, in one read-store transaction (which also moves the
        checkpoint when the batch is the feed's next: Projector.project_appended)."""
        try:
            projector.project_appended([event for recorded in results for event in recorded])
        except Exception as exc:  # noqa: BLE001
            log.warning("inline projection failed (the runner will catch up): %s", exc)

    after_append = project_inline if inline else None
    group = getattr(events, "group_commit", None)
    if inline and isinstance(group, GroupCommit):
        group.after_commit = project_batch
        after_append = None
    service = LedgerService(
        events, after_append=after_append, observer=metrics, channel=channel,
        locate_transfer=functools.partial(transfer_accounts, reads, events),
        transfer_outcome=functools.partial(transfer_outcome, reads),
        find_original=functools.partial(find_original, reads, events),
    )  # fmt: skip
    runner = ProjectionRunner(projector)
    if metrics is not None:
        metrics.watch_projections(runner)
    return Ledger(events, reads, service, AccountQueries(reads, events), runner)
