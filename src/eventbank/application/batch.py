"""A batch of transfers (``POST /transfers/batch``, ``eventbank transfer --batch``): its items
and their outcomes. ``LedgerService.transfer_batch`` runs it (transfer_batches.py says how).

- Each item is a transfer with an idempotency key of its own. The key is required: a batch
  retried without keys would pay twice. Replaying a batch replays each item that was done.
- Each item has its own outcome, in the batch's order: ``ok``, ``replayed`` (done before, under
  its key: the first outcome is given again and no money moves) or ``refused`` (with the error
  a single transfer would have met, or a batch-level one: a key used twice in one batch, or an
  atomic batch aborted by another item).
- Without ``atomic``, a refused item changes nothing but itself. With ``atomic``, all items
  are written in one atomic append or none is (an item already done is replayed either way).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eventbank.domain.errors import EventbankError, InvalidInput, RuleViolation

MAX_BATCH_ITEMS = 1_000
MISSING_KEY = (
    "idempotency_key is required for every item of a batch: a batch retried without keys "
    "would pay twice"
)

Status = Literal["ok", "replayed", "refused"]


class BatchAborted(RuleViolation):
    """What the other items of an atomic batch say when one item was refused."""

    code = "batch_aborted"


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One transfer of a batch, as the interface read it. ``malformed`` is the error of an item
    the interface could not read (a wrong type, a missing field): it is refused on its own,
    keeping its place in the batch. ``actor``: who asked for it, when not the caller's
    ``current_actor`` (transfers asked for apart and run together, service.transfer_each)."""

    from_account_id: str
    to_account_id: str
    amount: str
    idempotency_key: str | None
    malformed: InvalidInput | None = None
    metadata: Mapping[str, str] | None = None
    actor: str | None = None


@dataclass(frozen=True, slots=True)
class ItemResult:
    """An item's outcome: the transfer's outcome (``ok``, ``replayed``) or its error."""

    index: int
    idempotency_key: str | None
    status: Status
    outcome: Mapping[str, Any] | None = None
    error: EventbankError | None = None


def tally(results: Sequence[ItemResult]) -> dict[str, int]:
    """``succeeded`` (done now or before), ``refused``, and of the succeeded, ``replayed``."""
    replayed = sum(r.status == "replayed" for r in results)
    refused = sum(r.status == "refused" for r in results)
    return {"succeeded": len(results) - refused, "refused": refused, "replayed": replayed}
