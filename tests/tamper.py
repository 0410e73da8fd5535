"""Direct, behind-the-ledger edits of stored events, per engine: what an attacker or a bad
migration could do. Used by the audit tests to prove each kind of tampering is caught."""

from __future__ import annotations

import dataclasses
from urllib.parse import urlsplit

import psycopg

from eventbank.domain.canonical import canonical_json
from eventbank.engines.urls import sqlite_path
from eventbank.ports.event_store import EventStore, RecordedEvent


class Tamperer:
    """Deletes and writes raw event rows, bypassing every check the engines make."""

    def __init__(self, store_url: str, store: EventStore):
        self.url, self.store = store_url, store
        self.scheme = urlsplit(store_url).scheme

    def delete(self, stream: str, version: int) -> None:
        if self.scheme == "dynamodb":
            self.store._ddb.delete_item(
                TableName=self.store.table,
                Key={"PK": {"S": stream}, "SK": {"N": str(version)}},
            )
        else:
            self._sql("DELETE FROM events WHERE aggregate_id = ? AND version = ?", stream, version)

    def write(self, event: RecordedEvent) -> None:
        if self.scheme == "dynamodb":
            from eventbank.engines.dynamodb.event_store import _event_attributes

            item = {"PK": {"S": event.aggregate_id}, "SK": {"N": str(event.version)},
                    **_event_attributes(event)}  # fmt: skip
            self.store._ddb.put_item(TableName=self.store.table, Item=item)
        else:
            self._sql(
                "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type,"
                " schema_version, data, metadata, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                event.event_id, event.aggregate_id, event.aggregate_type, event.version,
                event.event_type, event.schema_version, canonical_json(event.data),
                canonical_json(event.metadata), event.hash,
            )  # fmt: skip

    def rewrite(self, event: RecordedEvent, **changes) -> RecordedEvent:
        """Replace the stored event with a changed copy (same id and version unless changed)."""
        self.delete(event.aggregate_id, event.version)
        changed = dataclasses.replace(event, **changes)
        self.write(changed)
        return changed

    def _sql(self, statement: str, *params) -> None:
        if self.scheme == "sqlite":
            import sqlite3

            with sqlite3.connect(sqlite_path(self.url)) as conn:
                conn.execute(statement, params)
            return
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement.replace("?", "%s"), params)
