"""Journal entries on every engine: multi-leg transactions land whole or not at all, reversals
move money back and never pass the original (also when they race), metadata is stored and
answered, and the audit checks all of it."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbank.application.auditor import Auditor
from eventbank.application.ids import new_id
from eventbank.application.queries import NotYetKnown, find_original
from eventbank.application.write_path import IdempotencyKeyReused
from eventbank.domain.errors import (
    AccountIsFrozen,
    CurrencyMismatch,
    EventbankError,
    InsufficientFunds,
    InvalidAmount,
    TransferNotFound,
)
from eventbank.domain.events import ACCOUNT, LegPosted, ReversalRecorded
from eventbank.domain.journal import (
    MAX_LEGS,
    DuplicateLeg,
    NotReversible,
    ReversalExceedsOriginal,
    TooFewLegs,
    TooManyLegs,
    UnbalancedTransaction,
)
from eventbank.domain.metadata import InvalidMetadata
from eventbank.ports.event_store import NewEvent, chained
from eventbank.wiring import Ledger, open_ledger
from tests.test_pending_transfers import race

FEE_SPLIT = [("buyer", "debit", "10.00"), ("seller", "credit", "9.50"),
             ("fees", "credit", "0.50")]  # fmt: skip


@pytest.fixture
def ledger(store_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(store_url)
    service = ledger.service
    service.open_account("buyer", owner="B", account_type="CHECKING", initial_deposit="100.00")
    for name in ("seller", "fees"):
        service.open_account(name, owner=name, account_type="CHECKING")
    yield ledger
    ledger.close()


def cents(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def balances(ledger: Ledger, *names: str) -> list[str]:
    return [ledger.service.get_account(name).describe()["balance"] for name in names]


def versions(ledger: Ledger) -> dict[str, int]:
    """Every account's version: a refusal must leave all of them where they were."""
    return {n: ledger.service.get_account(n).version for n in ("buyer", "seller", "fees")}


def test_a_fee_split_lands_every_leg_in_one_write_with_its_description_and_metadata(ledger):
    done = ledger.service.post_transaction(FEE_SPLIT, currency="USD", description="order 1042",
                                           metadata={"order_id": "1042"})  # fmt: skip
    outcome = done.outcome
    assert (outcome["kind"], outcome["amount"], outcome["description"]) == (
        "transaction", "10.00", "order 1042")  # fmt: skip
    assert outcome["metadata"] == {"order_id": "1042"}
    assert [(leg["account_id"], leg["direction"], leg["amount"]) for leg in outcome["legs"]] == [
        ("buyer", "debit", "10.00"),
        ("seller", "credit", "9.50"),
        ("fees", "credit", "0.50"),
    ]
    assert balances(ledger, "buyer", "seller", "fees") == ["90.00", "9.50", "0.50"]
    legs = [e for name in ("buyer", "seller", "fees") for e in ledger.events.read_stream(name)
            if e.event_type == "LegPosted"]  # fmt: skip
    assert {e.data["transaction_id"] for e in legs} == {outcome["transaction_id"]}
    assert {e.data["metadata"]["order_id"] for e in legs} == {"1042"}
    assert len({e.metadata["command_id"] for e in legs}) == 1  # one command, one append
    assert [m["kind"] for m in ledger.queries.history("seller")][-1] == "transaction_credit"
    assert Auditor(ledger.events, ledger.reads).run().clean


@pytest.mark.parametrize(("legs", "error"), [
    ([("buyer", "debit", "10.00"), ("seller", "credit", "9.00")], UnbalancedTransaction),
    ([("buyer", "debit", "10.00")], TooFewLegs),
    ([("buyer", "debit", "1.00"), ("buyer", "credit", "1.00")], DuplicateLeg),
    ([("buyer", "debit", "1.001"), ("seller", "credit", "1.001")], InvalidAmount),
    ([("buyer", "debit", "-1.00"), ("seller", "credit", "1.00")], InvalidAmount),
    ([("buyer", "sideways", "1.00"), ("seller", "credit", "1.00")], EventbankError),
    ([("buyer", "debit", "100.01"), ("seller", "credit", "100.01")], InsufficientFunds),
    ([("buyer", "debit", "1.00"), ("ghost", "credit", "1.00")], EventbankError),
])  # fmt: skip
def test_a_bad_transaction_is_refused_with_its_code_and_writes_nothing(ledger, legs, error):
    before = versions(ledger)
    with pytest.raises(error):
        ledger.service.post_transaction(legs, currency="USD")
    assert versions(ledger) == before


def test_legs_in_another_currency_a_frozen_debit_and_too_many_legs_are_refused(ledger):
    service = ledger.service
    service.open_account("euro", owner="E", account_type="CHECKING", currency="EUR")
    with pytest.raises(CurrencyMismatch):
        service.post_transaction([("buyer", "debit", "1.00"), ("euro", "credit", "1.00")],
                                 currency="USD")  # fmt: skip
    service.freeze_account("buyer", "court order")
    with pytest.raises(AccountIsFrozen):
        service.post_transaction(FEE_SPLIT, currency="USD")
    many = [(f"x{n}", "credit", "1.00") for n in range(MAX_LEGS)]
    with pytest.raises(TooManyLegs, match=f"at most {MAX_LEGS} legs"):
        service.post_transaction([("buyer", "debit", f"{MAX_LEGS}.00"), *many], currency="USD")


