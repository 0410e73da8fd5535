"""The clients of a chaos run: transfers over HTTP, retried with their key until answered, and
readers of every balance. Each finished operation becomes one line of the history.

A request is retried with the same ``Idempotency-Key`` whenever its answer says nothing
final: the answer was lost (timeout, reset), the server was unreachable, it was busy (503,
or a 409 ``concurrency_conflict`` after its own retries), or it failed unexpectedly (5xx).
It ends ``ok`` (2xx), ``refused`` (409 ``insufficient_funds``; for a post or a void, 409
``transfer_not_pending`` or ``transfer_expired``), ``error`` (any other 4xx: a bug) or, if
the run ends first, ``indeterminate``. Retrying with one key is always safe, so the checker may
demand that every key took effect at most once.

A share of the operations (``HOLD_SHARE``) are pending transfers (``hold``), half of them with
a timeout of a second or two; each acknowledged one is then posted (in part or whole), voided,
or left to expire (or, without a timeout, to stay pending), each as an operation of its own.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from reliability.history import History

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=1.0)  # over the store's deadlines (5-10 s)
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 1.0
HOT_SHARE = 0.5  # of transfers that touch a hot account
HOLD_SHARE = 0.3  # of operations that are pending transfers
RETRY_CODES = {503: "store_unavailable", 409: "concurrency_conflict"}
REFUSALS = {"insufficient_funds", "transfer_not_pending", "transfer_expired"}  # 409, definite


@dataclass(frozen=True, slots=True)
class Bank:
    """The accounts a run moves money among; ``hot`` ones are picked far more often."""

    accounts: tuple[str, ...]
    hot: tuple[str, ...]
    initial_minor: int
    max_transfer_minor: int

    @classmethod
    def of(cls, size: int, hot: int, initial_minor: int = 1000_00) -> Bank:
        accounts = tuple(f"chaos-{n:03d}" for n in range(size))
        return cls(accounts, accounts[:hot], initial_minor, initial_minor // 10)

    @property
    def total_minor(self) -> int:
        return self.initial_minor * len(self.accounts)

    def pair(self, rng: random.Random) -> tuple[str, str]:
        first = rng.choice(self.hot) if self.hot and rng.random() < HOT_SHARE else None
        source, target = rng.sample(self.accounts, 2)
        if first is not None and first not in (source, target):
            return (first, target) if rng.random() < 0.5 else (source, first)
        return source, target


def amount_text(minor: int) -> str:
    """USD minor units as the API's decimal string, without a float on the way."""
    return f"{minor // 100}.{minor % 100:02d}"


def minor_of(text: str) -> int:
    """The API's decimal string (possibly negative) as USD minor units."""
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    minor = int(whole) * 100 + int(fraction.ljust(2, "0"))
    return -minor if negative else minor


def http_client(base_url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"},
                        timeout=REQUEST_TIMEOUT)  # fmt: skip


def open_accounts(base_url: str, token: str, bank: Bank, deadline_s: float = 60.0) -> None:
    """Open every account with its initial deposit (before any fault is injected)."""
    with http_client(base_url, token) as client:
        for account in bank.accounts:
            body = {"account_id": account, "owner": "Chaos", "type": "CHECKING",
                    "initial_deposit": amount_text(bank.initial_minor)}  # fmt: skip
            give_up = time.monotonic() + deadline_s
            while (status := _post(client, "/accounts", body, f"open-{account}")) != 201:
                if time.monotonic() > give_up:
                    raise RuntimeError(f"could not open {account}: last status {status}")
                time.sleep(0.2)


def _post(client: httpx.Client, path: str, body: dict, key: str) -> int | None:
    try:
        return client.post(path, json=body, headers={"Idempotency-Key": key}).status_code
    except httpx.TransportError:
        return None


def run_transfers(
    number: int,
    base_urls: str | Sequence[str],
    token: str,
    bank: Bank,
    history: History,
    stop: threading.Event,
    seed: int,
) -> None:
    """Client ``number``: random transfers, one at a time, each retried until it has a
    definite answer, until ``stop``; the one unanswered then is indeterminate. Given several
    servers (of one store), it sends to each in turn: every request, and every retry of one, to
    the next, so a retry often meets its first attempt still running in another process."""
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    with ExitStack() as stack:
        clients = [stack.enter_context(http_client(url, token)) for url in urls]
        _transfers(number, clients, bank, history, stop, random.Random(seed))


