"""The chain hash's definition never changes: stored chains must verify forever.

``chain_hash`` writes the envelope's canonical JSON out field by field around the payload's own
canonical JSON (encoded once, by ``chained``, and stored as that very text). These tests hold it
to the definition: sha256 of the previous hash, a newline and the canonical JSON of the whole
envelope, for any payload the store accepts, whether the payload came encoded or not.
"""

from __future__ import annotations

import hashlib
import json

from hypothesis import given
from hypothesis import strategies as st

from eventbank.domain.canonical import canonical_json
from eventbank.ports.event_store import NewEvent, chain_hash, chained, encoded_payload, recorded

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
payloads = st.dictionaries(st.text(), json_values, max_size=6)
events = st.builds(
    NewEvent,
    event_id=st.text(min_size=1),
    aggregate_id=st.text(min_size=1),
    aggregate_type=st.text(min_size=1),
    version=st.integers(min_value=1, max_value=2**63 - 1),
    event_type=st.text(min_size=1),
    schema_version=st.integers(min_value=1, max_value=1_000),
    data=payloads,
    metadata=payloads,
)


def defined_hash(previous_hash: str, event: NewEvent) -> str:
    """The definition, as the chain has always been computed: the whole envelope encoded."""
    body = canonical_json({
        "event_id": event.event_id, "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type, "version": event.version,
        "event_type": event.event_type, "schema_version": event.schema_version,
        "data": event.data, "metadata": event.metadata,
    })  # fmt: skip
    return hashlib.sha256(f"{previous_hash}\n{body}".encode()).hexdigest()


@given(event=events, previous=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
def test_the_chain_hash_is_the_hash_of_the_whole_envelope_encoded(event, previous):
    (hashed,) = chained([event], {event.aggregate_id: previous})
    assert hashed.hash == defined_hash(previous, event)
    assert chain_hash(previous, event) == hashed.hash  # payload encoded on the spot
    assert chain_hash(previous, recorded(hashed, 7)) == hashed.hash  # as read back, no cache
    assert hashed.encoded == (canonical_json(event.data), canonical_json(event.metadata))


@given(first=events, second=events)
def test_events_of_one_stream_chain_from_each_other(first, second):
    version = first.version + 1 if first.version < 2**63 - 1 else first.version
    second = NewEvent(second.event_id, first.aggregate_id, second.aggregate_type, version,
                      second.event_type, second.schema_version, second.data,
                      second.metadata)  # fmt: skip
    a, b = chained([first, second], {})
    assert a.hash == defined_hash("0" * 64, first)
    assert b.hash == defined_hash(a.hash, second)


def test_what_an_engine_stores_is_the_text_the_hash_covers():
    data = {"amount_minor": 5, "memo": "café"}
    (event,) = chained([NewEvent("e-1", "acc-1", "Account", 1, "Deposited", 1, data,
                                 {"actor": "ann"})], {})  # fmt: skip
    data, metadata = encoded_payload(event)
    assert data == '{"amount_minor":5,"memo":"café"}' and json.loads(metadata) == {"actor": "ann"}
