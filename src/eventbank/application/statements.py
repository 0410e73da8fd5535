"""Balances at a past instant and statements of a period, folded from an account's own events.

When an event happened is its ``metadata["recorded_at"]``: the service's clock when it decided
the command (``LedgerService.clock``). The versions of one stream are written in order, each by
the process that decided it, so along a stream ``recorded_at`` does not go back, and "the account
as of T" is the account folded up to the last version recorded at or before T. That version is
found by a binary search over the stream's versions (the head first; each probe one indexed read
of one event), and the state there is the newest snapshot at or below it
(``load_snapshot(id, max_version)``: snapshots are kept for every ``snapshot_every`` events)
plus the events after that snapshot. A 100,000-event account answers after about 17 probes, one
snapshot read and fewer than ``snapshot_every`` events, however far back T is.

Clock skew: if two processes whose clocks disagree write one stream, a later version can carry
an earlier ``recorded_at``. The search then still stops at a version, so the answer is always a
real state of the account (a prefix of its stream, never a mix), but which prefix can be off by
up to the skew around T, and a statement may show such a line just outside its period. Keep the
writers' clocks synchronised (NTP) and the error stays as small as their skew.

A snapshot of another state schema is not used (the fold starts from the stream's first event
instead), as in ``LedgerService._load``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from eventbank.application.projections.accounts import kind_of
from eventbank.domain import account as domain
from eventbank.domain.canonical import canonical_json
from eventbank.domain.deadlines import utc_text
from eventbank.domain.errors import AccountNotFound, InvalidInput
from eventbank.domain.events import (
    AccountEvent,
    FundsDeposited,
    FundsWithdrawn,
    LegPosted,
    TransferredIn,
    TransferredOut,
    event_from_data,
)
from eventbank.domain.money import format_minor
from eventbank.ports.event_store import MAX_READ_LIMIT, EventStore, RecordedEvent, stream_head

MAX_STATEMENT_EVENTS = 10_000  # events one statement may cover: a bounded read and answer
FIRST_YEAR, LAST_YEAR = 1970, 9998  # instants accepted: no event is older, no date overflows
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ONE_TICK = timedelta(microseconds=1)  # recorded_at's resolution

# The kinds that move the balance, with their sign: a pending transfer's hold and release
# change what is reserved, not the balance, so they are no statement line (its posting is).
_SIGNS = {"deposit": 1, "transfer_in": 1, "transaction_credit": 1,
          "withdrawal": -1, "transfer_out": -1, "transaction_debit": -1}  # fmt: skip


class InvalidAsOf(InvalidInput):
    code = "invalid_as_of"


class InvalidPeriod(InvalidInput):
    code = "invalid_period"


class StatementTooLong(InvalidInput):
    code = "statement_too_long"


# ---------------------------------------------------------------- parsing


def parse_instant(text: str) -> datetime | None:
    """An RFC 3339 instant with its offset (``2026-11-30T23:59:59Z``) in UTC; None if it is
    not one, or outside the years accepted."""
    normal = text.strip().upper() if isinstance(text, str) else ""
    if not _INSTANT.fullmatch(normal):
        return None
    try:
        moment = datetime.fromisoformat(normal)
        return moment.astimezone(UTC) if FIRST_YEAR <= moment.year <= LAST_YEAR else None
    except (ValueError, OverflowError):  # a 30 February; an offset past year 1
        return None


_AN_INSTANT = (f"an RFC 3339 instant with its offset, such as 2026-11-30T23:59:59Z, from "
               f"{FIRST_YEAR} to {LAST_YEAR}")  # fmt: skip


def parse_as_of(text: str) -> datetime:
    """``as_of`` as an instant, or ``InvalidAsOf`` (``invalid_as_of``)."""
    moment = parse_instant(text)
    if moment is None:
        raise InvalidAsOf(f"as_of must be {_AN_INSTANT}; got {text!r}")
    return moment


def parse_bound(text: str, what: str, *, end: bool) -> datetime:
    """A period's ``from`` or ``to``: an RFC 3339 instant, or a date meaning that UTC day's
    start (``from``) or its last instant (``to``, so the day is included)."""
    normal = text.strip() if isinstance(text, str) else ""
    if _DATE.fullmatch(normal):
        try:
            day = date.fromisoformat(normal)
        except ValueError:
            day = None
        if day is not None and FIRST_YEAR <= day.year <= LAST_YEAR:
            start = datetime.combine(day, time(), UTC)
            return start + timedelta(days=1) - _ONE_TICK if end else start
    moment = parse_instant(text)
    if moment is None:
        raise InvalidPeriod(f"{what} must be a date such as 2026-11-01, or {_AN_INSTANT}; "
                            f"got {text!r}")  # fmt: skip
    return moment


def parse_period(from_text: str, to_text: str) -> tuple[datetime, datetime]:
    """A statement's ``from`` and ``to`` (both included), each a date or an instant."""
    return parse_bound(from_text, "from", end=False), parse_bound(to_text, "to", end=True)


# ---------------------------------------------------------------- as of an instant


