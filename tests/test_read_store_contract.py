"""The read-model store contract, written once and run against every read-store engine."""

from __future__ import annotations

import pytest

from eventbank.engines.urls import open_read_store
from eventbank.ports.read_store import (
    BalanceRow,
    Change,
    CurrencyTotal,
    Failure,
    ReadStoreError,
    TransactionRow,
)

P = "accounts"


@pytest.fixture
def reads(read_store_url):
    handle = open_read_store(read_store_url)
    yield handle
    handle.close()


def row(account: str, version: int, balance: int, currency: str = "USD", status: str = "OPEN"):
    return BalanceRow(account, "Owner", "CHECKING", currency, balance, status, version,
                      f"2026-01-01T00:00:0{version}+00:00")  # fmt: skip


def move(account: str, version: int, amount: int, after: int, kind: str = "deposit", **extra):
    return TransactionRow(account, version, kind, amount, "USD", extra.get("counterparty"),
                          extra.get("transfer_id"), after, "2026-01-01T00:00:00+00:00")  # fmt: skip


def opened_and_funded(account: str, balance: int) -> list[Change]:
    return [Change(row(account, 1, 0), None),
            Change(row(account, 2, balance), move(account, 2, balance, balance))]  # fmt: skip


def test_changes_and_checkpoint_land_together(reads):
    assert reads.checkpoint(P) == 0
    reads.apply(P, opened_and_funded("a", 500), checkpoint=2)
    assert reads.balance("a") == row("a", 2, 500)
    assert reads.transactions("a") == [move("a", 2, 500, 500)]
    assert reads.checkpoint(P) == 2
    reads.apply(P, [], checkpoint=1)  # checkpoints never move backwards
    assert reads.checkpoint(P) == 2


def test_a_change_already_applied_is_skipped_not_double_counted(reads):
    reads.apply(P, opened_and_funded("a", 500))
    reads.apply(
        P,
        opened_and_funded("a", 500)
        + [Change(row("a", 3, 400), move("a", 3, 100, 400, "withdrawal"))],
    )
    assert reads.balance("a").balance_minor == 400
    assert [t.version for t in reads.transactions("a")] == [2, 3]


def test_a_change_beyond_the_next_version_is_refused_as_a_gap(reads):
    reads.apply(P, [Change(row("a", 1, 0), None)])
    with pytest.raises(ReadStoreError, match="gap"):
        reads.apply(P, [Change(row("b", 1, 0), None), Change(row("a", 3, 5), None)], checkpoint=9)
    assert reads.balance("a").version == 1
    assert reads.balance("b") is None  # the whole batch rolled back, checkpoint included
    assert reads.checkpoint(P) == 0


def test_an_absent_row_may_only_start_at_version_1(reads):
    with pytest.raises(ReadStoreError, match="gap"):
        reads.apply(P, [Change(row("late", 3, 5), None)])
    assert reads.balance("late") is None


def test_transactions_page_by_version_and_transfers_are_found_by_id(reads):
    reads.apply(P, opened_and_funded("a", 500) + opened_and_funded("b", 0)[:1])
    reads.apply(P, [
        Change(row("a", 3, 300), move("a", 3, 200, 300, "transfer_out", counterparty="b",
                                      transfer_id="t-1")),
        Change(row("b", 2, 200), move("b", 2, 200, 200, "transfer_in", counterparty="a",
                                      transfer_id="t-1")),
    ])  # fmt: skip
    assert [t.version for t in reads.transactions("a", after_version=2, limit=5)] == [3]
    assert [t.version for t in reads.transactions("a", after_version=0, limit=1)] == [2]
    halves = reads.transfer("t-1")
    assert [(t.account_id, t.kind) for t in halves] == [("a", "transfer_out"), ("b", "transfer_in")]
    assert reads.transfer("t-unknown") == []
    assert set(reads.balances(["a", "b", "nobody"])) == {"a", "b"}
    assert [r.account_id for r in reads.all_balances()] == ["a", "b"]


def test_totals_sum_balances_and_count_open_accounts_per_currency(reads):
    reads.apply(P, opened_and_funded("a", 500) + opened_and_funded("b", 250))
    reads.apply(P, [Change(row("e", 1, 0, currency="EUR"), None),
                    Change(row("c", 1, 0), None),
                    Change(row("c", 2, 0, status="CLOSED"), None)])  # fmt: skip
    assert reads.totals() == [CurrencyTotal("EUR", 1, 0), CurrencyTotal("USD", 2, 750)]


def test_failures_are_recorded_replaced_cleared_and_reset_forgets_everything(reads):
    failure = Failure(P, "a", 3, "RuntimeError: boom", 1, "2026-01-01T00:00:00+00:00",
                      "2026-01-01T00:00:01+00:00")  # fmt: skip
    reads.save_failure(failure)
    again = Failure(P, "a", 3, "RuntimeError: boom", 2, failure.first_failed_at,
                    "2026-01-01T00:00:03+00:00")  # fmt: skip
    reads.save_failure(again)
    assert reads.failures(P) == [again]
    reads.clear_failure(P, "a")
    assert reads.failures(P) == []

    reads.save_failure(failure)
    reads.apply(P, opened_and_funded("a", 500), checkpoint=2)
    reads.reset(P)
    assert (reads.balance("a"), reads.transactions("a"), reads.checkpoint(P)) == (None, [], 0)
    assert reads.failures(P) == [] and reads.totals() == []
