"""The DynamoDB floor: ``TransactWriteItems`` calls of the same shape as eventbank's appends.

Per transfer, as engines/dynamodb/event_store.py writes it: a ``ConditionCheck`` that each
account's current version exists, a conditional ``Put`` of each event with its ``EVENT#`` guard,
and the ``CMD#`` record (7 items), with a client request token. No state is loaded and nothing
is decided or hashed. The floor knows every version because it holds a lock per account while
its call is in flight, so its checks never fail. Like eventbank it retries what DynamoDB calls
transient (DynamoDB Local times out on its own locks under concurrency), with eventbank's
backoff and budget. eventbank's overhead over this floor is what its own code costs.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from bench.targets import rows
from bench.workload import Transfer, concurrently
from eventbank.engines.dynamodb.event_store import DynamoEventStore
from eventbank.engines.dynamodb.table import BACKOFF_BASE_S, BACKOFF_CAP_S, TRANSIENT, error_code

TIMEOUT_S = 10.0  # eventbank's DynamoDB retry budget per operation


class RawDynamo:
    system = "raw"
    engine = "dynamodb"
    variant = "TransactWriteItems"
    batch_size = 1
    events_per_transfer = 2

    def __init__(self, store_url: str):
        DynamoEventStore.from_url(store_url).close()  # eventbank's table, created as it does
        parts = urlsplit(store_url)
        params = dict(parse_qsl(parts.query))
        self.table = parts.netloc
        self._ddb = boto3.client(
            "dynamodb",
            endpoint_url=params.get("endpoint_url"),
            region_name=params.get("region"),
            config=Config(retries={"total_max_attempts": 1}, max_pool_connections=32),
        )
        self._last: dict[str, int] = {}
        self._locks: dict[str, threading.Lock] = {}

    def open_accounts(self, account_ids: Sequence[str], initial_minor: int) -> None:
        self._locks = {account: threading.Lock() for account in account_ids}
        self._last = dict.fromkeys(account_ids, 2)  # AccountOpened, FundsDeposited

        def open_one(account: str) -> None:
            events, command = rows.opening(account, initial_minor)
            self._send([], events, command)

        concurrently(open_one, account_ids)

    def transfer_batch(self, transfers: Sequence[Transfer]) -> int:
        for t in transfers:
            first, second = sorted((t.source, t.target))
            with self._locks[first], self._locks[second]:
                before = {t.source: self._last[t.source], t.target: self._last[t.target]}
                events, command = rows.transfer(t, before[t.source], before[t.target])
                self._send(list(before.items()), events, command)
                self._last[t.source] += 1
                self._last[t.target] += 1
        return 0

    def _send(
        self,
        expected: list[tuple[str, int]],
        events: list[rows.EventRow],
        command: rows.CommandRow,
    ) -> None:
        items = [self._item(stream, version, None, exists=True) for stream, version in expected]
        for e in events:
            items.append(
                self._item(
                    e.aggregate_id,
                    e.version,
                    {
                        "event_id": {"S": e.event_id},
                        "aggregate_type": {"S": rows.AGGREGATE_TYPE},
                        "event_type": {"S": e.event_type},
                        "schema_version": {"N": str(e.schema_version)},
                        "data": {"S": e.data},
                        "metadata": {"S": e.metadata},
                        "hash": {"S": rows.PLACEHOLDER_HASH},
                    },
                )
            )
            guard = {"aggregate_id": {"S": e.aggregate_id}, "version": {"N": str(e.version)}}
            items.append(self._item(f"EVENT#{e.event_id}", 0, guard))
        record = {"fingerprint": {"S": rows.PLACEHOLDER_HASH}, "outcome": {"S": command.outcome}}
        items.append(self._item(f"CMD#{command.command_id}", 0, record))
        token = uuid.uuid4().hex  # as eventbank: one token per append, kept across retries
        deadline, tries = time.monotonic() + TIMEOUT_S, 0
        while True:
            try:
                self._ddb.transact_write_items(TransactItems=items, ClientRequestToken=token)
                return
            except ClientError as exc:
                tries += 1
                delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**tries))
                if error_code(exc) not in TRANSIENT or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)

    def _item(
        self, pk: str, sk: int, attributes: dict[str, Any] | None, exists: bool = False
    ) -> dict[str, Any]:
        condition = "attribute_exists(PK)" if exists else "attribute_not_exists(PK)"
        key = {"PK": {"S": pk}, "SK": {"N": str(sk)}}
        if attributes is None:
            return {
                "ConditionCheck": {
                    "TableName": self.table,
                    "Key": key,
                    "ConditionExpression": condition,
                }
            }
        return {
            "Put": {
                "TableName": self.table,
                "Item": {**key, **attributes},
                "ConditionExpression": condition,
            }
        }

    def close(self) -> None:
        self._ddb.close()
