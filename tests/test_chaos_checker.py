"""The bank-test checker can fail: each kind of violation, planted in a synthetic history and
store, is reported; a clean history reports nothing."""

from __future__ import annotations

import itertools

import pytest

from eventbank.store.contract import RecordedEvent
from reliability.checker import check

_positions = itertools.count(1)


def event(account: str, version: int, kind: str, minor: int, **extra) -> RecordedEvent:
    data = {"account_id": account, "amount_minor": minor, "currency": "USD", **extra}
    command = extra.pop("command_id", None) or f"cmd-{extra.get('transfer_id', version)}"
    return RecordedEvent(f"e-{account}-{version}-{kind}", account, "Account", version, kind, 1,
                         data, {"command_id": command}, next(_positions), "h")  # fmt: skip


def transfer(tid: str, source: str, sv: int, target: str, tv: int, minor: int, key: str):
    return [
        event(source, sv, "TransferredOut", minor, transfer_id=tid, to_account_id=target,
              command_id=key),
        event(target, tv, "TransferredIn", minor, transfer_id=tid, from_account_id=source,
              command_id=key),
    ]  # fmt: skip


def opened(account: str, minor: int) -> list[RecordedEvent]:
    return [event(account, 1, "AccountOpened", 0), event(account, 2, "FundsDeposited", minor)]


def clean_run():
    events = opened("a", 100) + opened("b", 100) + transfer("t1", "a", 3, "b", 3, 30, "k1")
    history = [
        {"op": "transfer", "key": "k1", "outcome": "ok", "transfer_id": "t1"},
        {"op": "transfer", "key": "k2", "outcome": "refused"},
        {"op": "transfer", "key": "k3", "outcome": "indeterminate"},
        {"op": "read", "balances": {"a": 70, "b": 130}},
        {"op": "crash"},
    ]
    return history, events


def test_a_clean_history_has_no_violations_and_is_counted():
    history, events = clean_run()
    report = check(history, events, 200, ordered=True)
    assert report.ok, report.violations
    assert report.counts == {"transfer_ok": 1, "transfer_refused": 1,
                             "transfer_indeterminate": 1, "read": 1, "crash": 1}  # fmt: skip


def plant(violation: str):
    history, events = clean_run()
    if violation == "lost acknowledged transfer":
        events = events[:4]
    elif violation == "half transfer":
        events = events[:5]
    elif violation == "retry applied twice":
        events += transfer("t9", "a", 4, "b", 4, 5, "k3")
        events += transfer("t10", "a", 5, "b", 5, 5, "k3")
    elif violation == "negative balance":
        events.append(event("a", 4, "FundsWithdrawn", 500))
    elif violation == "negative read":
        history.append({"op": "read", "balances": {"a": -1, "b": 201}})
    elif violation == "changed total":
        events.append(event("b", 4, "FundsDeposited", 1))
    elif violation == "refused but applied":
        events += transfer("t11", "a", 4, "b", 4, 5, "k2")
    return history, events


@pytest.mark.parametrize(
    ("violation", "invariant"),
    [
        ("lost acknowledged transfer", 3),
        ("half transfer", 4),
        ("retry applied twice", 5),
        ("negative balance", 2),
        ("negative read", 2),
        ("changed total", 1),
        ("refused but applied", 3),
    ],
)
def test_each_planted_violation_is_reported(violation, invariant):
    history, events = plant(violation)
    for ordered in (True, False):
        report = check(history, events, 200, ordered=ordered)
        assert invariant in {v.invariant for v in report.violations}, (violation, report)
