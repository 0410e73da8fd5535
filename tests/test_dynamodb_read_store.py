"""DynamoDB read-store behaviour beyond the shared contract, on DynamoDB Local: racing writers of
the same changes, totals kept in step with balances, exact big numbers, 40-digit checkpoints,
batched resets, and a table of the wrong shape refused."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from functools import partial

import pytest

from eventbank.engines.dynamodb.event_store import DynamoEventStore
from eventbank.engines.dynamodb.read_store import DynamoReadStore
from eventbank.ports.event_store import StoreError
from eventbank.ports.read_store import (
    BalanceRow,
    Change,
    CurrencyTotal,
    Failure,
    ReadStore,
    ReadStoreError,
    TransactionRow,
    TransferIndex,
)

P = "accounts"


@pytest.fixture
def open_reads(dynamodb_read_store_url: str):
    """Opens handles on one fresh table (each its own client, as separate processes would)."""
    opened: list[DynamoReadStore] = []

    def make() -> DynamoReadStore:
        opened.append(DynamoReadStore.from_url(dynamodb_read_store_url))
        return opened[-1]

    yield make
    for handle in opened:
        handle.close()


def row(account: str, version: int, balance: int, currency: str = "USD", status: str = "OPEN"):
    return BalanceRow(account, "Owner", "CHECKING", currency, balance, status, version,
                      "2026-01-01T00:00:00+00:00")  # fmt: skip


def chain(account: str, currency: str, length: int, rng: random.Random) -> list[Change]:
    """An account's changes from opening on: deposits, withdrawals, and maybe a close."""
    changes = [Change(row(account, 1, 0, currency), None)]
    balance = 0
    for version in range(2, length + 1):
        amount = rng.randint(1, 10_000)
        kind = "deposit" if amount > balance or rng.random() < 0.6 else "withdrawal"
        balance += amount if kind == "deposit" else -amount
        move = TransactionRow(account, version, kind, amount, currency, None, None, balance,
                              "2026-01-01T00:00:00+00:00")  # fmt: skip
        changes.append(Change(row(account, version, balance, currency), move))
    if rng.random() < 0.3:
        changes.append(Change(row(account, length + 1, balance, currency, "CLOSED"), None))
    return changes


def apply_in_batches(reads: ReadStore, changes: list[Change], size: int) -> None:
    for start in range(0, len(changes), size):
        reads.apply(P, changes[start : start + size])


