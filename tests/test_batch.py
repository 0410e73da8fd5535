"""Batches of transfers (``POST /transfers/batch``, ``eventbank transfer --batch``): each item
has its own key and outcome, in order; a replay moves nothing more; ``atomic`` is all or none.
The service tests run on every engine; HTTP and the CLI (thin layers over it) on SQLite."""

from __future__ import annotations

import json
import random
import uuid

import pytest
from fastapi.testclient import TestClient

from eventbank.application.batch import BatchItem, ItemResult
from eventbank.application.observability import Metrics
from eventbank.application.service import LedgerService
from eventbank.domain.errors import InvalidInput
from eventbank.engines.urls import open_store
from eventbank.http.app import create_app
from eventbank.http.auth import TokenStore, add_token
from eventbank.ports.event_store import BatchTooLarge, StoreUnavailable
from eventbank.wiring import open_ledger
from tests.test_cli import cli_against


def item(from_id: str, to_id: str, amount: str, key: str | None) -> BatchItem:
    return BatchItem(from_id, to_id, amount, key)


def opened(service: LedgerService, **balances: str | None) -> None:
    for account_id, balance in balances.items():
        service.open_account(account_id, owner=account_id.title(), account_type="CHECKING",
                             initial_deposit=balance)  # fmt: skip


def outcomes(results: list[ItemResult]) -> list[tuple[str, str | None]]:
    return [(r.status, r.error.code if r.error else None) for r in results]


def balances(service: LedgerService, *ids: str) -> list[str]:
    return [service.get_account(i).describe()["balance"] for i in ids]


def event_counts(store, *ids: str) -> list[int]:
    return [len(store.read_stream(i)) for i in ids]


MIXED = [
    item("alice", "bob", "10.00", "k-valid"),  # 0 ok
    item("carol", "bob", "50.00", "k-poor"),  # 1 carol has 5.00
    item("alice", "nobody", "1.00", "k-unknown"),  # 2
    item("alice", "bob", "1.234", "k-cents"),  # 3 USD has 2 decimals
    item("alice", "bob", "20.00", "k-twice-1"),  # 4 the same accounts twice in a row
    item("alice", "bob", "20.00", "k-twice-2"),  # 5
    item("alice", "bob", "1.00", None),  # 6 no key: a retry would pay twice
    item("alice", "bob", "1.00", "k-valid"),  # 7 item 0's key
    item("alice", "bob", "60.00", "k-overdraw"),  # 8 alice has 50.00 left by then
    BatchItem("", "", "", "k-garbled", malformed=InvalidInput("unreadable")),  # 9 (interface)
    item("bob", "alice", "5.00", "k-back"),  # 10 on what 0, 4 and 5 paid bob
]
MIXED_OUTCOMES = [
    ("ok", None), ("refused", "insufficient_funds"), ("refused", "account_not_found"),
    ("refused", "invalid_amount"), ("ok", None), ("ok", None), ("refused", "validation_error"),
    ("refused", "idempotency_key_reused"), ("refused", "insufficient_funds"),
    ("refused", "validation_error"), ("ok", None),
]  # fmt: skip


# ------------------------------------------------------------------ the service, every engine


def test_a_mixed_batch_answers_each_item_in_order_and_a_replay_moves_nothing_more(service, store):
    opened(service, alice="100.00", bob=None, carol="5.00")
    before = event_counts(store, "alice", "bob", "carol")

    results = service.transfer_batch(MIXED)
    assert [r.index for r in results] == list(range(len(MIXED)))
    assert [r.idempotency_key for r in results] == [i.idempotency_key for i in MIXED]
    assert outcomes(results) == MIXED_OUTCOMES
    assert [results[i].outcome["from"]["balance"] for i in (0, 4, 5, 10)] == [
        "90.00", "70.00", "50.00", "45.00"]  # fmt: skip
    assert "item 0's too" in str(results[7].error)
    assert balances(service, "alice", "bob", "carol") == ["55.00", "45.00", "5.00"]
    after = [before[0] + 4, before[1] + 4, before[2]]  # exactly the four valid transfers' events
    assert event_counts(store, "alice", "bob", "carol") == after

    again = service.transfer_batch(MIXED)
    assert outcomes(again) == [("replayed", None) if o == ("ok", None) else o
                               for o in MIXED_OUTCOMES]  # fmt: skip
    assert [again[i].outcome for i in (0, 4, 5, 10)] == [results[i].outcome for i in (0, 4, 5, 10)]
    assert balances(service, "alice", "bob", "carol") == ["55.00", "45.00", "5.00"]
    assert event_counts(store, "alice", "bob", "carol") == after


