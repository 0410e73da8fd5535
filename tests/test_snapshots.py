"""Snapshot + tail equals a full replay, for random histories, on every engine."""

from __future__ import annotations

import contextlib
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbank.application.service import LedgerService
from eventbank.domain import account as domain
from eventbank.domain.errors import InsufficientFunds
from eventbank.domain.events import event_from_data
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import chain_hash

_accounts = itertools.count()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    every=st.integers(min_value=1, max_value=7),
    moves=st.lists(st.integers(min_value=-5_000, max_value=5_000).filter(bool), max_size=25),
)
def test_snapshot_plus_tail_equals_a_full_replay(store, every, moves):
    account = f"snap-{next(_accounts)}"
    service = LedgerService(store, snapshot_every=every)
    service.open_account(account, owner="Ann", account_type="CHECKING", initial_deposit="20")
    for minor in moves:
        amount = format_minor(abs(minor), "USD")
        with contextlib.suppress(InsufficientFunds):
            (service.deposit if minor > 0 else service.withdraw)(account, amount)
    full = domain.replay(
        event_from_data(e.event_type, dict(e.data), e.schema_version)
        for e in store.read_stream(account)
    )
    snapshot = store.load_snapshot(account)
    if full.version >= every:
        assert snapshot is not None and snapshot.version == full.version // every * every
    assert service.get_account(account) == full
    # and the chain continues correctly from a snapshot's head hash
    service.deposit(account, "1")
    stored = store.read_stream(account)
    assert stored[-1].hash == chain_hash(stored[-2].hash, stored[-1])
