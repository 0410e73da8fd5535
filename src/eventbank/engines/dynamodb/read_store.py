"""Read models on DynamoDB, in a table of their own (``TABLE-read`` beside the events' ``TABLE``).

Keys are strings (``PK``, ``SK``), so one ``Query`` answers each read in the order it needs:

| item | PK | SK |
|---|---|---|
| balance row | ``ACCOUNT#<id>`` | ``ROW`` |
| movement | ``ACCOUNT#<id>`` | ``TX#<version, 20 digits>`` (version order) |
| transfer half | ``TRANSFER#<transfer id>`` | ``<kind>#<account id>`` (descending: debits first) |
| transfers row | ``TRANSFER_ROW#<transfer id>`` | ``SUMMARY`` (not ``ROW``: audits scan those) |
| by account | ``TRANSFERS_BY_ACCOUNT#<account id>`` | ``<created_at>#<transfer id>`` |
| by metadata | ``TRANSFERS_BY_META#<sha256 of key, value>`` | ``<created_at>#<transfer id>`` |
| by time | ``TRANSFERS_BY_DAY#<UTC day>`` | ``<created_at>#<transfer id>`` |
| days with transfers | ``TRANSFER_DAYS`` | ``<UTC day>`` |
| currency total | ``TOTALS`` | currency |
| checkpoint | ``CHECKPOINT`` | projection |
| failure | ``FAILURE#<projection>`` | aggregate id |

Listing accounts in id order (``accounts_page``) without reading movements: the global secondary
index ``accounts_by_status_and_id``, hash key ``status``, range key ``account_id``, keys only.
Only balance rows carry ``status``, so the index is sparse (movements, totals, checkpoints and
failures are not in it), and every eventbank version has written it, so an index added to an
existing table (``UpdateTable``, when a store is opened) is backfilled by DynamoDB itself. A page
is one ``Query`` per status (``OPEN`` then ``CLOSED``, at most ``limit`` keys each) merged in id
order, then the rows by consistent ``BatchGetItem``. As the projection rewrites a row with
unchanged keys, a balance change writes nothing to the index; an opening writes one entry and a
closing moves it. Index reads are eventually consistent: an account opened or closed a moment
ago may be missing from a listing (never from ``balance``), and until DynamoDB has backfilled
the index of an upgraded table, listing answers ``StoreUnavailable``.

The transfers read model. A transfers row is folded in place, by update expressions that give
one result in any order (DynamoDB Streams has no order across accounts): the movements' sums and
sets are ``ADD``ed (exactly once, as each rides in its change's guarded transaction), and what
opens a transfer (its time, metadata, description, what it reverses) is set ``if_not_exists``.
Any transfer's first movement projected on any account opens it (its later ones, a post or
void, follow on the same streams), so the first written is an opening one. Index entries, one
item each, are keyed ``<created_at>#<id>`` (created_at is fixed width, so this orders as the
pair); created_at is read from the row before writing (a consistent GetItem, once per transfer
and batch: its other movement in the batch takes what the first read or wrote) so a post's
entries land on the opening's. A page is one ``Query`` of one partition (``Limit`` bounded),
then the rows by consistent ``BatchGetItem``. Listing by time alone reads the days that have
transfers (``TRANSFER_DAYS``, one item per UTC day, written once per process and day before
the day's first change, so a crash can only leave a day marked and empty), then each day's
partition in order; every marked day holds a transfer, so a page reads at most ``limit`` + 2
day partitions. Limits: every partition sustains about 1,000 writes/s on AWS, so a day's
partition caps the transfers opened per second (a transfer writes its entry from both sides),
as an account's partition caps an account and a metadata pair's one (say ``channel=web`` on
every transfer) caps that pair; the per-currency totals item caps projection throughput below
that already. Transfers made before this read model existed are listed after a rebuild.

Exactly once without one big transaction. SQLite commits a batch's changes and its checkpoint
together; DynamoDB cannot, as a ``TransactWriteItems`` holds at most 100 items and may not touch
one item twice (a batch has hundreds of changes, many on one currency's totals). So each change is
one transaction — its balance row, put only if the row is exactly one version behind (absent for
version 1); its movement; its transfer half; an ``ADD`` of its deltas to its currency's totals —
and the checkpoint moves after the batch, only forward. A crash in between re-delivers changes
already written; their version conditions fail and they are skipped as duplicates, so nothing
counts twice, and the totals move in the same transactions as the balances, so they never drift.
A batch is first checked against a consistent read of its rows, so a gap refuses it before
anything is written; the conditions still guard against a concurrent writer.

The cost of totals: every change to a currency's accounts updates that currency's one totals
item. A transactional write costs twice a plain one, the totals item adds one such write per
change, one item sustains about 1,000 writes/s on AWS, and concurrent transactions on it cancel
each other (``TransactionConflict``, retried with backoff). So totals cap projection throughput
per currency; sharding the item (N per currency, summed on read) would lift the cap.

Numbers: money is a DynamoDB number (exact, 38 digits; balances are bounded at 10**17), read from
the low-level client as text and turned into ``int`` — never a float, never a ``Decimal``. Feed
positions (DynamoDB stream sequence numbers reach 40 digits, more than a number holds) are
stored as 40-digit zero-padded strings, which compare in numeric order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import suppress
from itertools import islice
from typing import Any

from botocore.exceptions import ClientError

from eventbank.domain.account import AccountStatus
from eventbank.domain.canonical import canonical_json
from eventbank.engines.dynamodb.table import TRANSIENT, DynamoTable, Retry, error_code, number
from eventbank.ports.event_store import StoreError, StoreUnavailable
from eventbank.ports.read_store import (
    BalanceRow,
    Change,
    CurrencyTotal,
    Failure,
    ReadStoreError,
    TransactionRow,
    TransferIndex,
    TransferRow,
    check_accounts_page,
    check_transfers_page,
    utc_position,
)

_KEY_SCHEMA = [{"AttributeName": "PK", "KeyType": "HASH"},
               {"AttributeName": "SK", "KeyType": "RANGE"}]  # fmt: skip
_ATTRIBUTES = [{"AttributeName": "PK", "AttributeType": "S"},
               {"AttributeName": "SK", "AttributeType": "S"}]  # fmt: skip
_ACCOUNTS_INDEX = "accounts_by_status_and_id"
_INDEX_ATTRIBUTES = [{"AttributeName": "status", "AttributeType": "S"},
                     {"AttributeName": "account_id", "AttributeType": "S"}]  # fmt: skip
_ACCOUNTS_INDEX_SPEC = {
    "IndexName": _ACCOUNTS_INDEX,
    "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                  {"AttributeName": "account_id", "KeyType": "RANGE"}],
    "Projection": {"ProjectionType": "KEYS_ONLY"},
}  # fmt: skip
_STATUSES = tuple(str(status) for status in AccountStatus)  # OPEN first: accounts only close
_ROW = "ROW"
_TOTALS = "TOTALS"
_CHECKPOINT = "CHECKPOINT"
_VERSION_DIGITS = 20
_POSITION_DIGITS = 40
_WRITE_BATCH = 25  # the BatchWriteItem maximum
_DAYS = "TRANSFER_DAYS"
_SUMMARY = "SUMMARY"
_HOLDS = ("hold_out", "hold_in")
_DEBITS = ("transfer_out", "transaction_debit")
_CREDITS = ("transfer_in", "transaction_credit")
_OUTCOMES = ("posted", "voided", "expired")


class DynamoReadStore(DynamoTable):
    """The ReadStore contract on one DynamoDB table (see the module docstring)."""

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ):
        super().__init__(table, endpoint_url=endpoint_url, region=region, timeout_s=timeout_s)
        self._index_active = False  # the accounts index, once seen ACTIVE
        self._days_marked: set[str] = set()  # TRANSFER_DAYS items this process has written
        try:
            described, _ = self._ensure_table(
                _KEY_SCHEMA, _ATTRIBUTES + _INDEX_ATTRIBUTES,
                GlobalSecondaryIndexes=[_ACCOUNTS_INDEX_SPEC],
            )  # fmt: skip
            if described["KeySchema"] != _KEY_SCHEMA or not all(
                a in described["AttributeDefinitions"] for a in _ATTRIBUTES
            ):
                raise StoreError(
                    f"table {table} is not an eventbank read-model table: it needs hash key "
                    "PK (S) and range key SK (S)"
                )
            self._ensure_accounts_index(described)
        except BaseException:
            self.close()
            raise

    def _ensure_accounts_index(self, described: dict[str, Any]) -> None:
        """Add the accounts index to a table made before it existed; DynamoDB backfills it in
        the background (``accounts_page`` answers StoreUnavailable until it is ACTIVE)."""
        self._index_active = _index_status(described) == "ACTIVE"
        if _index_status(described) != "absent":
            return
        try:
            self._call(
                self._ddb.update_table, TableName=self.table,
                AttributeDefinitions=_ATTRIBUTES + _INDEX_ATTRIBUTES,
                GlobalSecondaryIndexUpdates=[{"Create": _ACCOUNTS_INDEX_SPEC}],
                passthrough={"ResourceInUseException", "ValidationException"},
            )  # fmt: skip
        except ClientError as exc:  # another process is adding it (or just has)? check
            again = self._call(self._ddb.describe_table, TableName=self.table)["Table"]
            if _index_status(again) == "absent":
                raise StoreError(f"cannot add the accounts index to {self.table}: {exc}") from None

    # ------------------------------------------------------------ writes

    def apply(
        self,
        projection: str,
        changes: Sequence[Change],
        checkpoint: int | None = None,
        *,
        only_from: int | None = None,
    ) -> None:
        for position in (checkpoint, only_from):
            if position is not None and not 0 <= position < 10**_POSITION_DIGITS:
                raise ReadStoreError(f"checkpoint {position} is not a feed position")
        created: dict[str, str] = {}  # transfer id -> its row's created_at, within this batch
        for change, before in self._plan(changes):
            self._write(change, before, created)
        if checkpoint is None:
            return
        if only_from is None:  # forward only
            condition, value = "attribute_not_exists(PK) OR #position < :position", checkpoint
        else:  # only from where it stands (a missing item stands at 0)
            condition, value = "#position = :position", only_from
            if only_from == 0:
                condition += " OR attribute_not_exists(PK)"
        with suppress(ClientError):  # the condition does not hold: it stays
            self._call(
                self._ddb.put_item, TableName=self.table,
                Item={**_key(_CHECKPOINT, projection), "position": _position(checkpoint)},
                ConditionExpression=condition,
                ExpressionAttributeNames={"#position": "position"},
                ExpressionAttributeValues={":position": _position(value)},
                passthrough={"ConditionalCheckFailedException"},
            )  # fmt: skip

    def _plan(self, changes: Sequence[Change]) -> list[tuple[Change, BalanceRow | None]]:
        """The changes still to write, each with the row it follows; a gap refuses them all."""
        rows = self.balances([c.row.account_id for c in changes])
        plan = []
        for change in changes:
            before = rows.get(change.row.account_id)
            at = before.version if before else 0
            if change.row.version <= at:
                continue  # delivered twice
            if change.row.version > at + 1:
                raise _gap(change.row, at)
            plan.append((change, before))
            rows[change.row.account_id] = change.row
        return plan

    def _write(self, change: Change, before: BalanceRow | None, created: dict[str, str]) -> None:
        """One transaction; a lost response needs no request token, as a retry of a write that
        landed fails its version condition and is skipped like any duplicate."""
        items = _transaction_items(self.table, change, before)
        if change.transaction is not None and change.transaction.transfer_id is not None:
            items += self._transfer_items(change.transaction, created)

        def attempt() -> bool:
            try:
                self._ddb.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = [
                    r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])
                ]
                if reasons[:1] == ["ConditionalCheckFailed"]:  # the balance row's guard
                    return False
                if not reasons or not all(r in TRANSIENT for r in reasons if r != "None"):
                    raise StoreError(f"DynamoDB cancelled a read-model write: {reasons}") from None
                raise Retry(f"read-model write cancelled: {reasons}") from None
            return True

        if not self._retrying(attempt):  # another writer moved the row since _plan read it
            current = self.balance(change.row.account_id)
            if current is None or current.version < change.row.version:
                raise _gap(change.row, current.version if current else 0)

    def _transfer_items(
        self, move: TransactionRow, created: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The transfers row's update and index entries for one movement (module docstring);
        its day is marked first. The row's ``created_at`` is read once per batch (``created``):
        a transfer's other movement in the batch finds the one its first wrote or read."""
        transfer_id = str(move.transfer_id)
        created_at = created.get(transfer_id)
        if created_at is None:
            known = self._call(
                self._ddb.get_item, TableName=self.table, ConsistentRead=True,
                Key=_key(f"TRANSFER_ROW#{transfer_id}", _SUMMARY),
                ProjectionExpression="created_at",
            ).get("Item")  # fmt: skip
            created_at = known["created_at"]["S"] if known else utc_position(move.recorded_at)
            created[transfer_id] = created_at
        day, sk = created_at[:10], f"{created_at}#{transfer_id}"
        if day not in self._days_marked:
            self._call(self._ddb.put_item, TableName=self.table, Item=_key(_DAYS, day))
            self._days_marked.add(day)
        entries = [f"TRANSFERS_BY_ACCOUNT#{move.account_id}", f"TRANSFERS_BY_DAY#{day}"]
        entries += [_meta_pk(key, value) for key, value in move.metadata.items()]
        items = [{"Put": {"TableName": self.table,
                          "Item": {**_key(pk, sk), "transfer_id": {"S": transfer_id}}}}
                 for pk in entries]  # fmt: skip
        items.append({"Update": _row_update(self.table, move, created_at)})
        if move.reverses is not None:
            moved = move.amount_minor if move.kind in _DEBITS else 0
            items.append({"Update": {
                "TableName": self.table, "Key": _key(f"TRANSFER_ROW#{move.reverses}", _SUMMARY),
                "UpdateExpression": "ADD #by :id, #minor :moved",
                "ExpressionAttributeNames": {"#by": "reversed_by", "#minor": "reversed_minor"},
                "ExpressionAttributeValues": {":id": {"SS": [transfer_id]},
                                              ":moved": number(moved)},
            }})  # fmt: skip
        return items

    def save_failure(self, failure: Failure) -> None:
        item = {
            **_key(f"FAILURE#{failure.projection}", failure.aggregate_id),
            "version": number(failure.version),
            "error": {"S": failure.error},
            "attempts": number(failure.attempts),
            "first_failed_at": {"S": failure.first_failed_at},
            "next_attempt_at": {"S": failure.next_attempt_at},
        }
        self._call(self._ddb.put_item, TableName=self.table, Item=item)

    def clear_failure(self, projection: str, aggregate_id: str) -> None:
        self._call(
            self._ddb.delete_item, TableName=self.table,
            Key=_key(f"FAILURE#{projection}", aggregate_id),
        )  # fmt: skip

    def reset(self, projection: str) -> None:
        """Forget everything this projection wrote, so a rebuild starts from nothing: a Scan of
        the keys, deleted page by page in batches (other projections' state is kept)."""
        self._days_marked.clear()
        scanned = self._pages(self._ddb.scan, ProjectionExpression="PK, SK")
        keys = (_key(i["PK"]["S"], i["SK"]["S"]) for i in scanned if _written_by(projection, i))
        while batch := list(islice(keys, _WRITE_BATCH)):
            pending = {self.table: [{"DeleteRequest": {"Key": key}} for key in batch]}

            def attempt() -> None:
                nonlocal pending
                pending = self._ddb.batch_write_item(RequestItems=pending)["UnprocessedItems"]
                if pending:
                    raise Retry(f"{len(pending[self.table])} deletes left unprocessed")

            self._retrying(attempt)

    # ------------------------------------------------------------ reads

    def checkpoint(self, projection: str) -> int:
        item = self._call(
            self._ddb.get_item, TableName=self.table, Key=_key(_CHECKPOINT, projection),
            ConsistentRead=True,
        ).get("Item")  # fmt: skip
        return int(item["position"]["S"]) if item else 0

    def balance(self, account_id: str) -> BalanceRow | None:
        return self.balances([account_id]).get(account_id)

    def balances(self, account_ids: Sequence[str]) -> dict[str, BalanceRow]:
        """Consistent reads, 100 keys per BatchGetItem (``_get_items``)."""
        keys = [_key(f"ACCOUNT#{i}", _ROW) for i in dict.fromkeys(account_ids)]
        return {r.account_id: r for r in map(_row, self._get_items(keys))}

    def all_balances(self) -> list[BalanceRow]:
        """A Scan of the whole table (every movement is read too): for audits, not hot paths."""
        rows = self._pages(
            self._ddb.scan, FilterExpression="SK = :row",
            ExpressionAttributeValues={":row": {"S": _ROW}},
        )  # fmt: skip
        return sorted(map(_row, rows), key=lambda r: r.account_id)

    def accounts_page(self, after: str = "", limit: int = 100) -> list[BalanceRow]:
        """The first ``limit`` ids after ``after`` of each status from the accounts index,
        merged in id order, then their rows by consistent BatchGetItem (module docstring)."""
        check_accounts_page(after, limit)
        if not self._index_active:
            self._check_index_active()
        ids: set[str] = set()
        for status in _STATUSES:
            condition, values = "#status = :status", {":status": {"S": status}}
            if after:  # DynamoDB refuses an empty string as a key value
                condition += " AND account_id > :after"
                values[":after"] = {"S": after}
            keys = self._pages(
                self._ddb.query, IndexName=_ACCOUNTS_INDEX, ConsistentRead=False, Limit=limit,
                KeyConditionExpression=condition, ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=values, ProjectionExpression="account_id",
            )  # fmt: skip
            ids.update(item["account_id"]["S"] for item in islice(keys, limit))
        first = sorted(ids)[:limit]
        rows = self.balances(first)
        return [rows[i] for i in first if i in rows]  # a row reset meanwhile is left out

    def _check_index_active(self) -> None:
        """StoreUnavailable until the accounts index is ACTIVE (DynamoDB refuses queries of an
        index it is still backfilling); once it is, no further check is made."""
        table = self._call(self._ddb.describe_table, TableName=self.table)["Table"]
        status = _index_status(table)
        if status != "ACTIVE":
            raise StoreUnavailable(
                f"the accounts index of table {self.table} is being built (status {status}); "
                "listing accounts works once it is ACTIVE"
            )
        self._index_active = True

    def transactions(
        self, account_id: str, after_version: int = 0, limit: int = 100
    ) -> list[TransactionRow]:
        if limit < 1:
            return []  # DynamoDB refuses Limit=0
        items = self._pages(
            self._ddb.query, Limit=limit,
            KeyConditionExpression="PK = :account AND SK BETWEEN :after AND :last",
            ExpressionAttributeValues={
                ":account": {"S": f"ACCOUNT#{account_id}"},
                ":after": {"S": _move_sk(after_version + 1)},
                ":last": {"S": _move_sk(10**_VERSION_DIGITS - 1)},
            },
        )  # fmt: skip
        return [_move(item) for item in islice(items, limit)]

    def transfer(self, transfer_id: str) -> list[TransactionRow]:
        """Both halves of one transfer (debit first), once projected."""
        items = self._pages(
            self._ddb.query, KeyConditionExpression="PK = :transfer", ScanIndexForward=False,
            ExpressionAttributeValues={":transfer": {"S": f"TRANSFER#{transfer_id}"}},
        )  # fmt: skip
        return [_move(item) for item in items]

    def transfer_rows(self, transfer_ids: Sequence[str]) -> dict[str, TransferRow]:
        """Consistent reads, 100 keys per BatchGetItem (``_get_items``); an item that is only
        a reversal's link, ahead of its transfer's row, is no row."""
        keys = [_key(f"TRANSFER_ROW#{i}", _SUMMARY) for i in dict.fromkeys(transfer_ids)]
        rows = map(_transfer_row, filter(lambda item: "created_at" in item, self._get_items(keys)))
        return {row.transfer_id: row for row in rows}

    def transfers_page(
        self, index: TransferIndex, after: tuple[str, str], before: str, limit: int
    ) -> list[TransferRow]:
        """One Query of the account's or metadata pair's partition, or of the day partitions
        in order (module docstring), then the rows by BatchGetItem."""
        check_transfers_page(index, after, before, limit)
        if index.account_id is not None:
            ids = self._entries(f"TRANSFERS_BY_ACCOUNT#{index.account_id}", after, before, limit)
        elif index.meta is not None:
            ids = self._entries(_meta_pk(*index.meta), after, before, limit)
        else:
            ids = []
            for day in self._days(after[0][:10], before[:10]):
                ids += self._entries(f"TRANSFERS_BY_DAY#{day}", after, before, limit - len(ids))
                if len(ids) == limit:
                    break
        rows = self.transfer_rows(ids)
        return [rows[i] for i in ids if i in rows]  # a row reset meanwhile is left out

    def _entries(self, pk: str, after: tuple[str, str], before: str, limit: int) -> list[str]:
        """The transfer ids of one index partition after ``after`` and before ``before``."""
        low = f"{after[0]}#{after[1]}" if after[0] else "0"  # every created_at is a year
        items = self._pages(
            self._ddb.query, Limit=limit + 1,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :low AND :high",
            ExpressionAttributeValues={":pk": {"S": pk}, ":low": {"S": low},
                                       ":high": {"S": before}},
        )  # fmt: skip
        fresh = (item for item in items if item["SK"]["S"] != low)  # ``after`` is exclusive
        return [item["transfer_id"]["S"] for item in islice(fresh, limit)]

    def _days(self, first: str, last: str) -> Iterator[str]:
        """The UTC days from ``first`` to ``last`` that have transfers, in order, as read."""
        items = self._pages(
            self._ddb.query, KeyConditionExpression="PK = :days AND SK BETWEEN :first AND :last",
            ExpressionAttributeValues={":days": {"S": _DAYS}, ":first": {"S": first or "0"},
                                       ":last": {"S": last}},
        )  # fmt: skip
        return (item["SK"]["S"] for item in items)

    def totals(self) -> list[CurrencyTotal]:
        items = self._pages(
            self._ddb.query, KeyConditionExpression="PK = :totals",
            ExpressionAttributeValues={":totals": {"S": _TOTALS}},
        )  # fmt: skip
        return [
            CurrencyTotal(item["SK"]["S"], int(item["accounts_open"]["N"]),
                          int(item["balance_minor"]["N"]))
            for item in items
        ]  # fmt: skip

    def failures(self, projection: str) -> list[Failure]:
        items = self._pages(
            self._ddb.query, KeyConditionExpression="PK = :failures",
            ExpressionAttributeValues={":failures": {"S": f"FAILURE#{projection}"}},
        )  # fmt: skip
        return [
            Failure(projection, item["SK"]["S"], int(item["version"]["N"]), item["error"]["S"],
                    int(item["attempts"]["N"]), item["first_failed_at"]["S"],
                    item["next_attempt_at"]["S"])
            for item in items
        ]  # fmt: skip

    def _pages(self, operation: Any, **request: Any) -> Iterator[dict[str, Any]]:
        """The items of a Query or Scan (consistent unless told), page after page, as the caller
        consumes them."""
        request = {"TableName": self.table, "ConsistentRead": True, **request}
        while True:
            page = self._call(operation, **request)
            yield from page["Items"]
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _transaction_items(
    table: str, change: Change, before: BalanceRow | None
) -> list[dict[str, Any]]:
    """The row (only if still at ``before``), its movement and transfer half, and the deltas
    added to its currency's totals (an account's currency never changes)."""
    row, move = change.row, change.transaction
    guard: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(PK)"}
    if before is not None:
        guard = {"ConditionExpression": "#version = :before",
                 "ExpressionAttributeNames": {"#version": "version"},
                 "ExpressionAttributeValues": {":before": number(before.version)}}  # fmt: skip
    opened = (row.status == "OPEN") - (before is not None and before.status == "OPEN")
    items: list[dict[str, Any]] = [
        {"Put": {"TableName": table, "Item": _row_item(row), **guard}},
        {"Update": {
            "TableName": table, "Key": _key(_TOTALS, row.currency),
            "UpdateExpression": "ADD #balance :balance, #open :open",
            "ExpressionAttributeNames": {"#balance": "balance_minor", "#open": "accounts_open"},
            "ExpressionAttributeValues": {
                ":balance": number(row.balance_minor - (before.balance_minor if before else 0)),
                ":open": number(opened),
            },
        }},
    ]  # fmt: skip
    if move is not None:
        items.append({"Put": {"TableName": table, "Item": _move_item(move)}})
        if move.transfer_id is not None:
            # a transaction has several legs of one kind: the account tells them apart
            sk = f"{move.kind}#{move.account_id}"
            half = {**_move_item(move), **_key(f"TRANSFER#{move.transfer_id}", sk)}
            items.append({"Put": {"TableName": table, "Item": half}})
    return items


