"""An event store that costs nothing: a process's memory, no I/O, nothing durable.

Not an engine and never one to keep money in: the benchmark runs eventbank's command path on it
to learn what that path costs on its own (bench/command_floor.py). It still keeps the contract's
checks that the command path relies on (expected versions, a command id recorded once), since
a store without them would let the path skip work it does on every real engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eventbank.ports.event_store import (
    CommandRecord,
    Commands,
    ConcurrencyConflict,
    DuplicateCommand,
    NewEvent,
    RecordedEvent,
    Snapshot,
    command_records,
    recorded,
)


class FreeStore:
    """The EventStore contract in memory, one thread at a time."""

    def __init__(self) -> None:
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._commands: dict[str, CommandRecord] = {}
        self._feed: list[RecordedEvent] = []
        self._snapshots: dict[str, Snapshot] = {}

    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
    ) -> list[RecordedEvent]:
        stale = [sid for sid, version in expected_versions.items()
                 if len(self._streams.get(sid, ())) != version]  # fmt: skip
        if stale:
            raise ConcurrencyConflict(stale)
        records = command_records(command)
        for record in records:
            if record.command_id in self._commands:
                raise DuplicateCommand(record.command_id)
        written = [recorded(event, len(self._feed) + n) for n, event in enumerate(events, 1)]
        for event in written:
            self._streams.setdefault(event.aggregate_id, []).append(event)
        self._feed += written
        self._commands.update((record.command_id, record) for record in records)
        return written

    def find_command(self, command_id: str) -> CommandRecord | None:
        return self._commands.get(command_id)

    def read_stream(
        self,
        aggregate_id: str,
        after_version: int = 0,
        *,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        events = self._streams.get(aggregate_id, [])[after_version:]
        if backwards:
            events = events[::-1]
        return events if limit is None else events[:limit]

    def read_streams(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        found = {sid: self.read_stream(sid, version) for sid, version in after_versions.items()}
        return {sid: events for sid, events in found.items() if events}

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        return self._feed[after_position : after_position + limit]

    def stream_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        return sorted(sid for sid in self._streams if sid > after)[:limit]

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self._snapshots[snapshot.aggregate_id] = snapshot

    def load_snapshot(self, aggregate_id: str, max_version: int | None = None) -> Snapshot | None:
        snapshot = self._snapshots.get(aggregate_id)
        if snapshot is None or (max_version is not None and snapshot.version > max_version):
            return None
        return snapshot

    def load_snapshots(self, aggregate_ids: Sequence[str]) -> dict[str, Snapshot]:
        return {sid: self._snapshots[sid] for sid in aggregate_ids if sid in self._snapshots}

    def last_position(self) -> int | None:
        return len(self._feed)

    def close(self) -> None:
        """Nothing to release."""
