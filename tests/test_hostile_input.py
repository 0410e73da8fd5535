"""Hostile input against a real ``eventbank serve``: hypothesis-generated amounts, ids, headers
and bodies (empty, very long, unicode, control characters, SQL and JSON metacharacters, huge and
malformed). Whatever arrives, the answer is never a 5xx, and a refused request writes nothing:
no event, and its Idempotency-Key stays unused. (The schemathesis run in test_http.py covers
the documented shapes; this covers what no schema describes.)"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reliability.serve import ServeProcess
from reliability.workload import Bank, http_client, open_accounts

TOKENS = {"teller": "hostile-teller", "auditor": "hostile-auditor"}
A, B = "chaos-000", "chaos-001"
EXAMPLES = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

NASTY = [
    "", " ", "\t", "a" * 10_000, "é" * 300, "'", "' OR '1'='1' --", "'; DROP TABLE events; --",
    '"', '"}', '{"$ne": null}', "\\", "\\u0000", "\x00", "chaos-000\x00", "chaos-000\n",
    "chaos-000 ", " chaos-000", "CHAOS-000", "chaos-000/../chaos-001", "../../etc/passwd", "%00",
    "%2e%2e%2f", "<script>alert(1)</script>", "${jndi:ldap://x/a}", "\r\nX-Injected: 1",
    "\u202e", "\ufeff1", "\ud800", "𝟙", "１０", "١٠", "1e3", "1E+3", "NaN", "-Infinity", "-0",
    "+1", "0x10", "1_000", "1,00", " 1 ", "1.", ".5", "0.001", "0." + "0" * 30 + "1",
    "0" * 30 + "1", "9" * 40, "99999999999999999999.99", "chaos-000#1", "CMD#x", "EVENT#x",
]  # fmt: skip
text = st.one_of(st.sampled_from(NASTY), st.text(max_size=80))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
header_value = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=400,
).map(lambda value: value.encode("latin-1")) | st.sampled_from([b"x" * 8_000, b"\xff\xfe"])


def encoded(value: object) -> bytes:
    """JSON as Python writes it: NaN and Infinity literals, lone surrogates escaped."""
    return json.dumps(value).encode()


def escaped(text: str) -> str:
    """``text`` percent-encoded for a URL, lone surrogates included (as invalid UTF-8)."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


class Ledger:
    """The service under attack, and the event feed's head: a refusal must not move it."""

    def __init__(self, server: ServeProcess):
        self.teller = http_client(server.url, TOKENS["teller"])
        self.auditor = http_client(server.url, TOKENS["auditor"])
        self.head = 0
        self.new_events()

    def new_events(self) -> list[dict]:
        found = []
        while page := self._page():
            found += page
            self.head = page[-1]["position"]
        return found

    def _page(self) -> list[dict]:
        params = {"after_position": self.head, "limit": 1000}
        return self.auditor.get("/events", params=params).json()["items"]

    def send(self, method: str, path: str, **request) -> httpx.Response:
        """One hostile request: never a 5xx, and if refused, nothing written (a JSON body is
        encoded here, so that NaN, infinities and lone surrogates get through)."""
        headers = {"Idempotency-Key": f"hostile-{uuid.uuid4()}", **request.pop("headers", {})}
        if "json" in request:
            request["content"] = encoded(request.pop("json"))
            headers.setdefault("Content-Type", "application/json")
        response = self.teller.request(method, path, headers=headers, **request)
        assert response.status_code < 500, (method, path, request, response.text)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
        written = self.new_events()
        if response.status_code >= 300:
            assert written == [], (method, path, request, response.text, written)
        elif response.status_code == 202:  # a payroll someone's fuzzing got right: let it finish
            self._wait_for_payroll(response.headers["Location"])
            self.new_events()
        return response

    def key_is_unused(self, key: str) -> bool:
        body = {"from_account_id": A, "to_account_id": B, "amount": "0.01"}
        response = self.teller.post("/transfers", json=body, headers={"Idempotency-Key": key})
        self.new_events()
        return response.status_code == 201 and "Idempotent-Replayed" not in response.headers

    def _wait_for_payroll(self, location: str) -> None:
        deadline = time.monotonic() + 30
        while self.teller.get(location).json()["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    folder: Path = tmp_path_factory.mktemp("hostile")
    server = ServeProcess(f"sqlite:///{folder / 'events.db'}", folder, TOKENS)
    server.start()
    open_accounts(server.url, TOKENS["teller"], Bank.of(2, hot=0, initial_minor=10**12))
    ledger = Ledger(server)
    yield ledger
    ledger.teller.close()
    ledger.auditor.close()
    server.stop()


@EXAMPLES
@given(amount=json_value, route=st.sampled_from(["deposits", "withdrawals", "transfers"]))
def test_hostile_amounts(ledger: Ledger, amount, route: str):
    if route == "transfers":
        path, body = "/transfers", {"from_account_id": A, "to_account_id": B, "amount": amount}
    else:
        path, body = f"/accounts/{A}/{route}", {"amount": amount}
    response = ledger.send("POST", path, json=body)
    if response.status_code == 201:  # only a plain decimal string moves money, and exactly it
        assert isinstance(amount, str) and Decimal(amount) == Decimal(response.json()["amount"])


@EXAMPLES
@given(account_id=text, where=st.sampled_from(["get", "history", "deposit", "close", "open",
                                               "from", "to", "transfer"]))  # fmt: skip
def test_hostile_ids(ledger: Ledger, account_id: str, where: str):
    segment = escaped(account_id)
    requests = {
        "get": ("GET", f"/accounts/{segment}", {}),
        "history": ("GET", f"/accounts/{segment}/transactions", {}),
        "deposit": ("POST", f"/accounts/{segment}/deposits", {"json": {"amount": "1.00"}}),
        "close": ("POST", f"/accounts/{segment}/close", {}),
        "open": ("POST", "/accounts", {"json": {"account_id": account_id, "owner": account_id,
                                                "type": "SAVINGS"}}),
        "from": ("POST", "/transfers", {"json": {"from_account_id": account_id,
                                                 "to_account_id": B, "amount": "1.00"}}),
        "to": ("POST", "/transfers", {"json": {"from_account_id": A, "to_account_id": account_id,
                                               "amount": "1.00"}}),
        "transfer": ("GET", f"/transfers/{segment}", {}),
    }  # fmt: skip
    method, path, request = requests[where]
    ledger.send(method, path, **request)


@EXAMPLES
@given(key=header_value, content_type=header_value, request_id=header_value)
def test_hostile_headers(ledger: Ledger, key: bytes, content_type: bytes, request_id: bytes):
    body = b'{"from_account_id": "chaos-000", "to_account_id": "chaos-001", "amount": "0.01"}'
    key = f"{uuid.uuid4().hex}-".encode() + key if key else key  # examples must not share keys
    headers = {"Idempotency-Key": key, "Content-Type": content_type, "X-Request-ID": request_id}
    response = ledger.send("POST", "/transfers", content=body, headers=headers)
    if response.status_code >= 400 and re.fullmatch(rb"[!-~]{1,255}", key):
        assert ledger.key_is_unused(key.decode())  # nothing recorded under it either


DEEP = [b"[" * 20_000 + b"]" * 20_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000]
HUGE = [b'{"amount": "' + b"9" * 70_000 + b'"}', b'{"amount": ' + b"9" * 5_000 + b"}"]


@EXAMPLES
@given(
    body=st.one_of(st.binary(max_size=300), st.sampled_from(DEEP + HUGE),
                   json_value.map(encoded)),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-ndjson",
                                  "text/csv", "multipart/form-data", ""]),
    path=st.sampled_from(["/transfers", "/accounts", f"/accounts/{A}/deposits",
                          f"/payrolls?from_account_id={A}"]),
)  # fmt: skip
@example(DEEP[1], "application/x-ndjson", f"/payrolls?from_account_id={A}")  # was a 500
@example(b"x" * 200_000, "text/csv", f"/payrolls?from_account_id={A}")  # was a 500 too
def test_huge_and_malformed_bodies(ledger: Ledger, body: bytes, content_type: str, path: str):
    ledger.send("POST", path, content=body, headers={"Content-Type": content_type})