def _index_status(table: dict[str, Any]) -> str:
    """The accounts index's status in a table's description ("absent" when it has none)."""
    for index in table.get("GlobalSecondaryIndexes", []):
        if index["IndexName"] == _ACCOUNTS_INDEX:
            return str(index.get("IndexStatus", "ACTIVE"))
    return "absent"


def _gap(row: BalanceRow, at: int) -> ReadStoreError:
    return ReadStoreError(f"gap in {row.account_id}: read model at v{at}, change is v{row.version}")


def _written_by(projection: str, item: dict[str, Any]) -> bool:
    """Everything but other projections' checkpoints and failures."""
    pk, sk = item["PK"]["S"], item["SK"]["S"]
    if pk == _CHECKPOINT:
        return sk == projection
    return not pk.startswith("FAILURE#") or pk == f"FAILURE#{projection}"


def _key(pk: str, sk: str) -> dict[str, dict[str, str]]:
    return {"PK": {"S": pk}, "SK": {"S": sk}}


def _move_sk(version: int) -> str:
    return f"TX#{version:0{_VERSION_DIGITS}d}"


def _position(checkpoint: int) -> dict[str, str]:
    return {"S": f"{checkpoint:0{_POSITION_DIGITS}d}"}


def _row_item(row: BalanceRow) -> dict[str, dict[str, str]]:
    return {
        **_key(f"ACCOUNT#{row.account_id}", _ROW),
        "account_id": {"S": row.account_id},
        "owner": {"S": row.owner},
        "account_type": {"S": row.account_type},
        "currency": {"S": row.currency},
        "balance_minor": number(row.balance_minor),
        "status": {"S": row.status},
        "version": number(row.version),
        "updated_at": {"S": row.updated_at},
        "overdraft_limit_minor": number(row.overdraft_limit_minor),
        "pending_debits_minor": number(row.pending_debits_minor),
        "pending_credits_minor": number(row.pending_credits_minor),
    }


