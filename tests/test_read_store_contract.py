"""The read-model store contract, written once and run against every read-store engine."""

from __future__ import annotations

import dataclasses
import time

import pytest

from eventbank.application import queries
from eventbank.application.queries import AccountQueries
from eventbank.domain.errors import InvalidInput
from eventbank.engines.dynamodb import read_store as dynamodb_read_store
from eventbank.engines.dynamodb.read_store import DynamoReadStore
from eventbank.engines.sqlite import read_store as sqlite_read_store
from eventbank.engines.sqlite.connection import SqliteFile
from eventbank.engines.sqlite.read_store import SqliteReadStore
from eventbank.engines.urls import open_read_store
from eventbank.ports.event_store import StoreUnavailable
from eventbank.ports.read_store import (
    MAX_ACCOUNTS_PAGE,
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


def test_a_checkpoint_asked_to_move_from_where_it_stands_moves_only_from_there(reads):
    reads.apply(P, opened_and_funded("a", 500), checkpoint=2, only_from=1)
    assert reads.balance("a").version == 2  # the changes land either way ...
    assert reads.checkpoint(P) == 0  # ... the checkpoint only where it stood
    reads.apply(P, [], checkpoint=2, only_from=0)  # a missing checkpoint stands at 0
    assert reads.checkpoint(P) == 2
    reads.apply(P, [], checkpoint=7, only_from=5)
    assert reads.checkpoint(P) == 2
    reads.apply(P, [], checkpoint=7, only_from=2)
    assert reads.checkpoint(P) == 7
    reads.apply(P, [], checkpoint=9, only_from=0)  # not at 0 any more
    assert reads.checkpoint(P) == 7


def test_a_change_already_applied_is_skipped_not_double_counted(reads):
    reads.apply(P, opened_and_funded("a", 500))
    reads.apply(
        P,
        opened_and_funded("a", 500)
        + [Change(row("a", 3, 400), move("a", 3, 100, 400, "withdrawal"))],
    )
    assert reads.balance("a").balance_minor == 400
    assert [t.version for t in reads.transactions("a")] == [2, 3]


def test_a_batch_of_many_accounts_lands_whole_and_again_changes_nothing(reads):
    """Several accounts, each with a run of changes, in one batch (written together where an
    engine can), then the same batch again beside one more account's changes already applied
    (each change then on its own): every row ends where its last change leaves it, and nothing
    is counted twice."""
    reads.apply(P, opened_and_funded("c", 70))
    batch = [
        change
        for account, funds in (("a", 500), ("b", 300))
        for change in [
            *opened_and_funded(account, funds),
            Change(row(account, 3, funds - 1), move(account, 3, 1, funds - 1, "withdrawal")),
        ]
    ]
    batch.append(Change(row("d", 1, 0), None))
    expected = [row("a", 3, 499), row("b", 3, 299), row("c", 2, 70), row("d", 1, 0)]
    for again in ([], opened_and_funded("c", 70)):
        reads.apply(P, batch + again)
        assert [reads.balance(a) for a in "abcd"] == expected
        moves = [[t.version for t in reads.transactions(a)] for a in "abcd"]
        assert moves == [[2, 3], [2, 3], [2], []]


def test_a_change_beyond_the_next_version_is_refused_as_a_gap(reads):
    reads.apply(P, [Change(row("a", 1, 0), None)])
    paid = {"counterparty": "b", "transfer_id": "t-1"}
    with pytest.raises(ReadStoreError, match="gap"):
        reads.apply(P, [
            *opened_and_funded("b", 5),
            Change(row("a", 3, 5), move("a", 3, 5, 5, "transfer_in", **paid)),
        ], checkpoint=9)  # fmt: skip
    assert reads.balance("a").version == 1
    assert reads.balance("b") is None  # the whole batch rolled back, checkpoint included
    assert reads.transactions("a") == reads.transactions("b") == []  # and every movement
    assert reads.transfer("t-1") == []
    assert reads.checkpoint(P) == 0


def test_a_change_ahead_of_its_row_is_a_gap_though_a_later_one_repeats_it_in_order(reads):
    """Each change is judged where its row stands when it comes: v4 on a row at v2 is a gap,
    whatever the batch does after it (here v3 and v4 again)."""
    reads.apply(P, opened_and_funded("a", 500))
    ahead, next_one = Change(row("a", 4, 300), None), Change(row("a", 3, 400), None)
    with pytest.raises(ReadStoreError, match="gap"):
        reads.apply(P, [ahead, next_one, ahead])
    assert reads.balance("a").version == 2


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


NASTY_TEXT = 'O\'Brien "the \\ payer" {"x": [1]}\n naïve 💸 \u2028 ✓'


def test_text_that_json_escapes_reads_back_as_written(reads):
    """Rows travel as engine-specific parameters (PostgreSQL: one JSON document of rows);
    no quote, backslash, newline or non-ASCII character may be changed on the way."""
    opened = dataclasses.replace(row("a", 1, 0), owner=NASTY_TEXT)
    funded = dataclasses.replace(opened, version=2, balance_minor=500)
    moved = dataclasses.replace(
        move("a", 2, 500, 500, transfer_id="t-1"),
        metadata={NASTY_TEXT: NASTY_TEXT},
        description=NASTY_TEXT,
    )
    reads.apply(P, [Change(opened, None), Change(funded, moved)])
    assert reads.balance("a") == funded
    assert reads.transactions("a") == [moved]


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


def test_totals_are_exact_past_two_to_the_63(reads):
    """A currency's total past 2**63 - 1 (SQLite's SUM raised "integer overflow" there) is
    summed exactly: no overflow, no float, no rounding. The domain caps a balance at 10**17, so
    93 accounts get there; three bigger rows make the same sum here, quickly on every engine."""
    balances = [4 * 10**18 + 1, 4 * 10**18 - 1, 2 * 10**18 + 7]
    reads.apply(P, [Change(row(f"rich-{n}", 1, b, currency="JPY"), None)
                    for n, b in enumerate(balances)])  # fmt: skip
    reads.apply(P, [Change(row("poor", 1, 5, currency="USD"), None)])
    exact = sum(balances)
    assert exact > 2**63 - 1 and float(exact) != exact
    assert reads.totals() == [CurrencyTotal("JPY", 3, exact), CurrencyTotal("USD", 1, 5)]


def test_accounts_are_listed_in_id_order_a_page_at_a_time(reads):
    ids = ["b", "a-1", "Z", "A-1", "a", "0", "b.2"]  # code point order: 0 A-1 Z a a-1 b b.2
    reads.apply(P, [Change(row(i, 1, 10), None) for i in ids])
    reads.apply(P, [Change(row("Z", 2, 10, status="CLOSED"), None)])  # closed ones are listed
    in_order = sorted(ids)
    assert [r.account_id for r in reads.accounts_page("", 100)] == in_order
    assert reads.accounts_page("", 1) == [row("0", 1, 10)]
    assert reads.accounts_page("A-1", 1) == [row("Z", 2, 10, status="CLOSED")]
    pages, after = [], ""
    while page := reads.accounts_page(after, 3):
        pages.append([r.account_id for r in page])
        after = page[-1].account_id
    assert pages == [in_order[:3], in_order[3:6], in_order[6:]]
    assert [r.account_id for r in reads.accounts_page("a-", 2)] == ["a-1", "b"]
    assert reads.accounts_page("b.2", 5) == []
    for bad in (0, MAX_ACCOUNTS_PAGE + 1):
        with pytest.raises(InvalidInput):
            reads.accounts_page("", bad)


def test_a_sqlite_read_store_of_the_first_schema_is_upgraded_to_exact_totals(
    sqlite_read_store_url,
):
    path = sqlite_read_store_url.removeprefix("sqlite:///")
    SqliteFile(path, sqlite_read_store._MIGRATIONS[:1]).close()  # as eventbank made it before
    old = SqliteReadStore(path)
    old.apply(P, [Change(row(f"rich-{n}", 1, 10**17, currency="JPY"), None) for n in range(93)])
    assert old.totals() == [CurrencyTotal("JPY", 93, 93 * 10**17)]
    old.close()


def test_a_dynamodb_read_table_made_before_the_accounts_index_gets_it(
    dynamodb_local, dynamodb_read_store_url
):
    table = dynamodb_read_store_url.removeprefix("dynamodb://").split("?")[0]
    client = dynamodb_local.client()
    key = [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}]
    client.create_table(TableName=table, KeySchema=key, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"}
                                              for n in ("PK", "SK")])  # fmt: skip
    for n in range(3):  # rows as an eventbank without the index wrote them
        client.put_item(TableName=table, Item=dynamodb_read_store._row_item(row(f"old-{n}", 1, n)))
    reads = DynamoReadStore.from_url(dynamodb_read_store_url)
    try:
        deadline = time.monotonic() + 30
        while True:  # DynamoDB backfills the index in the background
            try:
                listed = reads.accounts_page("", 10)
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the index was never built"
                time.sleep(0.2)
        assert listed == [row(f"old-{n}", 1, n) for n in range(3)]
        reads.apply(P, [Change(row("new", 1, 7), None)])
        assert [r.account_id for r in reads.accounts_page("old-2", 10)] == []
        assert [r.account_id for r in reads.accounts_page("", 10)][0] == "new"
    finally:
        reads.close()
        client.close()


