"""The clients of a chaos run: transfers over HTTP, retried with their key until answered, and
readers of every balance. Each finished operation becomes one line of the history.

A request is retried with the same ``Idempotency-Key`` whenever its answer says nothing
final: the answer was lost (timeout, reset), the server was unreachable, it was busy (503,
or a 409 ``concurrency_conflict`` after its own retries), its ledger process was lost while it
held the request (503 ``ledger_process_lost``), it could not yet tell (a reversal's 409
``not_yet_projected``), or it failed unexpectedly (5xx).
It ends ``ok`` (2xx), ``refused`` (409 ``insufficient_funds``; for a post or a void, 409
``transfer_not_pending`` or ``transfer_expired``; for a reversal, 409
``reversal_exceeds_original``), ``error`` (any other 4xx: a bug) or, if the run ends first,
``indeterminate``. Retrying with one key is always safe, so the checker may
demand that every key took effect at most once.

A share of the transfers (``HOLD_SHARE``) are pending transfers (``hold``), half of them with
a timeout of a second or two; each acknowledged one is then posted (in part or whole), voided,
or left to expire (or, without a timeout, to stay pending), each as an operation of its own.
A post or void may race the timeout and meet ``transfer_expired``; the holds dealt to the
clients' first operations (below) are closed in turn (``FIRST_CLOSES``), those to be posted or
voided with no timeout, so that even a slow engine's short run posts, voids and expires.

A share of the operations (``REVERSE_SHARE``, once the client has something to reverse) are
reversals, and of the others a share (``TRANSACTION_SHARE``) are multi-leg transactions
(``transaction``) over 3-4 accounts: one debit and several credits, or several debits and one
credit, balanced in minor units. A reversal (``reverse``) is of one of the client's recently
acknowledged transfers, posts or transactions: in full, or in part (for a transaction, by a
part that splits exactly over its legs), sometimes by more than is left to reverse. A
``not_reversible`` or ``transfer_not_found`` answer to one is an ``error``: each original
moved money and was acknowledged. The clients' first operations deal pending transfers,
transactions and transfers in turn (``FIRST_KINDS``), and a client dealt a transaction
reverses it at once, so that a short run starved by faults still has every kind.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from reliability.history import History

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=1.0)  # over the store's deadlines (5-10 s)
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 1.0
HOT_SHARE = 0.5  # of transfers that touch a hot account
REVERSE_SHARE = 0.1  # of operations that reverse an earlier one (once the client has one)
TRANSACTION_SHARE = 0.15  # of the others: multi-leg transactions
HOLD_SHARE = 0.5  # of the transfers (about 0.4 of all operations): pending transfers
FIRST_KINDS = ("hold", "transaction", "hold", "transfer")  # dealt to the clients' first ops
FIRST_CLOSES = ("post", "void", "leave")  # dealt in turn to the holds among those
RECENT_ORIGINALS = 20  # a client reverses one of its last acknowledged transfers or transactions
# answers that say nothing final, retried with the key: busy, the ledger process lost (its
# outcome unknown: serve --ledger-process), or (a reversal on DynamoDB, whose original's read
# model lags after a crash) "try again shortly"
RETRY_ANSWERS = {(503, "store_unavailable"), (503, "ledger_process_lost"),
                 (409, "concurrency_conflict"), (409, "not_yet_projected")}  # fmt: skip
REFUSALS = {"insufficient_funds", "transfer_not_pending", "transfer_expired",
            "reversal_exceeds_original"}  # 409, definite  # fmt: skip


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

    def group(self, rng: random.Random, size: int) -> list[str]:
        """``size`` distinct accounts (at most all), a hot one among them as often as in
        ``pair``."""
        chosen = rng.sample(self.accounts, min(size, len(self.accounts)))
        first = rng.choice(self.hot) if self.hot and rng.random() < HOT_SHARE else None
        if first is not None and first not in chosen:
            chosen[rng.randrange(len(chosen))] = first
        return chosen


@dataclass(frozen=True, slots=True)
class Original:
    """An acknowledged transfer or transaction a client may reverse: what it moved, and the
    step every partial reversal of it is a multiple of (so it splits exactly over its legs)."""

    movement_id: str
    kind: str  # "transfer" | "transaction"
    moved_minor: int
    step_minor: int = 1

    def reversal_minor(self, rng: random.Random) -> int | None:
        """Half the time None (all that is left), else a part: possibly more than is left, so
        over-reversals are tried too (and must be refused)."""
        if rng.random() < 0.5:
            return None
        return self.step_minor * rng.randint(1, self.moved_minor // self.step_minor)


def transaction_legs(bank: Bank, rng: random.Random) -> list[tuple[str, str, int]]:
    """(account, direction, minor) over 3-4 accounts: one side a single leg, the other several
    in small multiples of one unit, the two sides equal."""
    first, *others = bank.group(rng, rng.randint(3, 4))
    multiples = [rng.randint(1, 9) for _ in others]
    unit = rng.randint(1, bank.max_transfer_minor // sum(multiples))
    one, many = ("debit", "credit") if rng.random() < 0.5 else ("credit", "debit")
    legs = zip(others, multiples, strict=True)
    return [(first, one, unit * sum(multiples)), *((a, many, unit * k) for a, k in legs)]


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
    """Client ``number``: random transfers, transactions and reversals, one at a time, each
    retried until it has a definite answer, until ``stop``; the one unanswered then is
    indeterminate. Given several servers (of one store), it sends to each in turn: every
    request, and every retry of one, to the next, so a retry often meets its first attempt still
    running in another process."""
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
    originals: deque[Original] = deque(maxlen=RECENT_ORIGINALS)
    while not stop.is_set():
        sequence += 1
        key = f"c{number}-{sequence}"
        if originals and rng.random() < REVERSE_SHARE:
            _reverse(servers, key, rng.choice(originals), number, history, stop, rng)
            continue
        kind = _kind(number, sequence, rng)
        if kind == "transaction":
            original = _transaction(servers, key, number, bank, history, stop, rng)
        else:
            close = _first_close(number) if sequence == 1 else None
            original = _transfer(servers, key, number, kind, bank, history, stop, rng, close)
        if original is None:
            continue
        originals.append(original)
        if sequence == 1 and kind == "transaction":  # dealt first: reversed at once (``_kind``)
            sequence += 1
            _reverse(servers, f"c{number}-{sequence}", original, number, history, stop, rng)


def _kind(number: int, sequence: int, rng: random.Random) -> str:
    """A transfer, a pending one (hold) or a transaction, by the shares; but the clients' first
    operations deal the kinds in turn (and a transaction dealt is reversed at once), so that
    even a run whose faults leave each client one operation has every kind."""
    if sequence == 1:
        return FIRST_KINDS[number % len(FIRST_KINDS)]
    if rng.random() < TRANSACTION_SHARE:
        return "transaction"
    return "hold" if rng.random() < HOLD_SHARE else "transfer"


def _first_close(number: int) -> str:
    """How the hold dealt to client ``number``'s first operation is closed: the clients
    dealt holds take ``FIRST_CLOSES`` in turn."""
    return FIRST_CLOSES[number // FIRST_KINDS.count("hold") % len(FIRST_CLOSES)]


def _transfer(
    servers: Iterator[httpx.Client],
    key: str,
    number: int,
    op: str,
    bank: Bank,
    history: History,
    stop: threading.Event,
    rng: random.Random,
    close: str | None = None,
) -> Original | None:
    """A transfer, or (``op`` "hold") a pending one then closed (by ``close``, if dealt: then
    with no timeout unless left to expire); what moved money, if acknowledged."""
    source, target = bank.pair(rng)
    minor = rng.randint(1, bank.max_transfer_minor)
    body: dict[str, Any] = {"from_account_id": source, "to_account_id": target,
                            "amount": amount_text(minor)}  # fmt: skip
    if op == "hold":
        body["pending"] = True
        if close == "leave" or (close is None and rng.random() < 0.5):
            body["timeout_s"] = rng.choice((1, 2))
    started = history.now()
    result = _request(servers, "/transfers", key, body, stop, rng)
    history.record(op, key=key, client=number, source=source, target=target,
                   amount_minor=minor, started=started, **result)  # fmt: skip
    if result["outcome"] != "ok":
        return None
    if op == "hold":
        close = close or rng.choices(("post", "void", "leave"), (5, 3, 2))[0]
        return _close(servers, key, result["transfer_id"], minor, close, history, stop, rng)
    return Original(result["transfer_id"], "transfer", minor)


def _transaction(
    servers: Iterator[httpx.Client],
    key: str,
    number: int,
    bank: Bank,
    history: History,
    stop: threading.Event,
    rng: random.Random,
) -> Original | None:
    """A multi-leg transaction; the original it makes, if acknowledged."""
    legs = transaction_legs(bank, rng)
    body = {"currency": "USD", "description": f"chaos {key}",
            "legs": [{"account_id": account, "direction": direction, "amount": amount_text(minor)}
                     for account, direction, minor in legs]}  # fmt: skip
    moved = sum(minor for _, direction, minor in legs if direction == "debit")
    started = history.now()
    result = _request(servers, "/transactions", key, body, stop, rng)
    history.record("transaction", key=key, client=number, legs=legs, amount_minor=moved,
                   started=started, **result)  # fmt: skip
    if result["outcome"] != "ok":
        return None
    step = moved // math.gcd(*(minor for _, _, minor in legs))
    return Original(result["transaction_id"], "transaction", moved, step)


def _reverse(
    servers: Iterator[httpx.Client],
    key: str,
    original: Original,
    number: int,
    history: History,
    stop: threading.Event,
    rng: random.Random,
) -> None:
    """Reverse ``original`` in full or in part, as an operation of its own."""
    minor = original.reversal_minor(rng)
    body = {} if minor is None else {"amount": amount_text(minor)}
    path = f"/{original.kind}s/{original.movement_id}/reverse"
    started = history.now()
    result = _request(servers, path, key, body, stop, rng)
    history.record("reverse", key=key, client=number, original=original.movement_id,
                   original_kind=original.kind, amount_minor=minor, started=started,
                   **result)  # fmt: skip


def _close(
    servers: Iterator[httpx.Client],
    key: str,
    transfer_id: str,
    held_minor: int,
    close: str,
    history: History,
    stop: threading.Event,
    rng: random.Random,
) -> Original | None:
    """``close`` a pending transfer: post it (all or part) or void it, after a moment (so some
    expire first), or leave it; an acknowledged post is an original, of what it moved."""
    if close == "leave":
        return None  # it expires, or (without a timeout) stays pending
    stop.wait(rng.uniform(0, 1.5))
    posted = rng.randint(1, held_minor)
    op, body = ("post", {"amount": amount_text(posted)}) if close == "post" else ("void", {})
    started = history.now()
    result = _request(servers, f"/transfers/{transfer_id}/{op}", f"{key}-{op}", body, stop, rng)
    history.record(op, key=f"{key}-{op}", started=started,
                   **{**result, "transfer_id": transfer_id})  # fmt: skip
    if op == "post" and result["outcome"] == "ok":
        return Original(transfer_id, "transfer", posted)
    return None


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
            code, label = _code(response), str(response.status_code)
            # a 409 by its code: a conflict, a refusal and "not yet projected" differ
            statuses[f"{label} {code}" if label == "409" else label] += 1
            server = str(client.base_url).rstrip("/")  # which one gave the definite answer
            if response.status_code in (200, 201):
                answer = response.json()
                ids = {name: answer[name] for name in ("transfer_id", "transaction_id")
                       if name in answer}  # fmt: skip
                return _ended("ok", attempts, lost, statuses, unexpected, server=server, **ids)
            if response.status_code == 409 and code in REFUSALS:
                return _ended("refused", attempts, lost, statuses, unexpected, server=server,
                              code=code)  # fmt: skip
            if (response.status_code, code) not in RETRY_ANSWERS:
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
