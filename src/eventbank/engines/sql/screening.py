"""A batch of appends checked at once: what SQLite and PostgreSQL group commit write together.

Why: checking each append of a group-commit batch with statements of its own (and a savepoint)
costs several statements per append, and every statement hands the GIL to other threads and
waits to get it back. Instead the engine reads, in one statement and while it holds its write
lock, everything the batch's checks need (which command ids are known, each named stream's
head version and hash, which event ids are taken), ``screen`` decides every append in queue
order as if the ones it accepted before were already written, and the accepted ones are
inserted together.

Holding the write lock makes that read exact: nobody else can write between it and the
inserts. The unique constraints stay as the backstop; should one fire anyway (a trigger, a
constraint ``screen`` cannot foresee), the engine's error makes group commit retry the batch
one append at a time, each under its own savepoint (group_commit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventbank.domain.canonical import canonical_json
from eventbank.domain.errors import EventbankError, InvalidInput
from eventbank.engines.sql.group_commit import GroupCommit
from eventbank.ports.event_store import (
    CommandRecord,
    Commands,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    NewEvent,
    RecordedEvent,
    StoreError,
    check_append,
    command_records,
    encoded_payload,
    recorded,
)

# Rows per INSERT statement: well inside SQLite's 32,766 parameters (9,000 at most here).
ROWS_PER_INSERT = 1_000


@dataclass(frozen=True, slots=True)
class Append:
    """One caller's append, already validated in shape by ``check_append``.

    ``previous_hashes`` (optional) names, per stream, the hash its head must have as well as
    its version: an append decided on another append still in the queue must be refused if
    that one was, even should a third party's event have taken the version it expected.
    """

    events: Sequence[NewEvent]
    expected_versions: Mapping[str, int]
    command: Commands
    previous_hashes: Mapping[str, str] | None = None


Head = tuple[int, str]  # a stream's (version, hash of its last event); (0, GENESIS_HASH) if new


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the store must say before a batch can be screened (each list without repeats)."""

    command_ids: list[str]
    streams: list[str]
    event_ids: list[str]


class QueuedAppends:
    """``append`` and ``submit_append`` (contract.QueuesAppends) of an engine whose appends go
    through ``self.group_commit``; SQLite and PostgreSQL share them."""

    group_commit: GroupCommit

    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
    ) -> list[RecordedEvent]:
        return self.submit_append(events, expected_versions, command)()

    def submit_append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
        previous_hashes: Mapping[str, str] | None = None,
    ) -> Callable[[], list[RecordedEvent]]:
        check_append(events, expected_versions, command=command)
        if previous_hashes is not None and previous_hashes.keys() != expected_versions.keys():
            raise InvalidInput(
                "previous_hashes must name exactly the streams expected_versions does"
            )
        return self.group_commit.submit(Append(events, expected_versions, command, previous_hashes))


def wanted(appends: Sequence[Append]) -> Wanted:
    commands = {c.command_id: None for a in appends for c in command_records(a.command)}
    streams = {stream: None for a in appends for stream in a.expected_versions}
    ids = {event.event_id: None for a in appends for event in a.events}
    return Wanted(list(commands), list(streams), list(ids))


def screen(
    appends: Sequence[Append],
    known_commands: set[str],
    heads: Mapping[str, Head],
    taken_ids: set[str],
) -> list[EventbankError | None]:
    """Each append's refusal, or None where it may be written; in order, each append seeing
    the streams, command ids and event ids of those accepted before it."""
    heads, commands, ids = dict(heads), set(known_commands), set(taken_ids)
    verdicts: list[EventbankError | None] = []
    for append in appends:
        verdict = _verdict(append, commands, heads, ids)
        verdicts.append(verdict)
        if verdict is None:
            commands.update(c.command_id for c in command_records(append.command))
            for event in append.events:
                heads[event.aggregate_id] = (event.version, event.hash)
                ids.add(event.event_id)
    return verdicts


def _verdict(
    append: Append, commands: set[str], heads: Mapping[str, Head], ids: set[str]
) -> EventbankError | None:
    if known := [c.command_id for c in command_records(append.command) if c.command_id in commands]:
        return DuplicateCommand(known[0])
    expected, hashes = append.expected_versions, append.previous_hashes
    if stale := [
        stream
        for stream, version in expected.items()
        if heads[stream][0] != version
        or (hashes is not None and heads[stream][1] != hashes[stream])
    ]:
        return ConcurrencyConflict(stale)
    if taken := [event.event_id for event in append.events if event.event_id in ids]:
        return DuplicateEvent(taken)
    return None


def _accepted_events(
    appends: Sequence[Append], verdicts: Sequence[EventbankError | None]
) -> list[NewEvent]:
    return [e for a, v in zip(appends, verdicts, strict=True) if v is None for e in a.events]


