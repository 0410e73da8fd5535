"""The rows eventbank stores for an opening and a transfer, built with no domain logic.

The raw floors write these: the same tables, columns, sizes and JSON shapes as eventbank's,
but no state is loaded, nothing is decided, nothing is checked and no hash is computed.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.workload import Transfer

AGGREGATE_TYPE = "Account"
PLACEHOLDER_HASH = "f" * 64  # a sha256's size; the floor computes none


def to_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class EventRow:
    event_id: str
    aggregate_id: str
    version: int
    event_type: str
    schema_version: int
    data: str
    metadata: str

    def values(self) -> tuple:
        """In the column order of ``INSERT_EVENT`` below."""
        return (
            self.event_id,
            self.aggregate_id,
            AGGREGATE_TYPE,
            self.version,
            self.event_type,
            self.schema_version,
            self.data,
            self.metadata,
            PLACEHOLDER_HASH,
        )


@dataclass(frozen=True, slots=True)
class CommandRow:
    command_id: str
    outcome: str

    def values(self) -> tuple:
        return (self.command_id, PLACEHOLDER_HASH, self.outcome)


EVENT_COLUMNS = (
    "event_id, aggregate_id, aggregate_type, version, event_type, schema_version, data, "
    "metadata, hash"
)
COMMAND_COLUMNS = "command_id, fingerprint, outcome"


class Versions:
    """Each account's last version, handed out under a lock: the floor's only bookkeeping."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, account_ids: Sequence[str], count: int = 1) -> list[int]:
        """Reserve ``count`` versions of each account; returns each one's version before."""
        with self._lock:
            before = [self._last.get(account, 0) for account in account_ids]
            for account, last in zip(account_ids, before, strict=True):
                self._last[account] = last + count
        return before


def _metadata(command_id: str, **extra: str) -> str:
    return to_json(
        {
            "actor": "bench",
            "causation_id": command_id,
            "command_id": command_id,
            "correlation_id": command_id,
            "recorded_at": datetime.now(UTC).isoformat(),
            **extra,
        }
    )


def opening(account_id: str, initial_minor: int) -> tuple[list[EventRow], CommandRow]:
    """An account's first two events (versions 1 and 2) and its command record."""
    command_id = str(uuid.uuid4())
    metadata = _metadata(command_id)
    opened = to_json(
        {"account_id": account_id, "account_type": "CHECKING", "currency": "USD", "owner": "Bench"}
    )
    deposited = to_json(
        {
            "account_id": account_id,
            "amount_minor": initial_minor,
            "channel": "bench",
            "currency": "USD",
        }
    )
    events = [
        EventRow(str(uuid.uuid4()), account_id, 1, "AccountOpened", 1, opened, metadata),
        EventRow(str(uuid.uuid4()), account_id, 2, "FundsDeposited", 2, deposited, metadata),
    ]
    outcome = to_json({"command_id": command_id, "kind": "open", "account_id": account_id})
    return events, CommandRow(command_id, outcome)


def transfer(
    t: Transfer, source_before: int, target_before: int
) -> tuple[list[EventRow], CommandRow]:
    """A transfer's debit and credit, at the versions after the given ones, and its record."""
    command_id, transfer_id = str(uuid.uuid4()), str(uuid.uuid4())
    metadata = _metadata(command_id, transfer_id=transfer_id)
    common = {"amount_minor": t.amount_minor, "currency": "USD", "transfer_id": transfer_id}
    out = to_json({"account_id": t.source, "to_account_id": t.target, **common})
    into = to_json({"account_id": t.target, "from_account_id": t.source, **common})
    events = [
        EventRow(
            str(uuid.uuid4()), t.source, source_before + 1, "TransferredOut", 1, out, metadata
        ),
        EventRow(
            str(uuid.uuid4()), t.target, target_before + 1, "TransferredIn", 1, into, metadata
        ),
    ]
    outcome = to_json(
        {
            "command_id": command_id,
            "kind": "transfer",
            "transfer_id": transfer_id,
            "from": {"account_id": t.source, "version": source_before + 1},
            "to": {"account_id": t.target, "version": target_before + 1},
            **common,
        }
    )
    return events, CommandRow(command_id, outcome)
