"""The composition root: one place that turns store URLs into a ready service, queries and
projection runner, so the CLI and the HTTP service are wired identically."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from eventbank.application.observability import InstrumentedStore, Metrics
from eventbank.application.projections.runner import ProjectionRunner, Projector
from eventbank.application.queries import AccountQueries
from eventbank.application.service import LedgerService
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
    """Open both stores; with ``inline`` the service projects each append right after it lands;
    with ``metrics`` appends, commands and projection lag are measured. With ``create=False``
    the event store must exist (a missing SQLite file is ``NoSuchStore`` and nothing is
    created, read store included); the read store is made when missing either way, since it
    is rebuilt from the events."""
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
            projector.project(recorded)
        except Exception as exc:  # noqa: BLE001
            log.warning("inline projection failed (the runner will catch up): %s", exc)

    service = LedgerService(
        events, after_append=project_inline if inline else None, observer=metrics, channel=channel
    )
    runner = ProjectionRunner(projector)
    if metrics is not None:
        metrics.watch_projections(runner)
    return Ledger(events, reads, service, AccountQueries(reads, events), runner)
