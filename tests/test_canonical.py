"""Canonical JSON is written by the standard library's C encoder, built once and called
directly: the bytes must be ``json.JSONEncoder``'s for every value, or hashes recorded before
would no longer verify and fingerprints would no longer match."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbank.domain.canonical import canonical_json

STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)  # fmt: skip

# Every kind of text (control characters, U+2028, astral planes, lone surrogates), integers
# well past 64 bits, floats, and containers of them, keyed by text or (where JSON turns them
# into text) by integers.
texts = st.text(st.characters(codec=None, exclude_categories=())) | st.sampled_from(
    ["\x00\x1f\x7f", "\u2028\u2029", "\ud800", "\udfff x", "\U0010ffff", '"\\/', "é"]
)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(2**70), 2**70) | texts
           | st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(texts, inner, max_size=6)
        | st.dictionaries(st.integers(), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(values)
def test_every_value_is_the_standard_librarys_bytes(value):
    assert canonical_json(value) == STDLIB.encode(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1, float("-inf")],
                                   {"a": None, "b": float("nan")}])  # fmt: skip
def test_nan_and_infinities_are_refused(value):
    with pytest.raises(ValueError):
        canonical_json(value)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [datetime.now(UTC), Point(1), {"at": {1, 2}}, b"bytes"])
def test_types_json_has_no_form_for_are_refused(value):
    with pytest.raises(TypeError):
        canonical_json(value)


def test_a_cycle_is_refused():
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(RecursionError):
        canonical_json(looped)


def test_a_transfer_event_encodes_as_it_always_has():
    """A value of the shape the command path encodes most, with the bytes it had before."""
    data = {"transfer_id": "0193b0c4d2e5f6a7", "amount_minor": 1050, "currency": "EUR",
            "to_account_id": "acct-0007", "metadata": {"ref": "inv-12", "é": "ü"}}  # fmt: skip
    assert canonical_json(data) == (
        '{"amount_minor":1050,"currency":"EUR","metadata":{"ref":"inv-12","é":"ü"},'
        '"to_account_id":"acct-0007","transfer_id":"0193b0c4d2e5f6a7"}'
    )