def test_the_largest_transaction_and_its_reversal_fit_one_atomic_write_on_every_engine(ledger):
    """MAX_LEGS is what DynamoDB's 100-item transaction holds with the guards."""
    service = ledger.service
    payees = [f"payee-{n}" for n in range(MAX_LEGS - 1)]
    for name in payees:
        service.open_account(name, owner=name, account_type="CHECKING")
    legs = [("buyer", "debit", f"{len(payees)}.00")] + [(p, "credit", "1.00") for p in payees]
    done = service.post_transaction(legs, currency="USD").outcome
    assert len(done["legs"]) == MAX_LEGS
    back = service.reverse(done["transaction_id"]).outcome
    assert (back["amount"], back["reversed_total"]) == (f"{len(payees)}.00", f"{len(payees)}.00")
    assert balances(ledger, "buyer", payees[0]) == ["100.00", "0.00"]


def test_a_transfer_is_reversed_in_parts_and_never_beyond_what_it_moved(ledger):
    service = ledger.service
    original = service.transfer("buyer", "seller", "30.00").outcome["transfer_id"]
    first = service.reverse(original, "10.00", metadata={"refund": "rf-1"}).outcome
    assert (first["reverses"], first["amount"], first["reversed_total"]) == (
        original, "10.00", "10.00")  # fmt: skip
    assert (first["from"]["account_id"], first["to"]["account_id"]) == ("seller", "buyer")
    assert first["metadata"] == {"refund": "rf-1"}
    assert balances(ledger, "buyer", "seller") == ["80.00", "20.00"]
    with pytest.raises(ReversalExceedsOriginal, match="20.00 USD of 30.00 USD is left"):
        service.reverse(original, "20.01")
    rest = service.reverse(original).outcome
    assert (rest["amount"], rest["reversed_total"]) == ("20.00", "30.00")
    with pytest.raises(ReversalExceedsOriginal, match="already reversed in full"):
        service.reverse(original, "0.01")
    # a reversal is itself reversible, up to its own amount
    again = service.reverse(first["transfer_id"], "10.00").outcome
    assert again["reverses"] == first["transfer_id"]
    with pytest.raises(ReversalExceedsOriginal):
        service.reverse(first["transfer_id"], "0.01")
    assert balances(ledger, "buyer", "seller") == ["90.00", "10.00"]
    assert Auditor(ledger.events, ledger.reads).run().clean


def test_a_reversal_needs_the_recipients_funds_and_a_real_posted_original(ledger):
    service = ledger.service
    original = service.transfer("buyer", "seller", "30.00").outcome["transfer_id"]
    service.transfer("seller", "fees", "25.00")
    before = versions(ledger)
    with pytest.raises(InsufficientFunds):
        service.reverse(original)
    assert versions(ledger) == before
    with pytest.raises(TransferNotFound):
        service.reverse("no-such-transfer")
    pending = service.transfer("buyer", "seller", "5.00", pending=True).outcome["transfer_id"]
    with pytest.raises(NotReversible):
        service.reverse(pending)
    service.post_transfer(pending, "2.00")
    assert service.reverse(pending).outcome["amount"] == "2.00"  # what the post moved


def test_a_transaction_is_reversed_leg_by_leg_in_exact_proportion(ledger):
    service = ledger.service
    tid = service.post_transaction(FEE_SPLIT, currency="USD").outcome["transaction_id"]
    half = service.reverse(tid, "5.00").outcome
    assert half["description"] == f"reversal of {tid}"
    assert [(leg["account_id"], leg["direction"], leg["amount"]) for leg in half["legs"]] == [
        ("buyer", "credit", "5.00"),
        ("fees", "debit", "0.25"),
        ("seller", "debit", "4.75"),
    ]
    with pytest.raises(InvalidAmount, match="split exactly"):
        service.reverse(tid, "3.33")
    assert service.reverse(tid).outcome["reversed_total"] == "10.00"
    assert balances(ledger, "buyer", "seller", "fees") == ["100.00", "0.00", "0.00"]
    assert Auditor(ledger.events, ledger.reads).run().clean


def test_racing_reversals_together_never_pass_the_original(store_url, ledger):
    original = ledger.service.transfer("buyer", "seller", "10.00").outcome["transfer_id"]
    other = open_ledger(store_url)
    try:
        calls = [functools.partial(s.reverse, original, "4.00")
                 for s in (ledger.service, other.service, ledger.service)]  # fmt: skip
        outcomes = race(calls)
    finally:
        other.close()
    done = [o for o in outcomes if not isinstance(o, Exception)]
    assert len(done) == 2, outcomes  # 4 + 4 fit in 10; a third 4 does not
    assert all(isinstance(o, ReversalExceedsOriginal) for o in outcomes if o not in done)
    assert balances(ledger, "buyer", "seller") == ["98.00", "2.00"]
    assert Auditor(ledger.events, ledger.reads).run().clean


