"""Small builders for raw store events, so contract tests say only what matters to them."""

from __future__ import annotations

import uuid
from typing import Any

from eventbank.ports.event_store import NewEvent


def new_event(
    aggregate_id: str, version: int, event_id: str | None = None, **data: Any
) -> NewEvent:
    """A raw event; its ``hash`` is a fixed marker (contract tests do not chain)."""
    return NewEvent(
        event_id=event_id or str(uuid.uuid4()),
        aggregate_id=aggregate_id,
        aggregate_type="Test",
        version=version,
        event_type="Happened",
        schema_version=1,
        data=data or {"n": version},
        metadata={"command_id": "c-" + (event_id or "x"), "actor": "tests"},
        hash=f"hash-{aggregate_id}-{version}",
    )