def _accepted_commands(
    appends: Sequence[Append], verdicts: Sequence[EventbankError | None]
) -> list[CommandRecord]:
    return [
        c
        for a, v in zip(appends, verdicts, strict=True)
        if v is None
        for c in command_records(a.command)
    ]


def _chunks(rows: Sequence, size: int = ROWS_PER_INSERT) -> Iterator[Sequence]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def event_rows(events: Sequence[NewEvent]) -> list[tuple]:
    """Each event's column values in ``EVENT_COLUMNS`` order, its payloads as the canonical JSON
    text the chain hash covers (what every engine stores)."""
    return [
        (event.event_id, event.aggregate_id, event.aggregate_type, event.version,
         event.event_type, event.schema_version, *encoded_payload(event), event.hash)
        for event in events
    ]  # fmt: skip


def command_rows(commands: Sequence[CommandRecord]) -> list[tuple[str, str, str]]:
    """Each command record's values in ``COMMAND_COLUMNS`` order, its outcome as canonical JSON."""
    return [(c.command_id, c.fingerprint, canonical_json(c.outcome)) for c in commands]


EVENT_COLUMNS = (
    "event_id", "aggregate_id", "aggregate_type", "version", "event_type", "schema_version",
    "data", "metadata", "hash",
)  # fmt: skip
COMMAND_COLUMNS = ("command_id", "fingerprint", "outcome")
STORED_EVENT_COLUMNS = ", ".join((*EVENT_COLUMNS[:-1], "position", "hash"))
"""What a read selects: the inserted columns and the position the engine gave the event."""


def _answers(
    appends: Sequence[Append],
    verdicts: Sequence[EventbankError | None],
    position_of: Mapping[str, int],
) -> list[list[RecordedEvent] | EventbankError]:
    """Each append's recorded events (with the positions the engine gave them) or refusal."""
    return [
        verdict
        if verdict is not None
        else [recorded(event, position_of[event.event_id]) for event in append.events]
        for append, verdict in zip(appends, verdicts, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL engines that screen batches.

    ``read_state(conn, wanted)`` answers, in one statement: the known command ids, each stream's
    ``Head``, the taken event ids. ``insert_events(conn, events)`` inserts at most
    ``ROWS_PER_INSERT`` events in the order given and returns their positions in that order;
    ``insert_commands(conn, commands)`` inserts at most ``ROWS_PER_INSERT`` command records.
    ``constraint(exc)`` names the unique constraint an ``integrity_error`` broke:
    ``event_id``, ``stream_version``, ``command_id`` or None.
    """

    name: str
    read_state: Callable[[Any, Wanted], tuple[set[str], Mapping[str, Head], set[str]]]
    insert_events: Callable[[Any, Sequence[NewEvent]], list[int]]
    insert_commands: Callable[[Any, Sequence[CommandRecord]], None]
    integrity_error: type[Exception]
    constraint: Callable[[Exception], str | None]


def write_appends(
    conn: Any, appends: Sequence[Append], dialect: Dialect
) -> list[list[RecordedEvent] | EventbankError]:
    """Screen and write a batch inside the caller's transaction, which holds the engine's write
    lock: one statement for the checks, one per 1,000 events and commands, whatever the size."""
    verdicts = screen(appends, *dialect.read_state(conn, wanted(appends)))
    events = _accepted_events(appends, verdicts)
    positions: list[int] = []
    try:
        for rows in _chunks(events):
            positions += dialect.insert_events(conn, rows)
        for records in _chunks(_accepted_commands(appends, verdicts)):
            dialect.insert_commands(conn, records)
    except dialect.integrity_error as exc:
        raise _explained(exc, appends, dialect) from None
    # Rows are inserted in the order listed, so positions must follow it; never trust blindly.
    if positions != sorted(positions):
        raise StoreError(f"{dialect.name} numbered a batch's events out of order: {positions[:20]}")
    position_of = {
        event.event_id: position for event, position in zip(events, positions, strict=True)
    }
    return _answers(appends, verdicts, position_of)


def _explained(exc: Exception, appends: Sequence[Append], dialect: Dialect) -> Exception:
    """A broken constraint (the backstop behind screening) as a contract error; exact for a
    lone append, which is how group commit retries a batch that met one."""
    if len(appends) == 1:
        (append,) = appends
        constraint = dialect.constraint(exc)
        if constraint == "event_id":
            return DuplicateEvent([event.event_id for event in append.events])
        if constraint == "stream_version":
            return ConcurrencyConflict(list(append.expected_versions))
        if constraint == "command_id" and (records := command_records(append.command)):
            return DuplicateCommand(records[0].command_id)  # the engine does not say which
    return StoreError(f"{dialect.name} refused the append: {exc}")