class CountingReads:
    """A read store that counts the balance rows its reads return."""

    def __init__(self, store):
        self.store, self.rows_read = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def accounts_page(self, after="", limit=100):
        page = self.store.accounts_page(after, limit)
        self.rows_read += len(page)
        return page

    def all_balances(self):
        rows = self.store.all_balances()
        self.rows_read += len(rows)
        return rows


def test_an_account_search_reads_a_bounded_number_of_rows_and_pages_on(reads, monkeypatch):
    """GET /accounts: a page reads limit + 1 rows, a search at most SEARCH_SCAN (here 10), so
    a rare match costs no more than a common one; its cursor goes on from the last row read."""
    monkeypatch.setattr(queries, "SEARCH_SCAN", 10, raising=False)
    monkeypatch.setattr(queries, "SEARCH_CHUNK", 4, raising=False)
    rare = {"acc-03", "acc-17", "acc-25"}
    reads.apply(P, [Change(BalanceRow(f"acc-{n:02}", "Zed Smith" if f"acc-{n:02}" in rare
                                      else "Ann", "CHECKING", "USD", n, "OPEN", 1, "t"), None)
                    for n in range(30)])  # fmt: skip
    counting = CountingReads(reads)
    find = AccountQueries(counting, None).find_accounts

    items, after = find("", "", 5)
    assert [a["account_id"] for a in items] == [f"acc-{n:02}" for n in range(5)]
    assert (after, counting.rows_read) == ("acc-04", 6)

    pages = []
    after = ""
    while after is not None:
        counting.rows_read = 0
        items, after = find("SMITH", after, 2)  # any case, id or owner
        assert counting.rows_read <= 10
        pages.append(([a["account_id"] for a in items], after))
    assert pages == [(["acc-03"], "acc-09"), (["acc-17"], "acc-19"), (["acc-25"], "acc-29"),
                     ([], None)]  # fmt: skip

    items, after = find("acc-0", "", 3)  # a full page: the cursor is the last id returned
    assert ([a["account_id"] for a in items], after) == (["acc-00", "acc-01", "acc-02"], "acc-02")
