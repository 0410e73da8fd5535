"""The bank-test checker can fail: each kind of violation, planted in a synthetic history and
store, is reported; a clean history reports nothing."""

from __future__ import annotations

import itertools

import pytest

from eventbank.ports.event_store import RecordedEvent
from reliability.checker import check
from reliability.report import render

_positions = itertools.count(1)


def event(account: str, version: int, kind: str, minor: int, **extra) -> RecordedEvent:
    data = {"account_id": account, "amount_minor": minor, "currency": "USD", **extra}
    command = extra.pop("command_id", None) or f"cmd-{extra.get('transfer_id', version)}"
    return RecordedEvent(f"e-{account}-{version}-{kind}", account, "Account", version, kind, 1,
                         data, {"command_id": command}, next(_positions), "h")  # fmt: skip


def transfer(tid: str, source: str, sv: int, target: str, tv: int, minor: int, key: str,
             reverses: str = ""):  # fmt: skip
    return [
        event(source, sv, "TransferredOut", minor, transfer_id=tid, to_account_id=target,
              command_id=key, reverses=reverses),
        event(target, tv, "TransferredIn", minor, transfer_id=tid, from_account_id=source,
              command_id=key, reverses=reverses),
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
                             "transfer_indeterminate": 1, "indeterminate_not_applied": 1,
                             "indeterminate_requests": 1, "read": 1, "crash": 1}  # fmt: skip


def test_lost_answers_503s_and_fault_kinds_are_counted():
    history, events = clean_run()
    history[0].update(lost=2, statuses={"lost": 2, "503": 1, "409 not_yet_projected": 3,
                                        "201": 1})  # fmt: skip
    history += [{"op": "crash", "kind": "server_kill"}, {"op": "fault", "kind": "disk_full"}]
    counts = check(history, events, 200, ordered=True).counts
    assert (counts["answers_lost"], counts["ok_after_lost_answer"], counts["answers_503"],
            counts["answers_not_yet_projected"]) == (2, 1, 1, 3)  # fmt: skip
    assert counts["indeterminate_requests"] == 2  # the lost-answer one and the unanswered one
    assert (counts["crash"], counts["crash:server_kill"], counts["fault:disk_full"]) == (2, 1, 1)


def plant(violation: str):
    history, events = clean_run()
    if violation == "lost acknowledged transfer":
        events = events[:4]
    elif violation == "half transfer":
        events = events[:5]
    elif violation == "retry applied twice":
        events += transfer("t9", "a", 4, "b", 4, 5, "k3")
        events += transfer("t10", "a", 5, "b", 5, 5, "k3")
    elif violation == "lost answer, retry applied twice":
        history[0]["lost"] = 1
        events += transfer("t14", "a", 4, "b", 4, 5, "k1")
    elif violation == "lost answer, refused retry applied":
        history[1]["lost"] = 1
        events += transfer("t15", "a", 4, "b", 4, 5, "k2")
    elif violation == "negative balance":
        events.append(event("a", 4, "FundsWithdrawn", 500))
    elif violation == "negative read":
        history.append({"op": "read", "balances": {"a": -1, "b": 201}})
    elif violation == "changed total":
        events.append(event("b", 4, "FundsDeposited", 1))
    elif violation == "refused but applied":
        events += transfer("t11", "a", 4, "b", 4, 5, "k2")
    elif violation == "transfer nobody sent":
        events += transfer("t12", "a", 4, "b", 4, 5, "k-unknown")
    elif violation == "failed request applied":
        history.append({"op": "transfer", "key": "k4", "outcome": "error"})
        events += transfer("t13", "a", 4, "b", 4, 5, "k4")
    elif violation == "undocumented answer":
        history[0]["unexpected"] = ["500 internal_error"]
    elif violation == "undocumented answer to a read":
        history[3]["unexpected"] = ["502 "]
    return history, events


@pytest.mark.parametrize(
    ("violation", "invariant"),
    [
        ("lost acknowledged transfer", 3),
        ("half transfer", 4),
        ("retry applied twice", 5),
        ("lost answer, retry applied twice", 5),
        ("lost answer, refused retry applied", 5),
        ("negative balance", 2),
        ("negative read", 2),
        ("changed total", 1),
        ("refused but applied", 3),
        ("transfer nobody sent", 3),
        ("failed request applied", 3),
        ("undocumented answer", 7),
        ("undocumented answer to a read", 7),
    ],
)
def test_each_planted_violation_is_reported(violation, invariant):
    history, events = plant(violation)
    for ordered in (True, False):
        report = check(history, events, 200, ordered=ordered)
        assert invariant in {v.invariant for v in report.violations}, (violation, report)