def _row(item: dict[str, Any]) -> BalanceRow:
    return BalanceRow(
        item["account_id"]["S"], item["owner"]["S"], item["account_type"]["S"],
        item["currency"]["S"], int(item["balance_minor"]["N"]), item["status"]["S"],
        int(item["version"]["N"]), item["updated_at"]["S"],
        # rows written before overdraft limits and pending transfers existed have none of
        # them: 0 is right for them
        *(int(item.get(name, {"N": "0"})["N"]) for name in _SINCE_V1),
    )  # fmt: skip


_SINCE_V1 = ("overdraft_limit_minor", "pending_debits_minor", "pending_credits_minor")


def _move_item(t: TransactionRow) -> dict[str, dict[str, str]]:
    """A movement; counterparty and transfer id are left out when they are None."""
    item = {
        **_key(f"ACCOUNT#{t.account_id}", _move_sk(t.version)),
        "account_id": {"S": t.account_id},
        "version": number(t.version),
        "kind": {"S": t.kind},
        "amount_minor": number(t.amount_minor),
        "currency": {"S": t.currency},
        "balance_after_minor": number(t.balance_after_minor),
        "recorded_at": {"S": t.recorded_at},
    }
    if t.counterparty is not None:
        item["counterparty"] = {"S": t.counterparty}
    if t.transfer_id is not None:
        item["transfer_id"] = {"S": t.transfer_id}
    if t.metadata:
        item["metadata"] = {"S": canonical_json(dict(t.metadata))}
    if t.description:
        item["description"] = {"S": t.description}
    if t.reverses is not None:
        item["reverses"] = {"S": t.reverses}
    return item