def _transfers(
    number: int,
    clients: Sequence[httpx.Client],
    bank: Bank,
    history: History,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    sequence = 0
    servers = itertools.cycle(clients)  # every attempt to the next server
    while not stop.is_set():
        sequence += 1
        source, target = bank.pair(rng)
        minor = rng.randint(1, bank.max_transfer_minor)
        key = f"c{number}-{sequence}"
        body: dict[str, Any] = {"from_account_id": source, "to_account_id": target,
                                "amount": amount_text(minor)}  # fmt: skip
        op = "transfer"
        if rng.random() < HOLD_SHARE:
            op, body["pending"] = "hold", True
            if rng.random() < 0.5:
                body["timeout_s"] = rng.choice((1, 2))
        started = history.now()
        result = _request(servers, "/transfers", key, body, stop, rng)
        history.record(op, key=key, client=number, source=source, target=target,
                       amount_minor=minor, started=started, **result)  # fmt: skip
        if op == "hold" and result["outcome"] == "ok":
            _close(servers, key, result["transfer_id"], minor, history, stop, rng)


def _close(
    servers: Iterator[httpx.Client],
    key: str,
    transfer_id: str,
    held_minor: int,
    history: History,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    """Post (all or part), void, or leave a pending transfer, after a moment (so some expire)."""
    choice = rng.random()
    if choice >= 0.8:
        return  # left: it expires, or (without a timeout) stays pending
    stop.wait(rng.uniform(0, 1.5))
    op, body = ("post", {"amount": amount_text(rng.randint(1, held_minor))}) if choice < 0.5 \
        else ("void", {})  # fmt: skip
    started = history.now()
    result = _request(servers, f"/transfers/{transfer_id}/{op}", f"{key}-{op}", body, stop, rng)
    history.record(op, key=f"{key}-{op}", started=started,
                   **{**result, "transfer_id": transfer_id})  # fmt: skip


def _request(
    servers: Iterator[httpx.Client],
    path: str,
    key: str,
    body: dict,
    stop: threading.Event,
    rng: random.Random,
) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    unexpected: list[str] = []
    attempts = lost = 0
    while True:
        attempts += 1
        client = next(servers)
        try:
            response = client.post(path, json=body, headers={"Idempotency-Key": key})
        except (httpx.ConnectError, httpx.ConnectTimeout):
            statuses["unreachable"] += 1  # never sent: no effect, but retry all the same
        except httpx.TransportError:
            statuses["lost"] += 1  # sent, answer lost: its fate is unknown
            lost += 1
        else:
            statuses[str(response.status_code)] += 1
            code = _code(response)
            server = str(client.base_url).rstrip("/")  # which one gave the definite answer
            if response.status_code in (200, 201):
                return _ended("ok", attempts, lost, statuses, unexpected, server=server,
                              transfer_id=response.json()["transfer_id"])  # fmt: skip
            if response.status_code == 409 and code in REFUSALS:
                return _ended("refused", attempts, lost, statuses, unexpected, server=server,
                              code=code)  # fmt: skip
            if RETRY_CODES.get(response.status_code) != code:
                unexpected.append(f"{response.status_code} {code}")
                if response.status_code < 500:
                    return _ended("error", attempts, lost, statuses, unexpected)
        if stop.is_set():
            return _ended("indeterminate", attempts, lost, statuses, unexpected)
        stop.wait(rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempts, 10))))


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code", ""))
    except ValueError:
        return "<not json>"


def _ended(
    outcome: str,
    attempts: int,
    lost: int,
    statuses: Counter[str],
    unexpected: list[str],
    **extra: Any,
) -> dict[str, Any]:
    return {"outcome": outcome, "attempts": attempts, "lost": lost,
            "statuses": dict(statuses), "unexpected": unexpected, **extra}  # fmt: skip


def run_reader(
    base_url: str, token: str, bank: Bank, history: History, stop: threading.Event
) -> None:
    """Fetch every balance, again and again; record what answered (a server down answers
    nothing, which is fine; a balance below zero, or an undocumented error, is not)."""
    with http_client(base_url, token) as client:
        while not stop.is_set():
            _read_all(client, bank, history)
            stop.wait(0.05)


def _read_all(client: httpx.Client, bank: Bank, history: History) -> None:
    balances: dict[str, int] = {}
    unexpected: list[str] = []
    for account in bank.accounts:
        try:
            response = client.get(f"/accounts/{account}")
        except httpx.TransportError:
            continue
        if response.status_code == 200:
            balances[account] = minor_of(response.json()["balance"])
        elif (response.status_code, _code(response)) != (503, "store_unavailable"):
            unexpected.append(f"{response.status_code} {_code(response)}")
    if balances or unexpected:
        history.record("read", balances=balances, unexpected=unexpected)