def hold(tid: str, versions: tuple[int, int], minor: int, key: str) -> list[RecordedEvent]:
    """A pending transfer from a to b, placed by ``key``."""
    return [event(account, version, "HoldPlaced", minor, transfer_id=tid, side=side,
                  counterparty_id=other, expires_at="", command_id=key)
            for account, version, side, other in (("a", versions[0], "debit", "b"),
                                                  ("b", versions[1], "credit", "a"))]  # fmt: skip


def released(tid: str, versions: tuple[int, int], minor: int, outcome: str, key: str):
    return [event(account, version, "HoldReleased", minor, transfer_id=tid, side=side,
                  outcome=outcome, command_id=key)
            for account, version, side in (("a", versions[0], "debit"),
                                           ("b", versions[1], "credit"))]  # fmt: skip


def run_with_holds():
    """h1 held and posted in part, h2 held and voided, h3 held and expired by the server."""
    history, events = clean_run()
    events += [*hold("h1", (4, 4), 20, "k5"), *released("h1", (5, 5), 20, "posted", "k5-post"),
               *transfer("h1", "a", 6, "b", 6, 10, "k5-post"),
               *hold("h2", (7, 7), 5, "k6"), *released("h2", (8, 8), 5, "voided", "k6-void"),
               *hold("h3", (9, 9), 5, "k7"), *released("h3", (10, 10), 5, "expired",
                                                        "expire-h3")]  # fmt: skip
    history += [{"op": "hold", "key": "k5", "outcome": "ok", "transfer_id": "h1"},
                {"op": "post", "key": "k5-post", "outcome": "ok", "transfer_id": "h1"},
                {"op": "hold", "key": "k6", "outcome": "ok", "transfer_id": "h2"},
                {"op": "void", "key": "k6-void", "outcome": "ok", "transfer_id": "h2"},
                {"op": "hold", "key": "k7", "outcome": "ok", "transfer_id": "h3"},
                {"op": "post", "key": "k7-post", "outcome": "refused", "transfer_id": "h3"},
                {"op": "hold", "key": "k8", "outcome": "refused"}]  # fmt: skip
    return history, events


def test_pending_transfers_posts_voids_and_expiries_are_checked_and_counted():
    history, events = run_with_holds()
    report = check(history, events, 200, ordered=True)
    assert report.ok, report.violations
    counts = report.counts
    assert (counts["hold_ok"], counts["hold_refused"], counts["post_ok"], counts["post_refused"],
            counts["void_ok"], counts["expired"]) == (3, 1, 1, 1, 1, 1)  # fmt: skip
    assert "posted / voided / expired" in render(report, ["title"])


@pytest.mark.parametrize(
    "violation",
    ["acknowledged void missing", "refused hold applied", "closed by nobody's key",
     "one void closing two", "refused post applied"],
)  # fmt: skip
def test_each_planted_violation_of_a_pending_transfer_is_reported(violation):
    history, events = run_with_holds()
    if violation == "acknowledged void missing":
        events = [e for e in events if e.metadata["command_id"] != "k6-void"]
    elif violation == "refused hold applied":
        events += hold("h9", (11, 11), 1, "k8")
    elif violation == "closed by nobody's key":
        events += [*hold("h9", (11, 11), 1, "k9"), *released("h9", (12, 12), 1, "voided", "x")]
        history.append({"op": "hold", "key": "k9", "outcome": "ok", "transfer_id": "h9"})
    elif violation == "one void closing two":
        events += [*hold("h9", (11, 11), 1, "k9"),
                   *released("h9", (12, 12), 1, "voided", "k6-void")]  # fmt: skip
        history.append({"op": "hold", "key": "k9", "outcome": "ok", "transfer_id": "h9"})
    elif violation == "refused post applied":
        events += [*released("h3", (11, 11), 5, "posted", "k7-post"),
                   *transfer("h3", "a", 12, "b", 12, 5, "k7-post")]  # fmt: skip
    report = check(history, events, 200, ordered=True)
    assert 3 in {v.invariant for v in report.violations}, (violation, report.violations)


