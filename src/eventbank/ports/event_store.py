"""The event-store port: what every engine (SQLite, PostgreSQL, DynamoDB) promises.

- ``append(events, expected_versions, command)`` is atomic across streams. Every stream named
  in ``expected_versions`` must be at exactly that version (0 = must not exist) or nothing is
  written and ``ConcurrencyConflict`` names the streams. A known ``event_id`` raises
  ``DuplicateEvent``; a known command id raises ``DuplicateCommand``. The command record
  (id, parameter fingerprint, outcome) is written in the same atomic write as the events, so a
  retried command is recognised and answered with its first outcome. An append may carry
  several command records (an atomic batch of transfers: each item keeps its own key); they
  land together with the events, or none does, and one known id refuses them all.
- ``read_stream(id, after_version, *, limit=None, backwards=False)`` returns a stream's events
  with versions above ``after_version``, oldest first, or newest first with ``backwards``; at
  most ``limit`` of them (None: all, for folding a whole stream). ``limit=1, backwards=True``
  is the head (``stream_head``), one event whatever the stream's length.
- ``read_streams({id: after_version, …})`` is ``read_stream`` for several streams in one read
  where the engine can (at most ``MAX_STREAMS_PER_READ``): each stream's events above its
  version, oldest first; a stream with none is left out of the answer.
- ``read_all`` returns the global feed in position order, where the engine has one.
- ``stream_ids(after, limit)`` lists every stream that holds events, from the store itself
  (never from the feed, which DynamoDB keeps for 24 hours only): each id once, in an order of
  the engine's own that never changes, at most ``limit`` ids after ``after`` ("" = from the
  start). Page with the last id returned; a stream created meanwhile may or may not appear.
- Snapshots are a cache of folded state, never a source of truth. ``save_snapshot`` keeps
  every snapshot (one per stream and version; saving one again at a version replaces it only
  with a newer state schema), so a stream's past can be folded from the snapshot nearest below
  it: ``load_snapshot(id, max_version)`` returns the newest at or below ``max_version``, one
  indexed read (``None``: the newest of all, as a command folding the present needs).

``check_append`` is the one place the shape of an append is validated, so every engine
refuses the same malformed requests with the same messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

from eventbank.domain.canonical import canonical_json
from eventbank.domain.errors import Conflict, EventbankError, InvalidInput

MAX_EVENTS_PER_APPEND = 1_000
MAX_READ_LIMIT = 10_000
MAX_STREAMS_PER_READ = 1_000


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: the envelope (docs/architecture.md) without the fields the
    store assigns."""

    event_id: str
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    hash: str = ""  # chain_hash(previous event's hash, this event); see chain_hash
    # The canonical JSON of (data, metadata), filled in by ``chained``: engines store the very
    # text the hash covers, and no payload is encoded twice (see encoded_payload).
    encoded: tuple[str, str] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored; ``position`` is the global order where the engine has one."""

    event_id: str
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    schema_version: int
    data: Mapping[str, Any]
    metadata: Mapping[str, Any]
    position: int | None
    hash: str


def recorded(event: NewEvent, position: int | None) -> RecordedEvent:
    """The RecordedEvent an engine returns for ``event`` once stored at ``position``."""
    return RecordedEvent(
        event.event_id, event.aggregate_id, event.aggregate_type, event.version,
        event.event_type, event.schema_version, event.data, event.metadata, position, event.hash,
    )  # fmt: skip


# The audit chain: each event's hash covers the previous event's hash in its stream and the
# event's own canonical JSON, so rewriting, removing or reordering any stored event breaks every
# hash after it. Version 1 chains from GENESIS_HASH.
GENESIS_HASH = "0" * 64


def chain_hash(previous_hash: str, event: NewEvent | RecordedEvent) -> str:
    """sha256 of the previous hash, a newline, and the canonical JSON of the event's envelope:
    ``{"aggregate_id", "aggregate_type", "data", "event_id", "event_type", "metadata",
    "schema_version", "version"}``. The object is written out here in its canonical key order
    around the payload's own canonical JSON, byte for byte what encoding the whole envelope
    gives (tests/test_hash_chain.py checks that), so the payload is encoded once."""
    return _chain_hash(previous_hash, event, *encoded_payload(event))


def _chain_hash(
    previous_hash: str, event: NewEvent | RecordedEvent, data: str, metadata: str
) -> str:
    text = canonical_json
    body = (
        f'{{"aggregate_id":{text(event.aggregate_id)},'
        f'"aggregate_type":{text(event.aggregate_type)},"data":{data},'
        f'"event_id":{text(event.event_id)},"event_type":{text(event.event_type)},'
        f'"metadata":{metadata},"schema_version":{_integer(event.schema_version)},'
        f'"version":{_integer(event.version)}}}'
    )
    return hashlib.sha256(f"{previous_hash}\n{body}".encode()).hexdigest()


def _integer(value: object) -> str:
    """An int's JSON is its repr (the encoder's own rule); anything else, say a bool, as JSON."""
    return int.__repr__(value) if type(value) is int else canonical_json(value)


def encoded_payload(event: NewEvent | RecordedEvent) -> tuple[str, str]:
    """The canonical JSON of the event's data and metadata: as ``chained`` left it on a new
    event, else encoded now."""
    done = getattr(event, "encoded", None)
    if done is not None:
        return done
    return canonical_json(event.data), canonical_json(event.metadata)


def chained(events: Sequence[NewEvent], previous_hashes: Mapping[str, str]) -> list[NewEvent]:
    """``events`` with their chain hashes (and payloads' canonical JSON) filled in, given each
    stream's current head hash."""
    heads = dict(previous_hashes)
    out = []
    for e in events:
        fields = (e.event_id, e.aggregate_id, e.aggregate_type, e.version, e.event_type,
                  e.schema_version, e.data, e.metadata)  # fmt: skip
        encoded = canonical_json(e.data), canonical_json(e.metadata)
        digest = _chain_hash(heads.get(e.aggregate_id, GENESIS_HASH), e, *encoded)
        heads[e.aggregate_id] = digest
        out.append(NewEvent(*fields, digest, encoded))
    return out


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """A handled command: its id, a fingerprint of its parameters, and the outcome to replay."""

    command_id: str
    fingerprint: str
    outcome: Mapping[str, Any]


Commands = CommandRecord | Sequence[CommandRecord] | None
"""What an append records: no command, one, or several (each with its own id), all in the
append's one atomic write."""


def command_records(command: Commands) -> tuple[CommandRecord, ...]:
    """The command records an append carries, as a tuple (see ``Commands``)."""
    if command is None:
        return ()
    if isinstance(command, CommandRecord):
        return (command,)
    return tuple(command)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Folded state of one stream at ``version``, tagged with the state's schema version."""

    aggregate_id: str
    aggregate_type: str
    version: int
    state_schema_version: int
    state: Mapping[str, Any]


class StoreError(EventbankError):
    code = "store_error"


class SchemaTooNew(StoreError):
    """The database was migrated by a newer eventbank; refusing beats misreading it."""

    code = "schema_too_new"


class StoreUnavailable(StoreError):
    """The store could not be reached or the write's fate is unknown; safe to retry the command."""

    code = "store_unavailable"


class ConcurrencyConflict(Conflict):
    code = "concurrency_conflict"

    def __init__(self, aggregate_ids: Sequence[str]):
        self.aggregate_ids = tuple(aggregate_ids)
        super().__init__(
            f"stream(s) {', '.join(self.aggregate_ids)} changed concurrently; re-read and retry"
        )


class DuplicateEvent(Conflict):
    code = "duplicate_event"

    def __init__(self, event_ids: Sequence[str]):
        self.event_ids = tuple(event_ids)
        super().__init__(f"event id(s) already stored: {', '.join(self.event_ids)}")


class DuplicateCommand(Conflict):
    code = "duplicate_command"

    def __init__(self, command_id: str):
        self.command_id = command_id
        super().__init__(f"command {command_id!r} was already handled")


class BatchTooLarge(InvalidInput):
    """More in one append (or one batch) than the limit. Where the engine counted it,
    ``needed`` and ``limit`` say how much the append took and may take, in the limit's own
    unit (events, or DynamoDB transaction items), so that work split in parts can tell how
    many parts fit (``fitting``)."""

    code = "batch_too_large"

    def __init__(self, message: str, *, needed: int | None = None, limit: int | None = None):
        super().__init__(message)
        self.needed, self.limit = needed, limit

    def fitting(self, parts: int) -> int:
        """How many of the ``parts`` that made this append to try next, each assumed to cost
        the same share: fewer than ``parts`` (at least 1), half where nothing was counted."""
        needed, limit = self.needed or 0, self.limit or 0
        scaled = parts * limit // needed if needed and limit else parts // 2
        return max(1, min(parts - 1, scaled))


class EventStore(Protocol):
    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
    ) -> list[RecordedEvent]: ...

    def find_command(self, command_id: str) -> CommandRecord | None: ...

    def read_stream(
        self,
        aggregate_id: str,
        after_version: int = 0,
        *,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]: ...

    def read_streams(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]: ...

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]: ...

    def stream_ids(self, after: str = "", limit: int = 1000) -> list[str]: ...

    def save_snapshot(self, snapshot: Snapshot) -> None: ...

    def load_snapshot(
        self, aggregate_id: str, max_version: int | None = None
    ) -> Snapshot | None: ...

    def load_snapshots(self, aggregate_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The newest snapshot of each of these streams that has one (at most
        ``MAX_STREAMS_PER_READ``): in one read where the engine can, as ``read_streams``."""
        ...

    def last_position(self) -> int | None:
        """The feed's newest position (0 when the store holds no event), one indexed read
        whatever the store's size; None where the engine has no global position (DynamoDB).
        Positions may skip numbers, so ``last - after`` bounds, not counts, the events after
        ``after``."""
        ...

    def close(self) -> None: ...


class QueuesAppends(EventStore, Protocol):
    """An engine that group-commits (SQLite, PostgreSQL) can also queue an append and answer
    later: ``submit_append`` returns the call that waits for what ``append`` would have
    returned (or raised). Appends are written in the order submitted, so a command may be
    decided on the outcome of one still queued; ``previous_hashes`` (each expected stream's
    head hash) then makes the store refuse it unless that one was written, whatever version a
    third party's event took meanwhile. The caller must make the returned call, promptly."""

    def submit_append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
        previous_hashes: Mapping[str, str] | None = None,
    ) -> Callable[[], list[RecordedEvent]]: ...