def test_an_item_key_used_before_with_other_parameters_is_refused_alone(service):
    opened(service, alice="100.00", bob=None)
    service.transfer("alice", "bob", "1.00", command_id="k-single")

    results = service.transfer_batch([
        item("alice", "bob", "2.00", "k-single"),  # the key of another transfer
        item("alice", "bob", "1.00", "k-fresh"),
        item("alice", "bob", "1.00", "k-single2"),
    ])  # fmt: skip
    assert outcomes(results) == [("refused", "idempotency_key_reused"), ("ok", None), ("ok", None)]
    # the same key and parameters as the single transfer: that transfer, replayed
    same = service.transfer_batch([item("alice", "bob", "1.00", "k-single")])
    assert outcomes(same) == [("replayed", None)]
    assert balances(service, "alice", "bob") == ["97.00", "3.00"]


def test_an_atomic_batch_is_all_or_none_and_each_item_keeps_its_key(service, store):
    opened(service, alice="100.00", bob=None, carol="5.00")
    before = event_counts(store, "alice", "bob", "carol")
    failing = [item("alice", "bob", "10.00", "a-1"), item("bob", "carol", "10.00", "a-2"),
               item("carol", "alice", "50.00", "a-3")]  # fmt: skip

    results = service.transfer_batch(failing, atomic=True)
    assert outcomes(results) == [("refused", "batch_aborted"), ("refused", "batch_aborted"),
                                 ("refused", "insufficient_funds")]  # fmt: skip
    assert "item 2 was refused" in str(results[0].error)
    assert "balance 15.00 USD" in str(results[2].error)  # decided after items 0 and 1
    assert event_counts(store, "alice", "bob", "carol") == before
    assert all(store.find_command(f"a-{n}") is None for n in (1, 2, 3))

    working = [*failing[:2], item("carol", "alice", "15.00", "a-3")]
    assert outcomes(service.transfer_batch(working, atomic=True)) == [("ok", None)] * 3
    assert balances(service, "alice", "bob", "carol") == ["105.00", "0.00", "0.00"]
    assert outcomes(service.transfer_batch(working, atomic=True)) == [("replayed", None)] * 3
    # each item was recorded under its own key: a single transfer replays it
    assert service.transfer("bob", "carol", "10.00", command_id="a-2").replayed
    reused = [item("alice", "bob", "1.00", "a-new"), item("alice", "bob", "9.99", "a-1")]
    assert outcomes(service.transfer_batch(reused, atomic=True)) == [
        ("refused", "batch_aborted"), ("refused", "idempotency_key_reused")]  # fmt: skip
    malformed = [item("alice", "bob", "1.00", "a-new"), item("alice", "bob", "1.00", None)]
    assert outcomes(service.transfer_batch(malformed, atomic=True)) == [
        ("refused", "batch_aborted"), ("refused", "validation_error")]  # fmt: skip
    assert balances(service, "alice", "bob", "carol") == ["105.00", "0.00", "0.00"]


def test_an_atomic_batch_beyond_one_append_is_refused_whole_naming_the_limit(
    service, store, store_url
):
    """20 transfers between two accounts are 102 DynamoDB transaction items (5 per transfer,
    1 per account): over its limit of 100. The SQL engines write them in one transaction."""
    opened(service, alice="100.00", bob=None)
    before = event_counts(store, "alice", "bob")
    twenty = [item("alice", "bob", "1.00", f"big-{n}") for n in range(20)]
    if store_url.startswith("dynamodb"):
        with pytest.raises(BatchTooLarge, match="102 DynamoDB transaction items; the limit is 100"):
            service.transfer_batch(twenty, atomic=True)
        assert event_counts(store, "alice", "bob") == before
        assert store.find_command("big-0") is None
        assert outcomes(service.transfer_batch(twenty[:19], atomic=True)) == [("ok", None)] * 19
    else:
        assert outcomes(service.transfer_batch(twenty, atomic=True)) == [("ok", None)] * 20


# ------------------------------------------------------------------ SQLite: how it is written