def test_what_the_audit_after_recovery_found_is_a_violation_of_invariant_6():
    history, events = clean_run()
    report = check(history, events, 200, ordered=True,
                   recovery_problems=["audit: read_model_mismatch a v3: differs"])  # fmt: skip
    assert [(v.invariant, v.detail) for v in report.violations] == [
        (6, "audit: read_model_mismatch a v3: differs")]  # fmt: skip


def test_the_report_shows_counts_and_violations_side_by_side():
    history, events = plant("half transfer")
    text = render(check(history, events, 200, ordered=True), ["title"])
    assert "transfers attempted" in text and "4 every movement whole" in text
    assert "FAIL: 2 violation(s)" in text and "[4] transfer t1 is not whole" in text
    assert "PASS: 0 violation(s)" in render(check(*clean_run(), 200, ordered=True), ["title"])


# ------------------------------------------------------------------ transactions and reversals


def legs(tid: str, key: str, *sides: tuple[str, int, str, int], reverses: str = ""):
    """A transaction's ``LegPosted`` events, one per (account, version, direction, minor)."""
    return [event(account, version, "LegPosted", minor, transaction_id=tid, direction=direction,
                  reverses=reverses, command_id=key)
            for account, version, direction, minor in sides]  # fmt: skip


def recorded(version: int, original: str, reversal: str, minor: int, key: str,
             account: str = "a") -> RecordedEvent:  # fmt: skip
    """A ``ReversalRecorded``, by default on a, the debit account of every original here."""
    return event(account, version, "ReversalRecorded", minor, original_id=original,
                 reversal_id=reversal, command_id=key)  # fmt: skip


TOTAL_WITH_C = 300  # a, b and c opened with 100 each


def run_with_journal():
    """x1 (a pays b 10 and c 20) reversed by half (r1); t1 (a to b, 30) reversed by 10 (r2);
    a reversal refused (over what is left) and a transaction refused (insufficient funds)."""
    history, events = clean_run()
    events += [*opened("c", 100),
               *legs("x1", "k20", ("a", 4, "debit", 30), ("b", 4, "credit", 10),
                     ("c", 3, "credit", 20)),
               *legs("r1", "k21", ("a", 5, "credit", 15), ("b", 5, "debit", 5),
                     ("c", 4, "debit", 10), reverses="x1"),
               recorded(6, "x1", "r1", 15, "k21"),
               *transfer("r2", "b", 6, "a", 7, 10, "k22", reverses="t1"),
               recorded(8, "t1", "r2", 10, "k22")]  # fmt: skip
    history += [
        {"op": "transaction", "key": "k20", "outcome": "ok", "transaction_id": "x1",
         "legs": [["a", "debit", 30], ["b", "credit", 10], ["c", "credit", 20]]},
        {"op": "reverse", "key": "k21", "outcome": "ok", "transaction_id": "r1",
         "original": "x1", "amount_minor": 15},
        {"op": "reverse", "key": "k22", "outcome": "ok", "transfer_id": "r2", "original": "t1",
         "amount_minor": None},
        {"op": "reverse", "key": "k23", "outcome": "refused", "original": "t1",
         "amount_minor": 25},
        {"op": "transaction", "key": "k24", "outcome": "refused",
         "legs": [["b", "debit", 999], ["a", "credit", 999]]},
    ]  # fmt: skip
    return history, events


def test_transactions_and_reversals_are_checked_and_counted():
    history, events = run_with_journal()
    for ordered in (True, False):
        report = check(history, events, TOTAL_WITH_C, ordered=ordered)
        assert report.ok, report.violations
    counts = report.counts
    assert (counts["transaction_ok"], counts["transaction_refused"], counts["reverse_ok"],
            counts["reverse_refused"]) == (1, 1, 2, 1)  # fmt: skip


def test_a_transactions_legs_may_interleave_with_other_writes_in_the_feed():
    """The total is checked wherever no movement is part-way, not only at command boundaries."""
    history, events = run_with_journal()
    x1 = events[8:11]
    events[8:11] = [x1[0], event("c", 99, "FundsDeposited", 5), x1[1], x1[2]]
    assert check(history, events, TOTAL_WITH_C + 5, ordered=True).ok