payroll_line = st.one_of(
    st.tuples(text, text, text).map(",".join),
    st.tuples(st.just(B), text).map(",".join),
    json_value.map(lambda value: encoded(value).decode()),
)


@EXAMPLES
@given(lines=st.lists(payroll_line, max_size=5), employer=text,
       fmt=st.sampled_from(["text/csv", "application/x-ndjson"]))  # fmt: skip
@example([",,", ",,\r0"], "", "text/csv")  # a lone CR in a CSV field was a 500
def test_hostile_payrolls(ledger: Ledger, lines: list[str], employer: str, fmt: str):
    ledger.send("POST", f"/payrolls?from_account_id={escaped(employer)}",
                content="\n".join(lines).encode("utf-8", "surrogatepass"),
                headers={"Content-Type": fmt})  # fmt: skip


# ------------------------------------------------------------------ duplicate JSON keys


C = "dup-payee"


def balances(ledger: Ledger) -> list[str]:
    if ledger.teller.get(f"/accounts/{C}").status_code == 404:  # a third account: a 2nd payee
        body = {"account_id": C, "owner": "C", "type": "CHECKING"}
        assert ledger.teller.post("/accounts", json=body).status_code == 201
        ledger.new_events()
    return [ledger.teller.get(f"/accounts/{a}").json()["balance"] for a in (A, B, C)]


def refused_as_malformed(ledger: Ledger, path: str, body: str, key: str) -> None:
    """Refused with 400 malformed_json naming ``key``; ``send`` checks nothing was written."""
    before = balances(ledger)
    response = ledger.send("POST", path, content=body.encode(),
                           headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "malformed_json" and f"'{key}'" in problem["detail"], problem
    assert balances(ledger) == before


def test_a_deposit_naming_its_amount_twice_is_refused(ledger: Ledger):
    refused_as_malformed(ledger, f"/accounts/{B}/deposits",
                         '{"amount": "1.00", "amount": "2.00"}', "amount")  # fmt: skip


def test_a_transfer_naming_its_payee_twice_is_refused(ledger: Ledger):
    body = f'{{"from_account_id": "{A}", "to_account_id": "{B}", "to_account_id": "{C}", '
    refused_as_malformed(ledger, "/transfers", body + '"amount": "1.00"}', "to_account_id")


def test_a_duplicate_key_at_any_depth_is_refused(ledger: Ledger):
    body = f'{{"from_account_id": "{A}", "to_account_id": "{B}", "amount": "1.00", '
    refused_as_malformed(ledger, "/transfers", body + '"note": [{"x": 1, "x": 2}]}', "x")


def test_a_payroll_json_line_naming_a_key_twice_is_refused(ledger: Ledger):
    before = balances(ledger)
    line = f'{{"account_id": "{B}", "amount": "1.00", "amount": "900.00", "reference": "nov"}}'
    response = ledger.send("POST", f"/payrolls?from_account_id={A}", content=line.encode(),
                           headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert response.status_code == 422 and response.json()["code"] == "payroll_rejected"
    assert "duplicate key 'amount'" in response.json()["detail"], response.text
    assert balances(ledger) == before