@pytest.fixture
def sqlite_service(sqlite_store_url):
    store = open_store(sqlite_store_url)
    yield LedgerService(store)
    store.close()


def test_a_batch_holds_1_to_1000_transfers(sqlite_service):
    with pytest.raises(BatchTooLarge, match="1,001 transfers in one batch; the limit is 1,000"):
        sqlite_service.transfer_batch([item("a", "b", "1.00", f"k{n}") for n in range(1001)])
    with pytest.raises(InvalidInput, match="at least one"):
        sqlite_service.transfer_batch([])


def test_a_1000_item_batch_is_written_in_two_appends_not_one_by_one(sqlite_service):
    """Items decided together are written together: 500 transfers (1,000 events, one append's
    limit) to an append, the refused ones left out (transfer_batches.py, ``_batch_together``)."""
    service = sqlite_service
    accounts = [f"acc-{n}" for n in range(20)]
    opened(service, **dict.fromkeys(accounts, "1000.00"))
    rng = random.Random(7)
    batch = [item(*rng.sample(accounts, 2), f"{rng.randint(1, 500)}.00", f"g-{n}")
             for n in range(1000)]  # fmt: skip
    transactions = service.store.group_commit.transactions

    results = service.transfer_batch(batch)
    assert {outcome for outcome in outcomes(results)} == {
        ("ok", None), ("refused", "insufficient_funds")}  # fmt: skip
    assert transactions < service.store.group_commit.transactions <= transactions + 2
    total = sum(service.get_account(a).balance_minor for a in accounts)
    assert total == 20 * 1000_00  # transfers move money, never make or lose it


def test_items_on_the_same_accounts_have_the_outcomes_of_running_them_one_by_one(
    service, store_url, tmp_path
):
    """Tight balances make items refused in the middle of runs on the same account: a refusal
    decided on a state the batch's own queued appends leave counts once they are written; on
    DynamoDB, items run a few at a time, each after the ones before it on its accounts."""
    one_by_one = LedgerService(open_store(f"sqlite:///{tmp_path / 'alone.db'}"))
    rng = random.Random(3)
    accounts = ["a", "b", "c", "d", "e", "f"]
    count = 60 if store_url.startswith("dynamodb") else 300
    batch = [item(*rng.sample(accounts, 2), f"{rng.randint(1, 60)}.00", f"o-{n}")
             for n in range(count)]  # fmt: skip
    for each in (service, one_by_one):
        opened(each, **dict.fromkeys(accounts, "50.00"))
    expected = []
    for each in batch:
        try:
            one_by_one.transfer(each.from_account_id, each.to_account_id, each.amount,
                                command_id=each.idempotency_key)  # fmt: skip
            expected.append(("ok", None))
        except Exception as exc:  # noqa: BLE001 - its code is the expected outcome
            expected.append(("refused", exc.code))
    assert 0.2 < expected.count(("ok", None)) / count < 0.8  # both, interleaved

    assert outcomes(service.transfer_batch(batch)) == expected
    assert balances(service, *accounts) == balances(one_by_one, *accounts)
    one_by_one.store.close()


def test_an_item_refused_on_a_stale_cached_account_is_decided_again_on_the_stores(make_store):
    """A refusal decided on a cached state counts only once decided again on the store's, as
    for one command; the items after it go on either way."""
    ours, theirs = LedgerService(make_store()), LedgerService(make_store())
    opened(ours, poor="1.00", rich="100.00", payee=None)
    theirs.deposit("poor", "50.00")  # another process: `ours` still holds 1.00
    results = ours.transfer_batch([
        item("rich", "payee", "1.00", "s-0"),
        item("poor", "payee", "20.00", "s-1"),  # refused on the cached 1.00; 51.00 in the store
        item("poor", "payee", "40.00", "s-2"),  # 31.00 left: refused
        item("rich", "payee", "2.00", "s-3"),
    ])  # fmt: skip
    assert outcomes(results) == [
        ("ok", None), ("ok", None), ("refused", "insufficient_funds"), ("ok", None)]  # fmt: skip
    assert balances(LedgerService(make_store()), "poor", "rich", "payee") == [
        "31.00", "97.00", "23.00"]  # fmt: skip
    theirs.deposit("poor", "100.00")  # `ours` holds 31.00: every item refused on it
    assert outcomes(ours.transfer_batch([item("poor", "payee", "50.00", "s-4")])) == [
        ("ok", None)]  # fmt: skip
    assert balances(ours, "poor", "payee") == ["81.00", "73.00"]