def plant_in_journal(violation: str):
    history, events = run_with_journal()
    if violation == "transaction missing a leg":
        events = [e for e in events if e.event_id != "e-c-3-LegPosted"]
    elif violation == "unbalanced transaction":
        events += legs("x2", "k25", ("a", 9, "debit", 10), ("b", 7, "credit", 9))
        history.append({"op": "transaction", "key": "k25", "outcome": "ok",
                        "transaction_id": "x2", "legs": [["a", "debit", 10],
                                                         ["b", "credit", 9]]})  # fmt: skip
    elif violation == "a leg written by another command":
        events[10] = legs("x1", "k-other", ("c", 3, "credit", 20))[0]
    elif violation == "reversal stored twice":
        events += [*legs("r3", "k21", ("a", 9, "credit", 15), ("b", 7, "debit", 5),
                         ("c", 5, "debit", 10), reverses="x1"),
                   recorded(10, "x1", "r3", 15, "k21")]  # fmt: skip
    elif violation == "over-reversal":
        events += [*transfer("r4", "b", 7, "a", 9, 25, "k26", reverses="t1"),
                   recorded(10, "t1", "r4", 25, "k26")]  # fmt: skip
        history.append({"op": "reverse", "key": "k26", "outcome": "ok", "transfer_id": "r4",
                        "original": "t1", "amount_minor": 25})  # fmt: skip
    elif violation == "acknowledged transaction missing":
        history.append({"op": "transaction", "key": "k27", "outcome": "ok",
                        "transaction_id": "x9", "legs": [["a", "debit", 1],
                                                         ["b", "credit", 1]]})  # fmt: skip
    elif violation == "reversal without its record":
        events = [e for e in events if e.event_type != "ReversalRecorded"
                  or e.data["reversal_id"] != "r1"]  # fmt: skip
    elif violation == "reversal recorded that moved nothing":
        events.append(recorded(9, "t1", "r9", 5, "k23"))
    elif violation == "reversal out of proportion":
        events[12:14] = legs("r1", "k21", ("b", 5, "debit", 6), ("c", 4, "debit", 9),
                             reverses="x1")  # fmt: skip
    elif violation == "reversal recorded on another account":
        events += [*transfer("r6", "b", 7, "a", 9, 5, "k30", reverses="t1"),
                   recorded(8, "t1", "r6", 5, "k30", account="b")]  # fmt: skip
        history.append({"op": "reverse", "key": "k30", "outcome": "ok", "transfer_id": "r6",
                        "original": "t1", "amount_minor": 5})  # fmt: skip
    elif violation == "refused reversal applied":
        events += [*transfer("r5", "b", 7, "a", 9, 5, "k23", reverses="t1"),
                   recorded(10, "t1", "r5", 5, "k23")]  # fmt: skip
    elif violation == "transaction nobody sent":
        events += legs("x3", "k-unknown", ("a", 9, "debit", 1), ("b", 7, "credit", 1))
    elif violation == "other legs than sent":
        history[5]["legs"] = [["a", "debit", 30], ["b", "credit", 20], ["c", "credit", 10]]
    elif violation == "another original than asked":
        history[7]["original"] = "x1"
    return history, events


@pytest.mark.parametrize(
    ("violation", "invariant"),
    [
        ("transaction missing a leg", 4),
        ("unbalanced transaction", 4),
        ("a leg written by another command", 4),
        ("reversal stored twice", 3),
        ("over-reversal", 4),
        ("acknowledged transaction missing", 3),
        ("reversal without its record", 4),
        ("reversal recorded that moved nothing", 4),
        ("reversal out of proportion", 4),
        ("reversal recorded on another account", 4),
        ("refused reversal applied", 3),
        ("transaction nobody sent", 3),
        ("other legs than sent", 3),
        ("another original than asked", 3),
    ],
)
def test_each_planted_violation_of_a_transaction_or_reversal_is_reported(violation, invariant):
    history, events = plant_in_journal(violation)
    for ordered in (True, False):
        report = check(history, events, TOTAL_WITH_C, ordered=ordered)
        assert invariant in {v.invariant for v in report.violations}, (violation, report)


def test_an_unbalanced_transaction_made_good_later_fails_the_ordered_total():
    """Two transactions off by one each way leave the final total right: only the check at
    every point where no movement is part-way sees it."""
    history, events = run_with_journal()
    events += [*legs("x4", "k28", ("a", 9, "debit", 10), ("b", 7, "credit", 9)),
               *legs("x5", "k29", ("a", 10, "debit", 9), ("b", 8, "credit", 10))]  # fmt: skip
    ordered = check(history, events, TOTAL_WITH_C, ordered=True)
    assert any(v.invariant == 1 and "at position" in v.detail for v in ordered.violations)
    assert 1 not in {v.invariant for v in check(history, events, TOTAL_WITH_C,
                                                ordered=False).violations}  # fmt: skip
