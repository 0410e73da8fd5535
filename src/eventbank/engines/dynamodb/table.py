"""What the DynamoDB event store and read-model store share: URL, client, retries, table set-up.

Retries: throttling, transaction conflicts, server errors and lost connections are retried with
full-jitter backoff within ``timeout_s``, then ``StoreUnavailable``; any other refusal is a
``StoreError``. boto3's own retries are off, so one budget covers a whole operation.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Self, TypeVar
from urllib.parse import parse_qsl, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError, NoRegionError
from botocore.exceptions import ConnectionError as BotoConnectionError

from eventbank.backoff import full_jitter
from eventbank.domain.errors import InvalidInput
from eventbank.ports.event_store import StoreError, StoreUnavailable

TABLE_READY_TIMEOUT_S = 120.0
BACKOFF_BASE_S = 0.01
BACKOFF_CAP_S = 0.5
GET_BATCH = 100  # the BatchGetItem maximum
READ_THREADS = 16  # Queries of one read run at once (within the client's 32 connections)

# Error codes and per-item cancellation reasons that mean "try again", never "you are wrong".
TRANSIENT = frozenset({
    "ThrottlingException", "ThrottlingError", "ProvisionedThroughputExceededException",
    "ProvisionedThroughputExceeded", "RequestLimitExceeded", "InternalServerError",
    "InternalFailure",  # AWS's generic HTTP 500 (DynamoDB Local answers it while adding an index)
    "ServiceUnavailable", "TransactionConflict", "TransactionConflictException",
    "TransactionInProgressException", "LimitExceededException",
    "ContinuousBackupsUnavailableException",
})  # fmt: skip
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
T = TypeVar("T")
K = TypeVar("K")
_SESSION_LOCK = threading.Lock()


@functools.cache
def _session() -> boto3.session.Session:
    """One session per process: each new one parses AWS's endpoint data again (~0.2 s)."""
    return boto3.session.Session()


class Retry(Exception):
    """A transient failure signalled from inside a retried attempt."""