def test_items_whose_append_met_another_writer_are_decided_together_again(sqlite_store_url):
    """A chunk refused for a conflict wrote nothing: its items are decided together again on
    the store's newer state, not each in an append of its own."""
    ours, theirs = (LedgerService(open_store(sqlite_store_url)) for _ in range(2))
    accounts = [f"w{n}" for n in range(10)]
    opened(ours, **dict.fromkeys(accounts, "100.00"))
    theirs.deposit("w0", "5.00")  # another process: `ours` still holds w0 at 100.00
    group = ours.store.group_commit
    appends = group.appends
    pairs = zip(accounts, accounts[1:], strict=False)  # w0 -> w1, ..., w8 -> w9
    results = ours.transfer_batch([item(a, b, "1.00", f"w-{n}") for n, (a, b) in enumerate(pairs)])
    assert {outcome for outcome in outcomes(results)} == {("ok", None)}
    assert group.appends - appends == 1  # one per item had they been run one by one
    assert balances(ours, "w0", "w5", "w9") == ["104.00", "100.00", "101.00"]
    ours.store.close()
    theirs.store.close()


class LosesAppends:
    """A group-committing store whose queued appends numbered in ``lose`` fail with
    StoreUnavailable: never written (``lose[n]`` False; the appends queued after it on its
    streams, built on it, are refused), or written with the answer lost (True)."""

    def __init__(self, store, lose: dict[int, bool]):
        self._store, self.lose, self.submitted = store, lose, 0

    def __getattr__(self, name):
        return getattr(self._store, name)

    def append(self, events, expected_versions, command=None):
        return self.submit_append(events, expected_versions, command)()

    def submit_append(self, events, expected_versions, command=None, previous_hashes=None):
        self.submitted += 1
        if self.submitted not in self.lose:
            return self._store.submit_append(events, expected_versions, command, previous_hashes)
        wait = (self._store.submit_append(events, expected_versions, command, previous_hashes)
                if self.lose[self.submitted] else lambda: None)  # fmt: skip

        def lost():
            wait()
            raise StoreUnavailable("the connection was lost")

        return lost