def balance_as_of(
    events: EventStore, account_id: str, instant: datetime, *, now: datetime
) -> dict[str, Any]:
    """The account's public JSON (``describe_account``) as of ``instant``, plus ``as_of``.

    ``instant`` after ``now`` is ``InvalidAsOf``: the future is not known yet, and an answer
    would change. An account with no event by ``instant`` is ``AccountNotFound``."""
    if instant > now:
        raise InvalidAsOf(f"as_of {utc_text(instant)} is in the future (now {utc_text(now)})")
    domain.check_account_id(account_id)
    version = _version_at(events, account_id, instant, _head(events, account_id))
    state = _state_at(events, account_id, version)
    if state is None:
        raise AccountNotFound(f"account {account_id!r} did not exist at {utc_text(instant)}")
    return {**domain.describe_account(state), "as_of": utc_text(instant)}


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class StatementLine:
    """One movement of the balance: ``amount_minor`` signed (negative: money out)."""

    version: int
    recorded_at: str
    kind: str
    amount_minor: int
    balance_after_minor: int
    description: str
    counterparty: str | None
    transfer_id: str | None  # the transfer's or the transaction's id
    reverses: str | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Statement:
    """An account's movements from ``start`` to ``end`` (both included), in minor units."""

    account_id: str
    currency: str
    start: datetime
    end: datetime
    opening_minor: int
    lines: tuple[StatementLine, ...]

    @property
    def total_in_minor(self) -> int:
        return sum(line.amount_minor for line in self.lines if line.amount_minor > 0)

    @property
    def total_out_minor(self) -> int:
        return -sum(line.amount_minor for line in self.lines if line.amount_minor < 0)

    @property
    def closing_minor(self) -> int:
        """Opening + in - out; tests/test_statements.py checks that it is the balance the
        events fold to at ``end``, and that each line's running balance adds up to it."""
        return self.opening_minor + self.total_in_minor - self.total_out_minor


def statement(
    events: EventStore, account_id: str, start: datetime, end: datetime, *, now: datetime
) -> Statement:
    """Every movement of the balance recorded from ``start`` to ``end`` (both included), with
    the balance before the first (opening) and after each.

    Refused: ``start`` after ``end`` or after ``now`` (``InvalidPeriod``); a period of more
    than ``MAX_STATEMENT_EVENTS`` events (``StatementTooLong``: ask for a shorter one). An
    ``end`` after ``now`` is taken as ``now``, so the statement says what is known. An account
    with no event by ``end`` is ``AccountNotFound``."""
    if start > end:
        raise InvalidPeriod(f"from {utc_text(start)} is after to {utc_text(end)}")
    if start > now:
        raise InvalidPeriod(f"from {utc_text(start)} is in the future (now {utc_text(now)})")
    end = min(end, now)
    domain.check_account_id(account_id)
    closing = _version_at(events, account_id, end, _head(events, account_id))
    if closing == 0:
        raise AccountNotFound(f"account {account_id!r} did not exist by {utc_text(end)}")
    opening = _search(events, account_id, start - _ONE_TICK, closing)
    if closing - opening > MAX_STATEMENT_EVENTS:
        raise StatementTooLong(
            f"the period holds {closing - opening:,} events of {account_id!r}; a statement "
            f"covers at most {MAX_STATEMENT_EVENTS:,}: ask for a shorter period"
        )
    state = _state_at(events, account_id, opening)
    opening_minor, lines = state.balance_minor if state else 0, []
    for recorded in _read_versions(events, account_id, opening, closing):
        event = _domain_event(recorded)
        state = domain.apply(state, event)
        kind = kind_of(event)
        if kind in _SIGNS:
            lines.append(_line(recorded, event, kind, state.balance_minor))
    assert state is not None  # closing >= 1: the account's first event was folded
    return Statement(account_id, state.currency, start, end, opening_minor, tuple(lines))


def _line(recorded: RecordedEvent, event: AccountEvent, kind: str, balance: int) -> StatementLine:
    """The line of a movement, from its stored data (the domain event gives the words)."""
    data = recorded.data
    counterparty = data.get("to_account_id") or data.get("from_account_id")
    return StatementLine(
        recorded.version, utc_text(recorded_at(recorded)), kind,
        _SIGNS[kind] * int(data["amount_minor"]), balance, describe_movement(event),
        counterparty, data.get("transfer_id") or data.get("transaction_id"),
        data.get("reverses") or None, dict(data.get("metadata") or {}),
    )  # fmt: skip


def describe_movement(event: AccountEvent) -> str:
    """A line's words: a transaction's own description, else what happened and with whom."""
    match event:
        case LegPosted(description=text, direction=direction):
            return text or f"transaction {direction}"
        case FundsDeposited(channel=channel):
            text = f"deposit ({channel})"
        case TransferredOut(to_account_id=other):
            text = f"transfer to {other}"
        case TransferredIn(from_account_id=other):
            text = f"transfer from {other}"
        case FundsWithdrawn():
            text = "withdrawal"
        case _:
            text = event.event_type
    reverses = getattr(event, "reverses", "")
    return f"reversal of {reverses}: {text}" if reverses else text