def queues_appends(store: object) -> TypeGuard[QueuesAppends]:
    """Whether ``store`` is a QueuesAppends. Asked of its class: a wrapper that delegates
    through ``__getattr__`` and intercepts ``append`` must not be bypassed by the
    ``submit_append`` it would hand through."""
    return hasattr(type(store), "submit_append")


def check_append(
    events: Sequence[NewEvent],
    expected_versions: Mapping[str, int],
    max_events: int = MAX_EVENTS_PER_APPEND,
    command: Commands = None,
) -> None:
    """Refuse a malformed append before any engine touches storage.

    Each event's stream must be named in ``expected_versions`` and the events of one stream
    must carry consecutive versions starting right after the expected one. The command
    records (at most one per event) must have distinct ids.
    """
    if not events:
        raise InvalidInput("an append needs at least one event")
    if len(events) > max_events:
        raise BatchTooLarge(
            f"{len(events)} events in one append; the limit is {max_events}. "
            "Split large batch work into a saga.",
            needed=len(events),
            limit=max_events,
        )
    records = command_records(command)
    if len(records) > len(events):
        raise InvalidInput(f"{len(records)} command records for {len(events)} events")
    if not all(isinstance(record, CommandRecord) for record in records):
        raise InvalidInput("a command must be a CommandRecord")
    if len(records) > 1 and len({record.command_id for record in records}) < len(records):
        raise InvalidInput("two command records in one append share a command id")
    for aggregate_id, version in expected_versions.items():
        if type(version) is not int or version < 0:
            raise InvalidInput(f"expected version of {aggregate_id!r} must be an integer >= 0")
    next_version = dict(expected_versions)
    seen_ids: set[str] = set()
    for event in events:
        if event.aggregate_id not in next_version:
            raise InvalidInput(f"stream {event.aggregate_id!r} has no expected version")
        next_version[event.aggregate_id] += 1
        if event.version != next_version[event.aggregate_id]:
            raise InvalidInput(
                f"event {event.event_id} has version {event.version} in {event.aggregate_id!r}; "
                f"expected {next_version[event.aggregate_id]}"
            )
        if event.event_id in seen_ids:
            raise DuplicateEvent([event.event_id])
        seen_ids.add(event.event_id)