def _move(item: dict[str, Any]) -> TransactionRow:
    return TransactionRow(
        item["account_id"]["S"], int(item["version"]["N"]), item["kind"]["S"],
        int(item["amount_minor"]["N"]), item["currency"]["S"],
        item.get("counterparty", {}).get("S"), item.get("transfer_id", {}).get("S"),
        int(item["balance_after_minor"]["N"]), item["recorded_at"]["S"],
        # movements written before metadata, descriptions and reversals existed have none
        json.loads(item.get("metadata", {"S": "{}"})["S"]),
        item.get("description", {"S": ""})["S"], item.get("reverses", {}).get("S"),
    )  # fmt: skip


def _meta_pk(key: str, value: str) -> str:
    """A metadata pair's index partition: hashed, as a value may be longer than a key can be."""
    return f"TRANSFERS_BY_META#{hashlib.sha256(canonical_json([key, value]).encode()).hexdigest()}"


def _row_update(table: str, move: TransactionRow, created_at: str) -> dict[str, Any]:
    """One movement folded into its transfers row: sums and sets ADDed, what opens it set only
    if not set, so any order of movements gives the same row."""
    kind = "transaction" if move.kind.startswith("transaction_") else "transfer"
    sets: dict[str, tuple[str, dict[str, Any]]] = {  # attribute: (how, its value)
        "transfer_id": ("=", {"S": str(move.transfer_id)}), "kind": ("=", {"S": kind}),
        "currency": ("=", {"S": move.currency}), "created_at": ("if_not_exists", {"S": created_at}),
        "metadata": ("if_not_exists", {"S": canonical_json(dict(move.metadata))}),
        "description": ("if_not_exists", {"S": move.description}),
    }  # fmt: skip
    adds: dict[str, dict[str, Any]] = {"accounts": {"SS": [move.account_id]}}
    if move.reverses is not None:
        sets["reverses"] = ("if_not_exists", {"S": move.reverses})
    if move.kind in _HOLDS:
        sets["held_minor"] = ("=", number(move.amount_minor))
    elif move.kind in _DEBITS or move.kind in _CREDITS:
        adds["debits_minor" if move.kind in _DEBITS else "credits_minor"] = number(
            move.amount_minor
        )
    if (outcome := move.kind.rsplit("_", 1)[0]) in _OUTCOMES:
        adds["outcomes"] = {"SS": [outcome]}
    ends = (move.account_id, str(move.counterparty))
    if move.kind in ("hold_out", "transfer_out", "hold_in", "transfer_in"):
        debit, credit = ends if move.kind.endswith("_out") else ends[::-1]
        sets["from_account"], sets["to_account"] = ("=", {"S": debit}), ("=", {"S": credit})
    set_parts = [f"#{a} = {f'if_not_exists(#{a}, :{a})' if how != '=' else f':{a}'}"
                 for a, (how, _) in sets.items()]  # fmt: skip
    return {
        "TableName": table, "Key": _key(f"TRANSFER_ROW#{move.transfer_id}", _SUMMARY),
        "UpdateExpression": f"SET {', '.join(set_parts)} ADD "
        + ", ".join(f"#{a} :{a}" for a in adds),
        "ExpressionAttributeNames": {f"#{a}": a for a in [*sets, *adds]},
        "ExpressionAttributeValues": {**{f":{a}": v for a, (_, v) in sets.items()},
                                      **{f":{a}": v for a, v in adds.items()}},
    }  # fmt: skip


def _transfer_row(item: dict[str, Any]) -> TransferRow:
    outcomes = set(item.get("outcomes", {}).get("SS", []))
    moved = max(int(item.get(f"{side}_minor", {"N": "0"})["N"]) for side in ("debits", "credits"))
    return TransferRow(
        transfer_id=item["transfer_id"]["S"], kind=item["kind"]["S"],
        currency=item["currency"]["S"], created_at=item["created_at"]["S"],
        from_account=item.get("from_account", {}).get("S"),
        to_account=item.get("to_account", {}).get("S"),
        accounts=tuple(sorted(item["accounts"]["SS"])),
        metadata=json.loads(item["metadata"]["S"]), description=item["description"]["S"],
        reverses=item.get("reverses", {}).get("S"),
        held_minor=int(item.get("held_minor", {"N": "0"})["N"]), moved_minor=moved,
        outcome=next((o for o in _OUTCOMES if o in outcomes), ""),
        reversed_by=tuple(sorted(item.get("reversed_by", {}).get("SS", []))),
        reversed_minor=int(item.get("reversed_minor", {"N": "0"})["N"]),
    )  # fmt: skip