def describe_statement(found: Statement) -> dict[str, Any]:
    """The statement's public JSON: money as decimal strings in the account's currency."""
    money = _money(found.currency)
    return {
        "account_id": found.account_id,
        "currency": found.currency,
        "from": utc_text(found.start),
        "to": utc_text(found.end),
        "opening_balance": money(found.opening_minor),
        "total_in": money(found.total_in_minor),
        "total_out": money(found.total_out_minor),
        "closing_balance": money(found.closing_minor),
        "lines": [
            {"version": line.version, "recorded_at": line.recorded_at, "kind": line.kind,
             "amount": money(line.amount_minor), "balance_after": money(line.balance_after_minor),
             "description": line.description, "counterparty": line.counterparty,
             "transfer_id": line.transfer_id, "reverses": line.reverses,
             "metadata": dict(line.metadata)}
            for line in found.lines
        ],
    }  # fmt: skip


CSV_COLUMNS = ("recorded_at", "version", "kind", "description", "amount", "balance",
               "currency", "counterparty", "transfer_id", "reverses", "metadata")  # fmt: skip


def statement_csv(found: Statement) -> str:
    """The statement as CSV (RFC 4180, UTF-8 text): a header, an opening-balance row, one row
    per line, a closing-balance row. Amounts are decimal strings; metadata is its JSON; text a
    spreadsheet would run as a formula is quoted with a leading apostrophe."""
    money, buffer = _money(found.currency), io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerow([utc_text(found.start), "", "opening_balance", "opening balance", "",
                     money(found.opening_minor), found.currency, "", "", "", ""])  # fmt: skip
    for line in found.lines:
        writer.writerow([
            line.recorded_at, line.version, line.kind, _cell(line.description),
            money(line.amount_minor), money(line.balance_after_minor), found.currency,
            line.counterparty or "", line.transfer_id or "", line.reverses or "",
            _cell(canonical_json(dict(line.metadata))) if line.metadata else "",
        ])  # fmt: skip
    writer.writerow([utc_text(found.end), "", "closing_balance", "closing balance", "",
                     money(found.closing_minor), found.currency, "", "", "", ""])  # fmt: skip
    return buffer.getvalue()


def _cell(text: str) -> str:
    """Caller-written text made inert for spreadsheets (OWASP CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _money(currency: str) -> Callable[[int], str]:
    """Minor units as the currency's decimal string."""
    return lambda minor: format_minor(minor, currency)


# ---------------------------------------------------------------- reading the stream


def _head(events: EventStore, account_id: str) -> RecordedEvent:
    head = stream_head(events, account_id)
    if head is None:
        raise AccountNotFound(f"account {account_id!r} does not exist")
    return head


def recorded_at(event: RecordedEvent) -> datetime:
    """When the service decided ``event`` (an offset-less time is read as UTC)."""
    moment = datetime.fromisoformat(str(event.metadata["recorded_at"]))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _version_at(events: EventStore, account_id: str, instant: datetime, head: RecordedEvent) -> int:
    """The last version recorded at or before ``instant`` (0: none): the head's, if it is (the
    present costs no search), else one below it."""
    if recorded_at(head) <= instant:
        return head.version
    return _search(events, account_id, instant, head.version - 1)


def _search(events: EventStore, account_id: str, instant: datetime, top: int) -> int:
    """The last version at or below ``top`` recorded at or before ``instant`` (0: none), by
    binary search: one one-event read per probe, about log2(top) of them."""
    low = 0  # at or before ``instant`` (0: before the stream began)
    while low < top:
        middle = (low + top + 1) // 2
        (probe,) = events.read_stream(account_id, middle - 1, limit=1)
        if recorded_at(probe) <= instant:
            low = middle
        else:
            top = middle - 1
    return low


def _state_at(events: EventStore, account_id: str, version: int) -> domain.Account | None:
    """The account as of ``version`` (None at 0): the newest usable snapshot at or below it,
    plus the events after that snapshot up to ``version``."""
    if version == 0:
        return None
    snapshot = events.load_snapshot(account_id, version)
    state = None
    if snapshot is not None and snapshot.state_schema_version == domain.STATE_SCHEMA_VERSION:
        state = domain.from_snapshot(dict(snapshot.state["account"]))
    after = state.version if state else 0
    tail = (_domain_event(e) for e in _read_versions(events, account_id, after, version))
    return domain.replay(tail, state)


def _read_versions(
    events: EventStore, account_id: str, after: int, upto: int
) -> Iterator[RecordedEvent]:
    """The stream's events after version ``after`` up to ``upto``, read in bounded pages."""
    while after < upto:
        page = events.read_stream(account_id, after, limit=min(upto - after, MAX_READ_LIMIT))
        if not page:
            return
        yield from page
        after = page[-1].version


def _domain_event(recorded: RecordedEvent) -> AccountEvent:
    return event_from_data(recorded.event_type, dict(recorded.data), recorded.schema_version)
