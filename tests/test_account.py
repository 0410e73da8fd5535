"""The Account aggregate's rules, as pure functions: decide(state, command) and apply."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbank.domain import account as acc
from eventbank.domain.errors import (
    AccountAlreadyExists,
    AccountIsClosed,
    AccountNotFound,
    BalanceLimitExceeded,
    BalanceNotZero,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidInput,
    SelfTransfer,
)
from eventbank.domain.events import (
    AccountOpened,
    FundsDeposited,
    FundsWithdrawn,
    TransferredIn,
    TransferredOut,
    UnknownSchemaVersion,
    event_from_data,
)
from eventbank.domain.money import MAX_BALANCE_MINOR, Money


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def opened(account_id: str = "a1", balance: int = 0, currency: str = "USD") -> acc.Account:
    initial = Money(balance, currency) if balance else None
    command = acc.OpenAccount(account_id, "Ann", acc.AccountType.CHECKING, currency, initial)
    return acc.replay(acc.decide(None, command))


def test_open_with_initial_deposit_yields_two_events_and_the_balance():
    command = acc.OpenAccount("a1", "  Ann  ", "SAVINGS", "USD", usd(10_000))
    events = acc.decide(None, command)
    assert events == [
        AccountOpened("a1", "Ann", "SAVINGS", "USD"),
        FundsDeposited("a1", 10_000, "USD", "unknown"),
    ]
    state = acc.replay(events)
    assert (state.balance_minor, state.version, state.status) == (10_000, 2, acc.AccountStatus.OPEN)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"account_id": ""},
        {"account_id": "has space"},
        {"account_id": "EVENT#x"},
        {"account_id": "x" * 65},
        {"owner": "  "},
        {"owner": "x" * 201},
        {"owner": "bell\x07"},
        {"account_type": "LOAN"},
        {"currency": "XXX"},
    ],
)
def test_open_refuses_malformed_commands(kwargs):
    fields = {"account_id": "a1", "owner": "Ann", "account_type": "CHECKING", "currency": "USD"}
    with pytest.raises(InvalidInput):
        acc.OpenAccount(**{**fields, **kwargs})


def test_open_refuses_a_duplicate_id_and_a_foreign_initial_deposit():
    with pytest.raises(AccountAlreadyExists):
        acc.decide(opened(), acc.OpenAccount("a1", "Ann", "CHECKING", "USD"))
    with pytest.raises(CurrencyMismatch):
        acc.OpenAccount("a1", "Ann", "CHECKING", "USD", Money(5, "EUR"))


def test_no_overdraft_and_exact_withdrawal_to_zero():
    state = opened(balance=8_000)
    with pytest.raises(
        InsufficientFunds, match=r"available 80.00 USD \(balance 80.00 USD\), requested 80.01 USD"
    ):
        acc.decide(state, acc.Withdraw("a1", usd(8_001)))
    assert acc.decide(state, acc.Withdraw("a1", usd(8_000))) == [FundsWithdrawn("a1", 8_000, "USD")]


def test_operations_on_unknown_or_closed_accounts_are_refused():
    with pytest.raises(AccountNotFound):
        acc.decide(None, acc.Deposit("nope", usd(1)))
    closed = acc.apply(opened(), acc.decide(opened(), acc.CloseAccount("a1"))[0])
    for command in (acc.Deposit("a1", usd(1)), acc.Withdraw("a1", usd(1)), acc.CloseAccount("a1")):
        with pytest.raises(AccountIsClosed):
            acc.decide(closed, command)


def test_close_only_at_zero_balance():
    with pytest.raises(BalanceNotZero, match="still holds 0.01 USD"):
        acc.decide(opened(balance=1), acc.CloseAccount("a1"))


def test_deposit_in_another_currency_and_over_the_balance_limit_are_refused():
    with pytest.raises(CurrencyMismatch):
        acc.decide(opened(), acc.Deposit("a1", Money(1, "EUR")))
    rich = acc.apply(opened(), FundsDeposited("a1", MAX_BALANCE_MINOR, "USD", "cli"))
    with pytest.raises(BalanceLimitExceeded):
        acc.decide(rich, acc.Deposit("a1", usd(1)))


def test_transfer_events_share_a_transfer_id():
    out, into = acc.decide_transfer(
        opened("a", 500), opened("b"), from_id="a", to_id="b", amount=usd(200), transfer_id="t1"
    )
    assert out == TransferredOut("a", "t1", "b", 200, "USD")
    assert into == TransferredIn("b", "t1", "a", 200, "USD")


@pytest.mark.parametrize(
    ("source", "target", "to_id", "error"),
    [
        (opened("a", 500), opened("a", 500), "a", SelfTransfer),
        (opened("a", 500), None, "b", AccountNotFound),
        (None, opened("b"), "b", AccountNotFound),
        (opened("a", 500), opened("b", currency="EUR"), "b", CurrencyMismatch),
        (opened("a", 100), opened("b"), "b", InsufficientFunds),
    ],
)
def test_transfer_rules(source, target, to_id, error):
    with pytest.raises(error):
        acc.decide_transfer(source, target, from_id="a", to_id=to_id, amount=usd(200),
                            transfer_id="t")  # fmt: skip


def test_events_round_trip_through_their_json_data():
    event = TransferredOut("a", "t1", "b", 200, "USD")
    assert event_from_data(event.event_type, event.to_data(), 1) == event
    with pytest.raises(InvalidInput):
        event_from_data("FundsTeleported", {}, 1)
    with pytest.raises(InvalidInput, match="malformed"):
        event_from_data("FundsDeposited", {"account_id": "a"}, 2)


def test_older_deposits_are_upcast_on_read_and_new_deposits_are_written_as_v3():
    v1 = {"account_id": "a", "amount_minor": 5, "currency": "USD"}
    assert event_from_data("FundsDeposited", v1, 1) == FundsDeposited("a", 5, "USD", "unknown", {})
    assert v1 == {"account_id": "a", "amount_minor": 5, "currency": "USD"}  # not rewritten
    v2 = {**v1, "channel": "api"}
    assert event_from_data("FundsDeposited", v2, 2).metadata == {}
    [written] = acc.decide(opened(), acc.Deposit("a1", usd(5), "api", {"order": "7"}))
    assert written.SCHEMA_VERSION == 3
    assert (written.to_data()["channel"], written.to_data()["metadata"]) == ("api", {"order": "7"})


def test_an_event_newer_than_the_code_is_refused_not_misread():
    with pytest.raises(UnknownSchemaVersion, match="FundsDeposited v4 is newer"):
        event_from_data("FundsDeposited", {"account_id": "a", "amount_minor": 5,
                                           "currency": "USD", "channel": "x"}, 4)  # fmt: skip


commands = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "withdraw", "close"]),
        st.integers(min_value=1, max_value=50_000),
    ),
    max_size=60,
)


@given(steps=commands, initial=st.integers(min_value=0, max_value=20_000))
def test_random_command_sequences_keep_balance_equal_to_the_sum_of_events(steps, initial):
    state = opened(balance=initial)
    history = acc.decide(None, acc.OpenAccount("a1", "Ann", "CHECKING", "USD",
                                               usd(initial) if initial else None))  # fmt: skip
    for kind, minor in steps:
        command = {
            "deposit": acc.Deposit("a1", usd(minor)),
            "withdraw": acc.Withdraw("a1", usd(minor)),
            "close": acc.CloseAccount("a1"),
        }[kind]
        try:
            events = acc.decide(state, command)
        except (InsufficientFunds, BalanceNotZero, AccountIsClosed):
            continue
        for event in events:
            state = acc.apply(state, event)
        history.extend(events)
        assert state.balance_minor >= 0
    signed = {"FundsDeposited": 1, "FundsWithdrawn": -1}
    assert state.balance_minor == sum(
        signed.get(e.event_type, 0) * getattr(e, "amount_minor", 0) for e in history
    )
    assert state.version == len(history)
    assert acc.replay(history) == state