def check_read_limit(limit: int) -> None:
    if type(limit) is not int or not 1 <= limit <= MAX_READ_LIMIT:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_READ_LIMIT}")


def check_stream_read(after_version: int, limit: int | None, backwards: bool) -> None:
    """Refuse a malformed ``read_stream`` before any engine touches storage."""
    if type(after_version) is not int or after_version < 0:
        raise InvalidInput("after_version must be an integer >= 0")
    if limit is not None:
        check_read_limit(limit)
    if type(backwards) is not bool:
        raise InvalidInput("backwards must be true or false")


def check_streams_read(after_versions: Mapping[str, int]) -> None:
    """Refuse a malformed ``read_streams`` before any engine touches storage."""
    if len(after_versions) > MAX_STREAMS_PER_READ:
        raise InvalidInput(f"at most {MAX_STREAMS_PER_READ} streams in one read")
    for aggregate_id, after_version in after_versions.items():
        if type(aggregate_id) is not str:
            raise InvalidInput("a stream id must be a string")
        check_stream_read(after_version, None, False)


def check_snapshots_read(aggregate_ids: Sequence[str]) -> None:
    """Refuse a malformed ``load_snapshots`` before any engine touches storage."""
    if len(aggregate_ids) > MAX_STREAMS_PER_READ:
        raise InvalidInput(f"at most {MAX_STREAMS_PER_READ} streams in one read")
    if any(type(aggregate_id) is not str for aggregate_id in aggregate_ids):
        raise InvalidInput("a stream id must be a string")


def by_stream(events: Iterable[RecordedEvent]) -> dict[str, list[RecordedEvent]]:
    """``read_streams``' answer from events in stream order."""
    streams: dict[str, list[RecordedEvent]] = {}
    for event in events:
        streams.setdefault(event.aggregate_id, []).append(event)
    return streams


def check_max_version(max_version: int | None) -> None:
    """Refuse a malformed ``load_snapshot`` bound before any engine touches storage."""
    if max_version is not None and (type(max_version) is not int or max_version < 0):
        raise InvalidInput("max_version must be an integer >= 0, or None for the newest")


def check_stream_ids(after: str, limit: int) -> None:
    """Refuse a malformed ``stream_ids`` before any engine touches storage."""
    if type(after) is not str:
        raise InvalidInput('after must be a stream id (a string; "" = from the start)')
    check_read_limit(limit)


def stream_head(store: EventStore, aggregate_id: str) -> RecordedEvent | None:
    """The stream's newest event (None for a stream with no events): one event read, whatever
    the stream's length."""
    newest = store.read_stream(aggregate_id, limit=1, backwards=True)
    return newest[0] if newest else None