class AppendsAtOnce:
    """The store without ``submit_append``: the service appends at once, as on DynamoDB."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def append(self, events, expected_versions, command=None):
        return self._store.append(events, expected_versions, command)


@pytest.mark.parametrize("landed", [False, True], ids=["not-written", "answer-lost"])
@pytest.mark.parametrize(
    ("queued", "lost_before", "lose", "lost_items"),
    [
        (True, {}, 1, range(10)),  # the one append all ten items were written together in
        (True, {1: False}, 4, [2]),  # that one not written, then item 2's own (the 3rd after)
        (False, {}, 3, [2]),  # item 2's append, with no group commit
    ],
    ids=["together", "item-by-item", "at-once"],
)
def test_an_append_that_fails_mid_batch_is_retried_and_moves_money_once(
    sqlite_store_url, landed, queued, lost_before, lose, lost_items
):
    """The items whose append was lost are retried and, where it was written, answered as
    replayed: either way each moves its money once."""
    real = open_store(sqlite_store_url)
    service = LedgerService(real)
    opened(service, alice="100.00", bob=None)
    flaky = LosesAppends(real, {**lost_before, lose: landed})
    service = LedgerService(flaky if queued else AppendsAtOnce(flaky))
    batch = [item("alice", "bob", "1.00", f"r-{n}") for n in range(10)]

    results = service.transfer_batch(batch)
    assert [r.status for r in results] == [
        "replayed" if landed and n in lost_items else "ok" for n in range(10)]  # fmt: skip
    assert balances(service, "alice", "bob") == ["90.00", "10.00"]
    assert len(real.read_stream("bob")) == 1 + 10
    real.close()


# ------------------------------------------------------------------ over HTTP (in process)


@pytest.fixture
def teller(sqlite_store_url, tmp_path):
    ledger = open_ledger(sqlite_store_url, f"sqlite:///{tmp_path / 'read.db'}")
    tokens_file = tmp_path / "tokens.json"
    secret = add_token(tokens_file, "batcher", "teller")
    app = create_app(ledger, TokenStore.load(tokens_file), Metrics())
    opened(ledger.service, alice="100.00", bob=None, carol="5.00")
    with TestClient(app, headers={"Authorization": f"Bearer {secret}"}) as client:
        yield client
    ledger.close()


def body_of(batch: list[BatchItem]) -> list[dict]:
    return [{"from_account_id": i.from_account_id, "to_account_id": i.to_account_id,
             "amount": i.amount, "idempotency_key": i.idempotency_key} for i in batch]  # fmt: skip


def test_post_transfers_batch_answers_each_item_in_order(teller):
    items = body_of(MIXED[:9]) + [
        {"from_account_id": "alice", "to_account_id": "bob", "amount": 5, "idempotency_key": "n"},
        "not an object",
        {"from_account_id": "bob", "to_account_id": "alice", "amount": "5.00",
         "idempotency_key": "k-back"},
    ]  # fmt: skip
    response = teller.post("/transfers/batch", json={"items": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["succeeded"], body["refused"], body["replayed"]) == (4, 8, 0)
    statuses = [(r["status"], r.get("error", {}).get("code")) for r in body["results"]]
    assert statuses == MIXED_OUTCOMES[:9] + [("refused", "validation_error")] * 2 + [("ok", None)]
    first, number = body["results"][0], body["results"][9]
    assert first["index"] == 0 and first["idempotency_key"] == "k-valid" and "error" not in first
    assert (first["transfer"]["kind"], first["transfer"]["command_id"]) == ("transfer", "k-valid")
    assert first["transfer"]["from"]["balance"] == "90.00"
    assert number["idempotency_key"] == "n" and "not a JSON number" in number["error"]["detail"]
    assert body["results"][1]["error"] == {
        "type": "/problems/insufficient_funds",
        "code": "insufficient_funds",
        "detail": "insufficient funds in 'carol': available 5.00 USD (balance 5.00 USD), "
        "requested 50.00 USD",
    }
    assert "Idempotent-Replayed" not in response.headers

    valid = [items[i] for i in (0, 4, 5, 11)]
    again = teller.post("/transfers/batch", json={"items": valid})
    assert [r["status"] for r in again.json()["results"]] == ["replayed"] * 4
    assert again.headers["Idempotent-Replayed"] == "true"
    assert teller.get("/accounts/alice").json()["balance"] == "55.00"


def test_a_batch_over_1000_items_is_a_422_and_1000_items_over_64_kib_are_welcome(teller):
    key = "k" * 120
    too_many = [{"from_account_id": "alice", "to_account_id": "bob", "amount": "0.01",
                 "idempotency_key": f"{key}-{n}"} for n in range(1001)]  # fmt: skip
    refused = teller.post("/transfers/batch", json={"items": too_many})
    assert refused.status_code == 422
    assert refused.json()["code"] == "batch_too_large" and "1,000" in refused.json()["detail"]

    thousand = json.dumps({"items": too_many[:1000]})
    assert len(thousand) > 64 * 1024
    done = teller.post("/transfers/batch", content=thousand,
                       headers={"Content-Type": "application/json"})  # fmt: skip
    assert done.status_code == 200, done.text
    assert done.json()["succeeded"] == 1000
    assert teller.get("/accounts/alice").json()["balance"] == "90.00"


@pytest.mark.parametrize(
    "body",
    [{"items": []}, {"items": [], "atomic": "yes"}, {"atomic": True}, {"items": "x"},
     {"items": [{}], "extra": 1}],
    ids=["empty", "atomic-not-a-boolean", "no-items", "items-not-a-list", "unknown-field"],
)  # fmt: skip
def test_a_malformed_batch_is_a_422_and_moves_nothing(teller, body):
    response = teller.post("/transfers/batch", json=body)
    assert response.status_code == 422, response.text
    assert teller.get("/accounts/alice").json()["balance"] == "100.00"


def test_an_atomic_batch_over_http_moves_nothing_when_an_item_is_refused(teller):
    items = body_of([item("alice", "bob", "10.00", "h-1"), item("carol", "bob", "6.00", "h-2")])
    response = teller.post("/transfers/batch", json={"items": items, "atomic": True})
    assert response.status_code == 200
    assert [r["error"]["code"] for r in response.json()["results"]] == [
        "batch_aborted", "insufficient_funds"]  # fmt: skip
    assert teller.get("/accounts/alice").json()["balance"] == "100.00"


# ------------------------------------------------------------------ the CLI


@pytest.fixture
def cli(sqlite_store_url, tmp_path, capsys, monkeypatch):
    run = cli_against(
        sqlite_store_url, f"sqlite:///{tmp_path / 'cli.read.db'}", monkeypatch, capsys
    )
    assert run("init")[0] == 0
    for account, deposit in (("alice", ["--initial-deposit", "100"]), ("bob", [])):
        assert run("open", account, "--owner", "X", "--type", "CHECKING", *deposit)[0] == 0
    return run


def test_transfer_batch_from_a_csv_prints_a_summary_and_each_refused_line(cli, tmp_path):
    batch = tmp_path / "batch.csv"
    batch.write_text(
        "from_account_id,to_account_id,amount,idempotency_key\n"
        "alice,bob,10.00,c-1\n"
        "\n"
        "alice,bob,500.00,c-2\n"
        "alice,bob,1.00\n"
        "alice, bob ,5,c-4\n"
    )
    code, out, err = cli("transfer", "--batch", str(batch))
    assert (code, err) == (3, "")
    assert out.splitlines()[0] == "2 of 4 transfers done, 2 refused"
    assert "  line 4 (c-2): insufficient_funds: insufficient funds in 'alice'" in out
    assert "  line 5: validation_error: expected 4 columns" in out
    assert json.loads(cli("balance", "alice", "--json")[1])["balance"] == "85.00"

    code, out, _ = cli("transfer", "--batch", str(batch), "--json")
    report = json.loads(out)
    assert code == 3 and (report["succeeded"], report["replayed"]) == (2, 2)
    assert [(r["line"], r["status"]) for r in report["results"]] == [
        (2, "replayed"), (4, "refused"), (5, "refused"), (6, "replayed")]  # fmt: skip

    good = tmp_path / "good.csv"
    good.write_text("bob,alice,1.00,c-5\nbob,alice,2.00,c-6\n")  # no header
    assert cli("transfer", "--batch", str(good), "--atomic")[:2] == (0, "2 of 2 transfers done, 0 "
                                                                        "refused\n")  # fmt: skip
    code, out, _ = cli("transfer", "--batch", str(batch), "--atomic")
    assert code == 3 and "the batch is atomic, so none was written" in out
    assert json.loads(cli("balance", "alice", "--json")[1])["balance"] == "88.00"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["transfer", "alice", "bob", "1", "--batch", "b.csv"], "give no FROM_ID TO_ID AMOUNT"),
        (["transfer", "--batch", "missing.csv"], "missing.csv is not a readable file"),
        (["transfer", "alice", "bob", "1", "--atomic"], "--atomic applies to a --batch file"),
        (["transfer", "alice"], "Missing argument 'TO_ID'"),
    ],
)
def test_transfer_batch_usage_errors_exit_2_and_move_nothing(cli, tmp_path, args, message):
    (tmp_path / "b.csv").write_text("alice,bob,1.00,u-1\n")
    code, out, err = cli(*[str(tmp_path / a) if a.endswith(".csv") else a for a in args])
    assert code == 2 and message in err, err
    assert json.loads(cli("balance", "alice", "--json")[1])["balance"] == "100.00"


def test_a_batch_file_over_1000_lines_is_refused_before_any_transfer(cli, tmp_path):
    big = tmp_path / "big.csv"
    big.write_text("".join(f"alice,bob,0.01,b-{uuid.uuid4().hex}\n" for _ in range(1001)))
    code, _, err = cli("transfer", "--batch", str(big))
    assert code == 2 and "holds 1,001 transfers; a batch holds at most 1,000" in err


@pytest.mark.parametrize(
    ("needed", "limit", "parts", "fitting"),
    [(151, 100, 25, 16), (2_000, 1_000, 1_000, 500), (101, 100, 50, 49), (10_000, 100, 3, 1),
     (None, None, 25, 12), (None, None, 1, 1)],
)  # fmt: skip
def test_a_batch_too_large_tells_how_many_parts_to_try_next(needed, limit, parts, fitting):
    """In proportion to what fits, always fewer than before and at least one; halved when the
    engine did not count."""
    assert BatchTooLarge("too large", needed=needed, limit=limit).fitting(parts) == fitting