class DynamoTable:
    """One DynamoDB table behind eventbank's retry policy; each store builds on it."""

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        timeout_s: float = 10.0,
    ):
        if not _TABLE_NAME.fullmatch(table):
            raise InvalidInput(f"invalid DynamoDB table name {table!r}")
        self.table = table
        self.timeout_s = timeout_s
        config = Config(
            retries={"total_max_attempts": 1},  # we retry ourselves, within timeout_s
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            max_pool_connections=32,
        )
        self._endpoint_url, self._region, self._config = endpoint_url, region, config
        self._ddb = self._client("dynamodb")
        self._readers: ThreadPoolExecutor | None = None  # started by the first _each
        self._readers_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``dynamodb://TABLE?endpoint_url=http://127.0.0.1:8000&region=us-east-1``."""
        parts = urlsplit(url)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(params) - {"endpoint_url", "region"}
        if parts.scheme != "dynamodb" or parts.path not in ("", "/") or unknown:
            raise InvalidInput(
                f"invalid DynamoDB URL {url!r}; use dynamodb://TABLE"
                "?endpoint_url=http://HOST:PORT&region=REGION (both optional)"
            )
        return cls(
            parts.netloc, endpoint_url=params.get("endpoint_url"), region=params.get("region")
        )

    def _client(self, service: Literal["dynamodb", "dynamodbstreams"]) -> Any:
        try:
            with _SESSION_LOCK:  # clients are thread-safe, sessions are not
                return _session().client(
                    service,
                    endpoint_url=self._endpoint_url,
                    region_name=self._region,
                    config=self._config,
                )
        except NoRegionError:
            raise InvalidInput(
                "no AWS region: add ?region=… to the URL or set AWS_DEFAULT_REGION"
            ) from None

    def close(self) -> None:
        if self._readers is not None:
            self._readers.shutdown()
        self._ddb.close()

    def _get_items(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of ``keys`` that exist, read consistently, ``GET_BATCH`` keys to a
        BatchGetItem; the keys DynamoDB leaves unprocessed are asked again with backoff.
        ``keys`` must hold no key twice (DynamoDB refuses such a request)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), GET_BATCH):
            chunk = keys[start : start + GET_BATCH]
            pending = {self.table: {"Keys": chunk, "ConsistentRead": True}}

            def attempt() -> None:
                nonlocal pending
                page = self._ddb.batch_get_item(RequestItems=pending)
                found.extend(page["Responses"].get(self.table, []))
                pending = page["UnprocessedKeys"]
                if pending:
                    raise Retry(f"{len(pending[self.table]['Keys'])} keys left unprocessed")

            self._retrying(attempt)
        return found

    def _each(self, read: Callable[[K], T], keys: Iterable[K]) -> Mapping[K, T]:
        """``read`` of each key, up to ``READ_THREADS`` at once: DynamoDB answers one
        partition per Query, and a Query waits a network round trip, so many streams read one
        after another wait for each in turn. The first error raised is raised here."""
        asked = list(keys)
        if len(asked) < 2:
            return {key: read(key) for key in asked}
        with self._readers_lock:
            if self._readers is None:
                self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dynamodb-read")
        return dict(zip(asked, self._readers.map(read, asked), strict=True))

    def _ensure_table(
        self, key_schema: list[dict], attributes: list[dict], **create_options: Any
    ) -> tuple[dict[str, Any], bool]:
        """Create the table if missing (idempotent, race-safe) and wait until it is ACTIVE;
        returns its description and whether this call created it."""
        deadline = time.monotonic() + TABLE_READY_TIMEOUT_S
        created = False
        while True:
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"table {self.table} is not ACTIVE after a long wait")
            try:
                table = self._call(self._ddb.describe_table, TableName=self.table,
                                   passthrough={"ResourceNotFoundException"})["Table"]  # fmt: skip
            except ClientError:
                try:
                    self._call(
                        self._ddb.create_table, TableName=self.table, KeySchema=key_schema,
                        AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST",
                        passthrough={"ResourceInUseException"}, **create_options,
                    )  # fmt: skip
                    created = True
                except ClientError:
                    pass  # another process created it first
                continue  # DynamoDB Local makes it ACTIVE at once
            if table["TableStatus"] == "ACTIVE":
                return table, created
            time.sleep(0.5)

    def _call(
        self, operation: Callable[..., T], /, passthrough: Collection[str] = (), **kwargs: Any
    ) -> T:
        """One DynamoDB call, retried while transient; ``passthrough`` codes reach the caller."""
        return self._retrying(lambda: operation(**kwargs), passthrough)

    def _retrying(self, attempt: Callable[[], T], passthrough: Collection[str] = ()) -> T:
        """Full-jitter backoff on transient failures until ``timeout_s`` runs out."""
        deadline = time.monotonic() + self.timeout_s
        tries = 0
        while True:
            try:
                return attempt()
            except Retry as exc:
                last: Exception = exc
            except ClientError as exc:
                if error_code(exc) in passthrough:
                    raise
                if error_code(exc) not in TRANSIENT:
                    raise StoreError(f"DynamoDB refused the request: {exc}") from None
                last = exc
            except (BotoConnectionError, HTTPClientError) as exc:
                last = exc  # a write's fate is unknown: retried with the same token
            except NoCredentialsError:
                raise StoreUnavailable(
                    "no AWS credentials (environment, ~/.aws or a role)"
                ) from None
            tries += 1
            delay = full_jitter(tries, BACKOFF_BASE_S, BACKOFF_CAP_S)
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"DynamoDB did not succeed within {self.timeout_s} s ({tries} tries): {last}"
                ) from None
            time.sleep(delay)


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def number(value: int) -> dict[str, str]:
    """An integer as a DynamoDB number, sent as its decimal text: never through a float."""
    return {"N": str(value)}
