"""Journal entries over HTTP and from the command line: `POST /transactions`,
`POST /transfers/{id}/reverse`, `POST /transactions/{id}/reverse`, metadata on money routes;
`eventbank transaction --leg`, `reverse`, `--meta`. Codes, roles and idempotency as documented."""

from __future__ import annotations

import json

from tests.test_http import problem
from tests.test_pending_cli import cli, opened, sqlite_cli  # noqa: F401 - fixtures
from tests.test_pending_http import api, sweep_every_s  # noqa: F401 - fixtures

SPLIT = {"currency": "USD", "description": "order 1042",
         "legs": [{"account_id": "ann", "amount": "10.00", "direction": "debit"},
                  {"account_id": "bob", "amount": "9.50", "direction": "credit"},
                  {"account_id": "fees", "amount": "0.50", "direction": "credit"}],
         "metadata": {"order_id": "1042"}}  # fmt: skip


def test_a_transaction_and_its_reversals_over_http(api):  # noqa: F811
    api.open("fees", None)
    posted = api.teller.post("/transactions", json=SPLIT, headers={"Idempotency-Key": "tx-1"})
    assert posted.status_code == 201, posted.text
    body = posted.json()
    assert (body["kind"], body["amount"], body["metadata"]) == (
        "transaction", "10.00", {"order_id": "1042"})  # fmt: skip
    assert [leg["account"]["balance"] for leg in body["legs"]] == ["90.00", "9.50", "0.50"]
    again = api.teller.post("/transactions", json=SPLIT, headers={"Idempotency-Key": "tx-1"})
    assert again.json() == body and again.headers["Idempotent-Replayed"] == "true"

    tid = body["transaction_id"]
    half = api.teller.post(f"/transactions/{tid}/reverse", json={"amount": "5.00"})
    assert half.status_code == 201, half.text
    assert (half.json()["reverses"], half.json()["reversed_total"]) == (tid, "5.00")
    problem(api.teller.post(f"/transactions/{tid}/reverse", json={"amount": "3.33"}),
            422, "invalid_amount")  # fmt: skip
    problem(api.teller.post(f"/transactions/{tid}/reverse", json={"amount": "5.01"}),
            409, "reversal_exceeds_original")  # fmt: skip

    moved = api.teller.post(
        "/transfers",
        json={
            "from_account_id": "ann",
            "to_account_id": "bob",
            "amount": "20.00",
            "metadata": {"inv": "7"},
        },
    )
    assert moved.json()["metadata"] == {"inv": "7"}
    transfer_id = moved.json()["transfer_id"]
    refund = api.teller.post(f"/transfers/{transfer_id}/reverse")
    assert refund.status_code == 201, refund.text
    assert (refund.json()["amount"], refund.json()["from"]["account_id"]) == ("20.00", "bob")
    problem(api.teller.post("/transfers/nope/reverse"), 404, "transfer_not_found")
    assert api.account("ann")["balance"] == "95.00"
    moves = api.teller.get("/accounts/fees/transactions")
    assert moves.status_code == 200, moves.text
    assert [(m["kind"], m["amount"], m["balance_after"], m["metadata"], m["reverses"])
            for m in moves.json()["items"]] == [
        ("transaction_credit", "0.50", "0.50", {"order_id": "1042"}, None),
        ("transaction_debit", "0.25", "0.25", {}, tid)]  # fmt: skip


def test_bad_transactions_are_refused_with_stable_codes_and_write_nothing(api):  # noqa: F811
    api.open("fees", None)
    before = api.written("ann")
    legs = SPLIT["legs"]
    cases = [
        ({**SPLIT, "legs": [legs[0], {**legs[1], "amount": "9.00"}]}, "unbalanced_transaction"),
        ({**SPLIT, "legs": legs[:1]}, "too_few_legs"),
        ({**SPLIT, "legs": [legs[0], {**legs[0], "direction": "credit"}]}, "duplicate_leg"),
        ({**SPLIT, "legs": [legs[0]] + [{"account_id": f"p{n}", "amount": "0.01",
                                          "direction": "credit"} for n in range(100)]},
         "too_many_legs"),
        ({**SPLIT, "metadata": {"no spaces": "x"}}, "invalid_metadata"),
        ({**SPLIT, "legs": [{**legs[0], "amount": 10.0}, legs[1], legs[2]]}, "validation_error"),
    ]  # fmt: skip
    for body, code in cases:
        problem(api.teller.post("/transactions", json=body), 422, code)
    big = {**SPLIT, "legs": [{**legs[0], "amount": "1000.00"},
                             {**legs[1], "amount": "999.50"}, legs[2]]}  # fmt: skip
    problem(api.teller.post("/transactions", json=big), 409, "insufficient_funds")
    assert api.written("ann") == before
    reader = {"Authorization": f"Bearer {api.auditor_token}"}
    problem(api.teller.post("/transactions", json=SPLIT, headers=reader), 403, "forbidden")


def test_transaction_reverse_and_metadata_from_the_command_line(cli):  # noqa: F811
    assert cli("open", "fees", "--owner", "Fees", "--type", "CHECKING")[0] == 0
    code, out, _ = cli("transaction", "--leg", "ann:debit:10.00", "--leg", "bob:credit:9.50",
                       "--leg", "fees:credit:0.50", "--description", "fee split",
                       "--meta", "order=42", "--json")  # fmt: skip
    assert code == 0, out
    done = json.loads(out)
    assert (done["currency"], done["metadata"], done["description"]) == (
        "USD", {"order": "42"}, "fee split")  # fmt: skip
    code, out, _ = cli("reverse", done["transaction_id"], "--amount", "5.00")
    assert code == 0 and "5.00 USD reversed in all" in out
    assert cli("reverse", done["transaction_id"], "--amount", "6.00")[0] == 3
    code, out, _ = cli("transfer", "ann", "bob", "1.00", "--meta", "inv=7", "--json")
    assert code == 0 and json.loads(out)["metadata"] == {"inv": "7"}
    code, out, _ = cli("deposit", "ann", "1.00", "--meta", "k=v", "--meta", "k2=v2", "--json")
    assert json.loads(out)["metadata"] == {"k": "v", "k2": "v2"}


def test_bad_journal_command_lines_exit_2_and_write_nothing(sqlite_cli):  # noqa: F811
    for args in (["transaction", "--leg", "ann:debit:1", "--leg", "bob:credit:2"],
                 ["transaction", "--leg", "ann:debit:1"],
                 ["transaction", "--leg", "ann:sideways:1", "--leg", "bob:credit:1"],
                 ["transaction", "--leg", "ann:debit:-1", "--leg", "bob:credit:1"],
                 ["deposit", "ann", "1", "--meta", "novalue"],
                 ["deposit", "ann", "1", "--meta", "bad key=v"]):  # fmt: skip
        code, _, err = sqlite_cli(*args)
        assert code == 2 and err.count("\n") == 1, (args, err)
    assert json.loads(sqlite_cli("balance", "ann", "--json")[1])["version"] == 2