def test_metadata_is_stored_answered_and_part_of_the_idempotency_fingerprint(ledger):
    service = ledger.service
    receipt = service.deposit("seller", "5.00", metadata={"ref": "a"}, command_id="dep-1")
    assert receipt.outcome["metadata"] == {"ref": "a"}
    assert ledger.events.read_stream("seller")[-1].data["metadata"] == {"ref": "a"}
    assert service.deposit("seller", "5.00", metadata={"ref": "a"}, command_id="dep-1").replayed
    with pytest.raises(IdempotencyKeyReused):
        service.deposit("seller", "5.00", metadata={"ref": "b"}, command_id="dep-1")
    before = versions(ledger)
    for bad in ({f"k{n}": "v" for n in range(21)}, {"bad key": "v"}, {"k": "x" * 501},
                {"k": 5}, {"k" * 41: "v"}):  # fmt: skip
        with pytest.raises(InvalidMetadata):
            service.withdraw("buyer", "1.00", metadata=bad)
        with pytest.raises(InvalidMetadata):
            service.post_transaction(FEE_SPLIT, currency="USD", metadata=bad)
    assert versions(ledger) == before
    # without metadata a command's fingerprint is what it always was: an old key still replays
    service.deposit("seller", "1.00", command_id="dep-2")
    assert service.deposit("seller", "1.00", metadata={}, command_id="dep-2").replayed


def forge(ledger: Ledger, account_id: str, fact: LegPosted | ReversalRecorded) -> None:
    """Append ``fact`` behind the service's back, chained correctly (only the books break)."""
    head = ledger.events.read_stream(account_id)[-1]
    event = NewEvent(new_id(), account_id, ACCOUNT, head.version + 1, fact.event_type, 1,
                     fact.to_data(), {})  # fmt: skip
    ledger.events.append(chained([event], {account_id: head.hash}), {account_id: head.version})


def test_the_audit_finds_a_forged_leg_and_an_over_reversal(ledger):
    service = ledger.service
    tid = service.post_transaction(FEE_SPLIT, currency="USD").outcome["transaction_id"]
    original = service.transfer("buyer", "seller", "5.00").outcome["transfer_id"]
    reversal = service.reverse(original, "1.00").outcome["transfer_id"]
    assert Auditor(ledger.events).run().clean
    forge(ledger, "fees", LegPosted("fees", tid, "credit", 50, "USD", "", {}))
    forge(ledger, "buyer", ReversalRecorded("buyer", original, reversal, 900, "USD"))
    kinds = {f.kind for f in Auditor(ledger.events).run().findings}
    assert {"transaction_unbalanced", "reversal_unbalanced",
            "reversal_exceeds_original"} <= kinds, kinds  # fmt: skip


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(steps=st.lists(st.tuples(st.sampled_from(["tx", "transfer", "reverse", "reverse_part"]),
                                st.integers(1, 3000), st.integers(0, 2)), max_size=12))  # fmt: skip
def test_random_journal_histories_conserve_money_and_audit_clean(ledger, steps):
    service, originals = ledger.service, []
    names = ["buyer", "seller", "fees"]
    for kind, minor, pick in steps:
        amount = cents(minor)
        try:
            if kind == "tx":
                debit, *credits = names[pick:] + names[:pick]
                first = minor // 2
                legs = [(debit, "debit", amount), (credits[0], "credit", cents(first)),
                        (credits[1], "credit", cents(minor - first))]  # fmt: skip
                legs = [leg for leg in legs if leg[2] != "0.00"]
                originals.append(service.post_transaction(legs, currency="USD")
                                 .outcome["transaction_id"])  # fmt: skip
            elif kind == "transfer":
                outcome = service.transfer(names[pick], names[(pick + 1) % 3], amount).outcome
                originals.append(outcome["transfer_id"])
            elif originals:
                target = originals[pick % len(originals)]
                service.reverse(target, None if kind == "reverse" else "0.01")
        except EventbankError:
            pass  # refused: nothing written, which the audit checks below
    total = sum(service.get_account(n).balance_minor for n in names)
    assert total == 10_000
    assert Auditor(ledger.events, ledger.reads).run().clean


class PartlyProjected:
    """A real read store that shows one side of each movement and a checkpoint past the feed:
    what a parked stream can leave."""

    def __init__(self, reads):
        self._reads = reads

    def transfer(self, movement_id):
        return self._reads.transfer(movement_id)[:1]

    def checkpoint(self, projection):
        return 2**62


def test_a_reversal_is_not_decided_on_part_of_its_original(ledger):
    tid = ledger.service.post_transaction(FEE_SPLIT, currency="USD").outcome["transaction_id"]
    assert find_original(ledger.reads, ledger.events, tid).total_minor == 1000
    with pytest.raises(NotYetKnown):
        find_original(PartlyProjected(ledger.reads), ledger.events, tid)