def race(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` in threads released together; re-raise the first failure."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job: Callable[[], None]) -> None:
        start.wait()
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def expected_totals(finals: list[BalanceRow]) -> list[CurrencyTotal]:
    sums: dict[str, list[int]] = {}
    for r in finals:
        total = sums.setdefault(r.currency, [0, 0])
        total[0] += r.status == "OPEN"
        total[1] += r.balance_minor
    return [CurrencyTotal(c, n, minor) for c, (n, minor) in sorted(sums.items())]


def test_a_transfers_two_movements_in_one_batch_read_its_row_once(open_reads):
    """The second movement of a transfer takes the row's time from the first, not from
    another read; both accounts' index entries and the row carry that time."""
    reads = open_reads()
    reads.apply(P, [Change(row(a, 1, 0), None) for a in ("payer", "payee")])
    funded = TransactionRow("payer", 2, "deposit", 500, "USD", None, None, 500, "2026-01-01T00:00Z")
    reads.apply(P, [Change(row("payer", 2, 500), funded)])
    gets = []
    reads._ddb.meta.events.register("before-call.dynamodb.GetItem", lambda **_: gets.append(1))
    at = "2026-03-04T05:06:07.000008+00:00"
    reads.apply(P, [
        Change(row("payer", 3, 400), TransactionRow(
            "payer", 3, "transfer_out", 100, "USD", "payee", "t-1", 400, at)),
        Change(row("payee", 2, 100), TransactionRow(
            "payee", 2, "transfer_in", 100, "USD", "payer", "t-1", 100, at)),
    ])  # fmt: skip
    assert len(gets) == 1
    created = reads.transfer_rows(["t-1"])["t-1"].created_at
    assert created == "2026-03-04T05:06:07.000008Z"
    for account in ("payer", "payee"):
        (listed,) = reads.transfers_page(TransferIndex(account_id=account), ("", ""), "~", 10)
        assert (listed.transfer_id, listed.created_at) == ("t-1", created)
        assert (listed.from_account, listed.to_account) == ("payer", "payee")
        assert listed.moved_minor == 100


def test_two_threads_applying_the_same_changes_count_them_once(open_reads):
    first, second = open_reads(), open_reads()
    rng = random.Random(1)
    finals = []
    for n in range(5):
        changes = chain(f"acc-{n}", "USD", 20, rng)
        race(partial(apply_in_batches, first, changes, 7),
             partial(apply_in_batches, second, changes, 7))  # fmt: skip
        finals.append(changes[-1].row)
        assert first.balance(f"acc-{n}") == changes[-1].row
        assert first.transactions(f"acc-{n}", 0, 1_000) == [
            c.transaction for c in changes if c.transaction
        ]
    assert first.totals() == expected_totals(finals)


def test_a_change_overtaken_after_the_read_is_skipped_and_a_vanished_row_is_a_gap(open_reads):
    """The window between a batch's consistent read and its writes, opened deliberately: the
    row's version condition is what decides there."""
    late, other = open_reads(), open_reads()
    changes = chain("a", "USD", 6, random.Random(2))
    planned = late._plan(changes)  # read: nothing applied yet
    other.apply(P, changes)  # another writer gets there first
    for change, before in planned:
        late._write(change, before, {})  # every condition fails: skipped as already applied
    assert late.balance("a") == changes[-1].row
    assert late.totals() == expected_totals([changes[-1].row])

    [(following, before)] = late._plan([Change(row("a", changes[-1].row.version + 1, 0), None)])
    other.reset(P)  # the row is gone: writing the next version now would leave a hole below it
    with pytest.raises(ReadStoreError, match="gap"):
        late._write(following, before, {})
    assert late.all_balances() == [] and late.totals() == []


def test_totals_equal_the_sum_of_balances_after_concurrent_random_work(open_reads):
    rng = random.Random(3)
    chains = [chain(f"acc-{n}", ("USD", "EUR", "JPY")[n % 3], rng.randint(2, 12), rng)
              for n in range(9)]  # fmt: skip
    feed: list[Change] = []
    while any(chains):  # interleave the accounts, each in its own order
        feed.append(rng.choice([c for c in chains if c]).pop(0))
    race(*[partial(apply_in_batches, open_reads(), feed, size) for size in (5, 8, 13)])
    reads = open_reads()
    finals = list({c.row.account_id: c.row for c in feed}.values())
    assert reads.all_balances() == sorted(finals, key=lambda r: r.account_id)
    assert reads.totals() == expected_totals(finals)
    for r in finals:
        moves = [c.transaction for c in feed if c.row.account_id == r.account_id and c.transaction]
        assert reads.transactions(r.account_id, 0, 1_000) == moves


def test_money_beyond_float_precision_is_stored_and_summed_exactly(open_reads):
    reads = open_reads()
    huge = 10**17 - 1  # the largest balance; a float holds integers exactly only to 2**53
    reads.apply(P, [Change(row(f"rich-{n}", 1, huge), None) for n in range(3)])
    assert reads.balance("rich-0").balance_minor == huge
    assert reads.totals() == [CurrencyTotal("USD", 3, 3 * huge)]
    assert float(3 * huge) != 3 * huge


def test_checkpoints_compare_as_numbers_up_to_forty_digits(open_reads):
    reads = open_reads()
    for position, expected in [(99, 99), (100, 100), (9, 100), (10**39 + 7, 10**39 + 7),
                               (10**39 + 6, 10**39 + 7)]:  # fmt: skip
        reads.apply(P, [], checkpoint=position)
        assert reads.checkpoint(P) == expected
    with pytest.raises(ReadStoreError):
        reads.apply(P, [], checkpoint=10**40)


def test_reset_deletes_in_batches_and_keeps_other_projections_state(open_reads):
    reads = open_reads()
    rng = random.Random(4)
    for n in range(6):  # more than one 25-item delete batch
        reads.apply(P, chain(f"acc-{n}", "USD", 8, rng), checkpoint=n + 1)
    reads.save_failure(Failure(P, "acc-0", 3, "boom", 1, "t0", "t1"))
    kept = Failure("audit", "acc-1", 2, "boom", 1, "t0", "t1")
    reads.save_failure(kept)
    reads.apply("audit", [], checkpoint=42)

    reads.reset(P)
    assert (reads.all_balances(), reads.totals(), reads.checkpoint(P), reads.failures(P)) == (
        [], [], 0, []
    )  # fmt: skip
    assert reads.transactions("acc-0") == []
    assert (reads.checkpoint("audit"), reads.failures("audit")) == (42, [kept])


def test_an_event_table_is_not_taken_for_a_read_model_table(dynamodb_store_url):
    DynamoEventStore.from_url(dynamodb_store_url).close()
    with pytest.raises(StoreError, match="not an eventbank read-model table"):
        DynamoReadStore.from_url(dynamodb_store_url)
