"""The DynamoDB engine: one table, one ``TransactWriteItems`` per append, a feed from Streams.

Table: ``PK`` (S) = aggregate id, ``SK`` (N) = version. ``SK = 0`` is never a version, so it
holds the bookkeeping items, each under a prefixed ``PK``: ``EVENT#<event id>`` (makes event ids
unique), ``CMD#<command id>`` (fingerprint + outcome: makes commands idempotent),
``SNAP#<aggregate id>`` (the newest snapshot) and ``META#stream-registry`` (says the registry is
complete). Negative ``SK`` hold the stream registry: one item per stream, put in the transaction
of the stream's first event, so ``stream_ids`` lists every stream from the table itself (the
feed keeps 24 hours only); see ``_registry_key``. They also hold the snapshot history: every
snapshot at ``PK = SNAP#<aggregate id>``, ``SK = -version``, beside the newest one at ``SK = 0``
(kept, so tables and processes from before the history read as they did); a ``SNAP#`` key is
never a stream (account ids have no ``#``), and no event read or feed record has ``SK <= 0``.

Every put in an append carries ``attribute_not_exists(PK)``, so two writers at one version can
never both land (a table keyed on ``EventId`` alone lets both land: docs/architecture.md). A
stream is gapless, since an append at ``expected + 1`` also checks that version ``expected``
exists; so "exactly at version N" means "N exists (if N > 0) and N + 1 does not". For a stream
with new events the put at N + 1 is the second half; a stream only named in
``expected_versions`` gets a ``ConditionCheck`` for it.
An append costs two items per event (event + guard), one per expected version > 0, one per
event-less stream, one per new stream (its registry item) and one per command record: more than 100
(DynamoDB's transaction limit) is refused with ``BatchTooLarge`` before anything is sent.

Retries: throttling, transaction conflicts, server errors and lost connections are retried with
full-jitter backoff within ``timeout_s``, then ``StoreUnavailable``. An append keeps one client
request token across retries whose fate is unknown (a lost response), so DynamoDB applies it at
most once; a cancelled attempt wrote nothing and takes a fresh token. The token is random per
call rather than a hash of the batch: within DynamoDB's 10-minute token window an identical
batch sent again by a later call would otherwise be acknowledged as done instead of refused.

The feed (``read_all``) reads the table's DynamoDB stream (``NEW_IMAGE``). An event's
``position`` is its stream record's sequence number, an integer that increases within a shard,
so no global counter is needed (one would serialise every append through one hot item). Limits:

- Shards are merged by sequence number. DynamoDB Local has one shard per table, where this is
  exact: every event once, in commit order. On AWS a busy table has several shards; a stream's
  events stay in one shard lineage (per-stream order holds), but sequence numbers of different
  shards are no global order, so a cursor can pass an event that a lagging shard publishes
  later. Projections survive that: they see the version gap and read the stream
  (``Projector.project``): per-stream reads stand in for a global order.
- On AWS, records reach the stream about a second after the write (DynamoDB Local publishes
  them before the write returns): the feed is eventually consistent; ``read_stream`` is not.
- Streams keep records for 24 hours. A consumer must keep up within that; a cursor older than
  the retained window raises ``StoreError`` rather than silently skipping, and ``read_all(0)``
  starts at the oldest retained record.
- ``position`` is ``None`` on events from ``append`` and ``read_stream``: it exists only once
  the stream has published the event.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any

from botocore.exceptions import ClientError

from eventbank.domain.canonical import canonical_json
from eventbank.domain.errors import InvalidInput
from eventbank.engines.dynamodb.table import TRANSIENT, DynamoTable, Retry
from eventbank.engines.dynamodb.table import error_code as _code
from eventbank.engines.dynamodb.table import number as _n
from eventbank.ports.event_store import (
    BatchTooLarge,
    CommandRecord,
    Commands,
    ConcurrencyConflict,
    DuplicateCommand,
    DuplicateEvent,
    NewEvent,
    RecordedEvent,
    Snapshot,
    StoreError,
    check_append,
    check_max_version,
    check_read_limit,
    check_snapshots_read,
    check_stream_ids,
    check_stream_read,
    check_streams_read,
    command_records,
    encoded_payload,
    recorded,
)

MAX_TRANSACTION_ITEMS = 100  # DynamoDB's TransactWriteItems limit
MAX_EVENTS_PER_APPEND = MAX_TRANSACTION_ITEMS // 2  # every event needs its EVENT# guard
STREAM_PAGE = 1000  # the GetRecords maximum
REGISTRY_SHARDS = 16  # registry partitions (PK STREAMS#0 … STREAMS#f): new streams spread over them
_REGISTRY_BITS = 120  # of the id's sha256: 37 digits, within a DynamoDB number's 38
_REGISTRY_COMPLETE = "META#stream-registry"
_WRITE_BATCH = 25  # the BatchWriteItem maximum
_KEY_SCHEMA = [{"AttributeName": "PK", "KeyType": "HASH"},
               {"AttributeName": "SK", "KeyType": "RANGE"}]  # fmt: skip
_ATTRIBUTES = [{"AttributeName": "PK", "AttributeType": "S"},
               {"AttributeName": "SK", "AttributeType": "N"}]  # fmt: skip


class DynamoEventStore(DynamoTable):
    """The EventStore contract on one DynamoDB table (see the module docstring)."""

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ):
        super().__init__(table, endpoint_url=endpoint_url, region=region, timeout_s=timeout_s)
        self._streams = self._client("dynamodbstreams")
        try:
            self._stream_arn = self._open_table()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        super().close()
        self._streams.close()

    # ------------------------------------------------------------ table

    def _open_table(self) -> str:
        """Create the table if missing (idempotent, race-safe), wait until ACTIVE, check it."""
        table, created = self._ensure_table(
            _KEY_SCHEMA, _ATTRIBUTES,
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )  # fmt: skip
        stream = table.get("StreamSpecification", {})
        if (
            table["KeySchema"] != _KEY_SCHEMA
            or sorted(table["AttributeDefinitions"], key=str) != sorted(_ATTRIBUTES, key=str)
            or stream.get("StreamViewType") not in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES")
        ):
            raise StoreError(
                f"table {self.table} is not an eventbank event table: it needs hash key PK (S), "
                "range key SK (N) and a NEW_IMAGE stream (see infra/terraform)"
            )
        self._registry_complete = False
        if created:
            self._mark_registry_complete()  # a new table has no stream the registry could miss
            # Durability beyond the write path; DynamoDB Local does not implement it.
            with suppress(ClientError):
                self._call(
                    self._ddb.update_continuous_backups, TableName=self.table,
                    PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
                    passthrough={"UnknownOperationException"},
                )  # fmt: skip
        return table["LatestStreamArn"]

    # ------------------------------------------------------------ writes

    def append(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands = None,
    ) -> list[RecordedEvent]:
        check_append(events, expected_versions, max_events=MAX_EVENTS_PER_APPEND, command=command)
        items, roles = self._transaction(events, expected_versions, command)
        if len(items) > MAX_TRANSACTION_ITEMS:
            raise BatchTooLarge(
                f"this append needs {len(items)} DynamoDB transaction items; the limit is "
                f"{MAX_TRANSACTION_ITEMS}. Split large batch work into a saga.",
                needed=len(items),
                limit=MAX_TRANSACTION_ITEMS,
            )
        token = uuid.uuid4().hex

        def attempt() -> None:
            nonlocal token
            try:
                self._ddb.transact_write_items(TransactItems=items, ClientRequestToken=token)
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if len(reasons) != len(roles):
                    raise StoreError(f"DynamoDB cancelled the append: {exc}") from None
                failed = [role for role, r in zip(roles, reasons, strict=True) if r != "None"]
                if "ConditionalCheckFailed" in reasons:
                    raise _refusal(failed, expected_versions) from None
                if not all(r in TRANSIENT for r in reasons if r != "None"):
                    raise StoreError(f"DynamoDB cancelled the append: {reasons}") from None
                token = uuid.uuid4().hex  # nothing was written: the next try is a new request
                raise Retry(f"append cancelled: {reasons}") from None

        self._retrying(attempt)
        return [recorded(e, None) for e in events]

    def _transaction(
        self,
        events: Sequence[NewEvent],
        expected_versions: Mapping[str, int],
        command: Commands,
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """The TransactItems, and beside each the (kind, id) that its failed condition means."""
        items: list[dict[str, Any]] = []
        roles: list[tuple[str, str]] = []

        def add(role: tuple[str, str], pk: str, sk: int, item: dict | None, exists=False) -> None:
            condition = "attribute_exists(PK)" if exists else "attribute_not_exists(PK)"
            key = {"PK": {"S": pk}, "SK": _n(sk)}
            body = {"Key": key} if item is None else {"Item": {**key, **item}}
            action = "ConditionCheck" if item is None else "Put"
            items.append({action: {"TableName": self.table, "ConditionExpression": condition,
                                   **body}})  # fmt: skip
            roles.append(role)

        written = {event.aggregate_id for event in events}
        for stream, expected in expected_versions.items():
            if expected > 0:
                add(("stream", stream), stream, expected, None, exists=True)
            if stream not in written:
                add(("stream", stream), stream, expected + 1, None)
            elif expected == 0:  # the stream's first event: register the stream with it
                items.append({"Put": {
                    "TableName": self.table, "Item": _registry_item(stream),
                    # A retried registration is the same item; another id is a hash collision.
                    "ConditionExpression": "attribute_not_exists(PK) OR aggregate_id = :stream",
                    "ExpressionAttributeValues": {":stream": {"S": stream}},
                }})  # fmt: skip
                roles.append(("stream", stream))
        for e in events:
            add(("stream", e.aggregate_id), e.aggregate_id, e.version, _event_attributes(e))
            guard = {"aggregate_id": {"S": e.aggregate_id}, "version": _n(e.version)}
            add(("event", e.event_id), f"EVENT#{e.event_id}", 0, guard)
        for record in command_records(command):
            attributes = {"fingerprint": {"S": record.fingerprint},
                          "outcome": {"S": canonical_json(record.outcome)}}  # fmt: skip
            add(("command", record.command_id), f"CMD#{record.command_id}", 0, attributes)
        return items, roles

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Two conditional puts: into the history at ``SK = -version`` (an equal one is replaced
        only by a newer state schema), then the newest at ``SK = 0`` (only an older one is
        replaced). A snapshot is a cache, so the two need no transaction."""
        history = _snapshot_item(snapshot, -snapshot.version)
        self._put_unless(history, "state_schema_version", snapshot.state_schema_version)
        self._put_unless(_snapshot_item(snapshot, 0), "version", snapshot.version)

    def _put_unless(self, item: dict[str, Any], attribute: str, value: int) -> None:
        """Put ``item`` unless the one stored under its key has ``attribute`` >= ``value``."""
        with suppress(ClientError):  # an equal or newer one is already stored
            self._call(
                self._ddb.put_item, TableName=self.table, Item=item,
                ConditionExpression="attribute_not_exists(PK) OR #attribute < :value",
                ExpressionAttributeNames={"#attribute": attribute},
                ExpressionAttributeValues={":value": _n(value)},
                passthrough={"ConditionalCheckFailedException"},
            )  # fmt: skip

    # ------------------------------------------------------------ reads

    def find_command(self, command_id: str) -> CommandRecord | None:
        item = self._get(f"CMD#{command_id}")
        if item is None:
            return None
        return CommandRecord(command_id, item["fingerprint"]["S"], json.loads(item["outcome"]["S"]))

    def load_snapshot(self, aggregate_id: str, max_version: int | None = None) -> Snapshot | None:
        """The newest at or below ``max_version`` (None: the newest, one GetItem). With a
        bound: the history's first item from ``SK = -max_version`` up (one Query of one item)
        and the newest item, whichever is newer within the bound; the newest covers a table
        written before the history was kept."""
        check_max_version(max_version)
        newest = self._get(f"SNAP#{aggregate_id}")
        found = [newest] if newest is not None else []
        if max_version is not None:
            found = [item for item in found if int(item["version"]["N"]) <= max_version]
        if max_version:  # 0: no version is that low
            found += self._call(
                self._ddb.query, TableName=self.table, Limit=1, ConsistentRead=True,
                KeyConditionExpression="PK = :pk AND SK BETWEEN :low AND :high",
                ExpressionAttributeValues={":pk": {"S": f"SNAP#{aggregate_id}"},
                                           ":low": _n(-max_version), ":high": _n(-1)},
            )["Items"]  # fmt: skip
        if not found:
            return None
        return _snapshot(max(found, key=lambda item: int(item["version"]["N"])))

    def load_snapshots(self, aggregate_ids: Sequence[str]) -> dict[str, Snapshot]:
        """The newest items, 100 keys to a BatchGetItem (``_get_items``)."""
        check_snapshots_read(aggregate_ids)
        keys = [{"PK": {"S": f"SNAP#{sid}"}, "SK": _n(0)} for sid in dict.fromkeys(aggregate_ids)]
        return {s.aggregate_id: s for s in map(_snapshot, self._get_items(keys))}

    def _get(self, pk: str) -> dict[str, Any] | None:
        key = {"PK": {"S": pk}, "SK": _n(0)}
        return self._call(
            self._ddb.get_item, TableName=self.table, Key=key, ConsistentRead=True
        ).get("Item")

    def read_stream(
        self,
        aggregate_id: str,
        after_version: int = 0,
        *,
        limit: int | None = None,
        backwards: bool = False,
    ) -> list[RecordedEvent]:
        """A consistent Query (newest first with ``ScanIndexForward=False``), paged until
        DynamoDB stops returning a ``LastEvaluatedKey`` or ``limit`` events are read."""
        check_stream_read(after_version, limit, backwards)
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "PK = :stream AND SK > :after",  # after >= 0: events only
            "ExpressionAttributeValues": {
                ":stream": {"S": aggregate_id},
                ":after": _n(after_version),
            },
            "ConsistentRead": True,
            "ScanIndexForward": not backwards,
        }
        events: list[RecordedEvent] = []
        while True:
            if limit is not None:
                query["Limit"] = limit - len(events)  # no filter: Limit counts events
            page = self._call(self._ddb.query, **query)
            events += [_recorded(item) for item in page["Items"]]
            if "LastEvaluatedKey" not in page or (limit is not None and len(events) >= limit):
                return events
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def read_streams(self, after_versions: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """A Query per stream (DynamoDB reads one partition at a time), several at once
        (``_each``)."""
        check_streams_read(after_versions)
        found = self._each(lambda sid: self.read_stream(sid, after_versions[sid]), after_versions)
        return {sid: events for sid, events in found.items() if events}

    def stream_ids(self, after: str = "", limit: int = 1000) -> list[str]:
        """Every stream, from the registry: consistent Queries of its partitions in turn, so the
        order is that of ``_registry_key`` (the ids' hashes), not of the ids. Never the feed."""
        check_stream_ids(after, limit)
        if not self._registry_complete:
            self._backfill_registry()
        first, low = (0, -(1 << _REGISTRY_BITS)) if after == "" else _registry_key(after)
        if after != "":
            low += 1  # after ``after`` itself
        ids: list[str] = []
        for shard in range(first, REGISTRY_SHARDS):
            if shard > first:
                low = -(1 << _REGISTRY_BITS)
            if low > -1:
                continue  # ``after`` was the last key of its partition
            query: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "PK = :shard AND SK BETWEEN :low AND :high",
                "ExpressionAttributeValues": {
                    ":shard": {"S": _registry_pk(shard)}, ":low": _n(low), ":high": _n(-1),
                },
                "ProjectionExpression": "aggregate_id",
                "ConsistentRead": True,
            }  # fmt: skip
            while len(ids) < limit:
                page = self._call(self._ddb.query, Limit=limit - len(ids), **query)
                ids += [item["aggregate_id"]["S"] for item in page["Items"]]
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            if len(ids) >= limit:
                break
        return ids

    def _backfill_registry(self) -> None:
        """A table written before the registry existed: register every stream that has an event
        (one Scan of the keys), then mark the registry complete. Idempotent; runs once per
        table, on the first ``stream_ids``. Writers of an older eventbank still running after
        it leave their new streams unregistered: upgrade every writer first."""
        if self._get(_REGISTRY_COMPLETE) is None:
            scan: dict[str, Any] = {
                "TableName": self.table, "ProjectionExpression": "PK",
                "FilterExpression": "SK > :zero", "ExpressionAttributeValues": {":zero": _n(0)},
                "ConsistentRead": True,
            }  # fmt: skip
            streams: set[str] = set()
            while True:
                page = self._call(self._ddb.scan, **scan)
                streams.update(item["PK"]["S"] for item in page["Items"])
                if "LastEvaluatedKey" not in page:
                    break
                scan["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            ordered = sorted(streams)
            for start in range(0, len(ordered), _WRITE_BATCH):
                self._put_items([_registry_item(s) for s in ordered[start : start + _WRITE_BATCH]])
            self._mark_registry_complete()
        self._registry_complete = True

    def _put_items(self, items: list[dict[str, Any]]) -> None:
        pending: Any = {self.table: [{"PutRequest": {"Item": item}} for item in items]}

        def attempt() -> None:
            nonlocal pending
            pending = self._ddb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
            if pending:
                raise Retry(f"{len(pending[self.table])} registry puts left unprocessed")

        self._retrying(attempt)

    def _mark_registry_complete(self) -> None:
        item = {"PK": {"S": _REGISTRY_COMPLETE}, "SK": _n(0)}
        self._call(self._ddb.put_item, TableName=self.table, Item=item)
        self._registry_complete = True

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Up to ``limit`` events after ``after_position``, merged from every shard in order."""
        check_read_limit(limit)
        if type(after_position) is not int or after_position < 0:
            raise InvalidInput("after_position must be an integer >= 0")
        events: list[RecordedEvent] = []
        request = {"StreamArn": self._stream_arn}
        while True:
            described = self._call(self._streams.describe_stream, **request)["StreamDescription"]
            for shard in described["Shards"]:
                end = shard["SequenceNumberRange"].get("EndingSequenceNumber")
                if end is None or int(end) > after_position:
                    events += self._read_shard(shard, after_position, limit)
            if "LastEvaluatedShardId" not in described:
                break
            request["ExclusiveStartShardId"] = described["LastEvaluatedShardId"]
        events.sort(key=lambda e: e.position or 0)
        # A shard cut off at ``limit`` events cannot let another shard's later record in first.
        return events[:limit]

    def last_position(self) -> int | None:
        """None: sequence numbers are per shard, and a stream has no cheap "newest record"
        (a LATEST iterator yields only records written after it), so the feed's end is unknown
        without reading the feed."""
        return None

    def _read_shard(self, shard: dict, after_position: int, limit: int) -> list[RecordedEvent]:
        start = {"ShardIteratorType": "TRIM_HORIZON"}
        if after_position >= int(shard["SequenceNumberRange"]["StartingSequenceNumber"]):
            start = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                     "SequenceNumber": f"{after_position:021d}"}  # fmt: skip
        try:
            iterator = self._call(
                self._streams.get_shard_iterator, StreamArn=self._stream_arn,
                ShardId=shard["ShardId"], passthrough={"TrimmedDataAccessException"}, **start,
            )["ShardIterator"]  # fmt: skip
        except ClientError:
            raise StoreError(
                f"feed position {after_position} is older than the stream's 24-hour retention; "
                "read the streams it missed with read_stream"
            ) from None
        events: list[RecordedEvent] = []
        while iterator and len(events) < limit:
            page = self._call(self._streams.get_records, ShardIterator=iterator, Limit=STREAM_PAGE)
            for record in page["Records"]:
                change = record["dynamodb"]
                if record["eventName"] == "INSERT" and int(change["Keys"]["SK"]["N"]) > 0:
                    events.append(_recorded(change["NewImage"], int(change["SequenceNumber"])))
            if not page["Records"]:
                break  # the open end of the shard: nothing newer yet
            iterator = page.get("NextShardIterator")
        return events


def _refusal(failed: list[tuple[str, str]], expected_versions: Mapping[str, int]) -> Exception:
    """Name what a cancelled append clashed with, in the SQLite engine's precedence."""
    if commands := [ident for kind, ident in failed if kind == "command"]:
        return DuplicateCommand(commands[0])
    if streams := {ident for kind, ident in failed if kind == "stream"}:
        return ConcurrencyConflict([s for s in expected_versions if s in streams])
    return DuplicateEvent([ident for kind, ident in failed if kind == "event"])


def _registry_key(stream: str) -> tuple[int, int]:
    """Where ``stream``'s registry item lives: (partition, negative SK), both from the first 120
    bits of the id's sha256. Spread over ``REGISTRY_SHARDS`` partitions and below every version
    and bookkeeping item, so no stream or event read ever meets one. Two ids sharing 120 bits
    (never expected; about one in 10^18 for a billion streams) would make the second one's first
    append a ConcurrencyConflict rather than hide either."""
    digest = int.from_bytes(hashlib.sha256(stream.encode()).digest()[: _REGISTRY_BITS // 8])
    return digest * REGISTRY_SHARDS >> _REGISTRY_BITS, -1 - digest


def _registry_pk(shard: int) -> str:
    return f"STREAMS#{shard:x}"


def _registry_item(stream: str) -> dict[str, dict[str, str]]:
    shard, sk = _registry_key(stream)
    return {"PK": {"S": _registry_pk(shard)}, "SK": _n(sk), "aggregate_id": {"S": stream}}


def _snapshot_item(snapshot: Snapshot, sk: int) -> dict[str, dict[str, str]]:
    """The item of ``snapshot`` under ``SNAP#<aggregate id>`` at ``sk``: 0 for the newest,
    minus its version in the history."""
    return {
        "PK": {"S": f"SNAP#{snapshot.aggregate_id}"},
        "SK": _n(sk),
        "aggregate_type": {"S": snapshot.aggregate_type},
        "version": _n(snapshot.version),
        "state_schema_version": _n(snapshot.state_schema_version),
        "state": {"S": canonical_json(snapshot.state)},
    }


def _snapshot(item: Mapping[str, Any]) -> Snapshot:
    """The snapshot an item under ``SNAP#<aggregate id>`` holds (``_snapshot_item``)."""
    return Snapshot(
        item["PK"]["S"].removeprefix("SNAP#"),
        item["aggregate_type"]["S"],
        int(item["version"]["N"]),
        int(item["state_schema_version"]["N"]),
        json.loads(item["state"]["S"]),
    )


def _event_attributes(event: NewEvent) -> dict[str, dict[str, str]]:
    """Data and metadata as canonical JSON strings: integers stay exact, no Decimal, no float."""
    data, metadata = encoded_payload(event)
    return {
        "event_id": {"S": event.event_id},
        "aggregate_type": {"S": event.aggregate_type},
        "event_type": {"S": event.event_type},
        "schema_version": _n(event.schema_version),
        "data": {"S": data},
        "metadata": {"S": metadata},
        "hash": {"S": event.hash},
    }


def _recorded(item: Mapping[str, Any], position: int | None = None) -> RecordedEvent:
    return RecordedEvent(
        item["event_id"]["S"],
        item["PK"]["S"],
        item["aggregate_type"]["S"],
        int(item["SK"]["N"]),
        item["event_type"]["S"],
        int(item["schema_version"]["N"]),
        json.loads(item["data"]["S"]),
        json.loads(item["metadata"]["S"]),
        position,
        item["hash"]["S"],
    )
