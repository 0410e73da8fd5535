"""Request and response bodies of the HTTP API, with the examples shown in /openapi.json.

Money travels as a decimal string with its currency (``{"amount": "80.00"}``); a JSON number is
refused with a message that says so, because a float must never touch a balance.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt

from eventbank.domain.account import MAX_REASON_LENGTH
from eventbank.domain.deadlines import MAX_TIMEOUT_S
from eventbank.domain.journal import MAX_DESCRIPTION_LENGTH, MAX_LEGS
from eventbank.domain.metadata import MAX_KEYS, MAX_VALUE_LENGTH


def _decimal_string(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('money must be a decimal string such as "80.00", not a JSON number')
    return value


Amount = Annotated[
    str,
    BeforeValidator(_decimal_string),
    Field(pattern=r"^[0-9]{1,20}(\.[0-9]{1,3})?$", max_length=24, examples=["80.00"],
          description="Decimal string in the account's currency; never a JSON number."),
]  # fmt: skip
AccountId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", examples=["acc-1"])]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["USD"])]
Metadata = Annotated[
    dict[str, str] | None,
    Field(description=f"Your own string keys and values, stored in the event, part of the "
          f"idempotency fingerprint and searchable: at most {MAX_KEYS} keys of 1-40 letters, "
          f"digits, '_', '.' or '-', each value at most {MAX_VALUE_LENGTH} characters.",
          examples=[{"order_id": "ord-1042"}]),
]  # fmt: skip


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpenAccountRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"account_id": "acc-1", "owner": "Ada Lovelace", "type": "CHECKING", "currency": "USD",
         "initial_deposit": "100.00"}]})  # fmt: skip

    account_id: AccountId
    owner: Annotated[str, Field(min_length=1, max_length=200)]
    type: Literal["CHECKING", "SAVINGS"]
    currency: Currency = "USD"
    initial_deposit: Amount | None = None
    overdraft_limit: Annotated[
        Amount | None,
        Field(description="The balance may go down to minus this (default 0: never below zero)."),
    ] = None


class MoneyRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": "80.00"}, {"amount": "80.00", "metadata": {"invoice": "inv-7"}}]})  # fmt: skip

    amount: Amount
    metadata: Metadata = None


class LimitRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"overdraft_limit": "500.00"}]})  # fmt: skip

    overdraft_limit: Annotated[
        Amount,
        Field(description='The balance may go down to minus this; "0" removes the overdraft.'),
    ]


class ReasonRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"reason": "card reported stolen, case 4411"}]})  # fmt: skip

    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_LENGTH)]


class TransferFields(Strict):
    """What every transfer names: a single one (``TransferRequest``) or a batch item."""

    from_account_id: AccountId
    to_account_id: AccountId
    amount: Amount
    metadata: Metadata = None


class TransferRequest(TransferFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"from_account_id": "acc-1", "to_account_id": "acc-2", "amount": "25.00"},
        {"from_account_id": "acc-1", "to_account_id": "acc-2", "amount": "25.00",
         "pending": True, "timeout_s": 3600}]})  # fmt: skip

    pending: StrictBool = Field(
        False,
        description="Reserve the amount on the debit account (no longer available there) and "
        "announce it on the credit account; nothing moves until `POST /transfers/{id}/post` "
        "(all or part of it), `/void`, or the timeout.",
    )
    timeout_s: Annotated[
        StrictInt | None,
        Field(ge=1, le=MAX_TIMEOUT_S,
              description="A pending transfer expires (is released) this many seconds after it "
              "is made: 1 to 2,592,000 (30 days). Without it, it stays pending until posted or "
              "voided. Only with `pending`."),
    ] = None  # fmt: skip


class PostTransferRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"amount": "12.50"}, {}]})  # fmt: skip

    amount: Annotated[
        Amount | None,
        Field(description="At most the pending amount; the rest is released. Absent: all of it."),
    ] = None


class VoidTransferRequest(Strict):
    """An empty object, or no body at all."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})


class LegRequest(Strict):
    account_id: AccountId
    amount: Amount
    direction: Literal["debit", "credit"] = Field(
        description="`debit` takes the amount from the account, `credit` adds it."
    )


class TransactionRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "currency": "USD", "description": "order 1042: payout less fee",
        "legs": [{"account_id": "buyer", "amount": "10.00", "direction": "debit"},
                 {"account_id": "seller", "amount": "9.50", "direction": "credit"},
                 {"account_id": "fees", "amount": "0.50", "direction": "credit"}],
        "metadata": {"order_id": "1042"}}]})  # fmt: skip

    currency: Currency
    legs: Annotated[
        list[LegRequest],
        Field(description=f"2 to {MAX_LEGS} legs, each account once; debits equal credits "
              f"(`unbalanced_transaction`). {MAX_LEGS} is what one atomic write holds on every "
              "engine (`too_many_legs`).", max_length=256),
    ]  # fmt: skip
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] = ""
    metadata: Metadata = None


class ReverseRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {}, {"amount": "5.00", "metadata": {"refund": "rf-9"}}]})  # fmt: skip

    amount: Annotated[
        Amount | None,
        Field(description="At most what is left to reverse; absent: all of it. A transaction is "
              "reversed leg by leg in proportion, so the amount must split exactly."),
    ] = None  # fmt: skip
    metadata: Metadata = None


class AccountView(BaseModel):
    account_id: str
    owner: str
    type: str
    currency: str
    balance: Annotated[str, Field(examples=["80.00"])]
    pending_debits: Annotated[
        str | None,
        Field(
            examples=["0.00"],
            description="Reserved by pending transfers from the account. "
            "Absent only in a replayed answer recorded before pending transfers existed.",
        ),
    ] = None
    pending_credits: Annotated[
        str | None,
        Field(
            examples=["0.00"],
            description="Announced by pending transfers to the account "
            "(not yet available to it). Absent as pending_debits.",
        ),
    ] = None
    overdraft_limit: Annotated[str, Field(examples=["0.00"])]
    available: Annotated[
        str,
        Field(
            examples=["80.00"],
            description="balance - pending_debits + overdraft_limit: what a withdrawal or "
            "transfer may take",
        ),
    ]
    version: int
    status: Literal["OPEN", "FROZEN", "CLOSED"]


class LegResult(BaseModel):
    account_id: str
    direction: Literal["debit", "credit"]
    amount: str
    account: AccountView


class CommandResult(BaseModel):
    """What a write did. A replay (same Idempotency-Key and body) returns this same body, with
    the response header ``Idempotent-Replayed: true``."""

    command_id: str
    kind: str
    amount: Annotated[
        str | None, Field(description="What moved; for a void, what was released.")
    ] = None
    currency: str | None = None
    account: AccountView | None = None
    transfer_id: str | None = None
    status: Annotated[
        Literal["pending", "posted", "voided", "expired"] | None,
        Field(
            description="A pending transfer's state after this command; absent for a "
            "transfer made final at once and for other commands."
        ),
    ] = None
    pending_amount: Annotated[
        str | None, Field(description="A post's or void's: what the transfer had reserved.")
    ] = None
    expires_at: Annotated[
        str | None,
        Field(
            description="A pending transfer's deadline (RFC 3339, UTC); absent without a timeout.",
            examples=["2026-12-05T10:00:00.000000Z"],
        ),
    ] = None
    from_: Annotated[AccountView | None, Field(alias="from")] = None
    to: AccountView | None = None
    transaction_id: str | None = None
    description: str | None = None
    legs: list[LegResult] | None = None
    metadata: dict[str, str] | None = None
    reverses: Annotated[
        str | None, Field(description="A reversal's: the transfer or transaction it reverses.")
    ] = None
    reversed_total: Annotated[
        str | None, Field(description="A reversal's: how much of the original is now reversed.")
    ] = None

    model_config = ConfigDict(populate_by_name=True)


MovementKind = Literal[
    "deposit", "withdrawal", "transfer_out", "transfer_in", "hold_out", "hold_in",
    "posted_out", "posted_in", "voided_out", "voided_in", "expired_out", "expired_in",
    "transaction_debit", "transaction_credit",
]  # fmt: skip
"""A money movement's kind, in an account's history and in the recent-activity feed."""


class MovementView(BaseModel):
    version: int
    kind: MovementKind = Field(
        description="A pending transfer's side is a movement too, its balance unchanged: "
        "`hold_*` when it is made (the amount held), then `posted_*` (followed by the "
        "`transfer_*` of the amount that moved), `voided_*` or `expired_*` when it "
        "is closed. `_out` is the debit side. `transaction_*`: a leg of a multi-leg "
        "transaction (`transfer_id` is the transaction's id)."
    )
    amount: str
    currency: str
    balance_after: str
    counterparty: str | None
    transfer_id: str | None
    recorded_at: str
    metadata: Annotated[dict[str, str], Field(description="The command's metadata.")] = {}
    description: Annotated[str, Field(description="A transaction's description.")] = ""
    reverses: Annotated[
        str | None, Field(description="The transfer or transaction this movement reverses.")
    ] = None
    actor: Annotated[
        str | None,
        Field(description="Who made it, as its event recorded: the token's name; `local` for "
              "the CLI, the library and the server's own work (an expiry)."),
    ] = None  # fmt: skip


class MovementPage(BaseModel):
    items: list[MovementView]
    next_after_version: int | None = Field(
        description="Pass as after_version for the next page; null when this is the last page."
    )


class PendingTransferView(BaseModel):
    transfer_id: str
    from_account_id: str
    to_account_id: str
    amount: Annotated[str, Field(description="What it reserves on the debit account.")]
    currency: str
    expires_at: Annotated[str | None, Field(description="RFC 3339 UTC; null: no timeout.")]
    overdue: Annotated[
        bool,
        Field(description="Past its timeout: it reserves nothing more, its expiry is about "
              "to be recorded, and it can no longer be posted or voided."),
    ]  # fmt: skip


class PendingTransferPage(BaseModel):
    items: list[PendingTransferView]


class EventView(BaseModel):
    position: int | None
    event_id: str
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    schema_version: int
    data: dict[str, Any]
    metadata: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventView]
    next_after_position: int | None


class Health(BaseModel):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="unavailable (503): a check failed; degraded (200): ready, but some streams "
        "are parked"
    )
    checks: dict[str, str] = {}
    parked_streams: int | None = Field(
        None,
        description="Streams a projection has parked on a failing event (readiness only); "
        "they do not make the service unready (see eventbank_projection_parked_streams).",
    )


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str
    title: str
    status: int
    code: str
    detail: str
    instance: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None


# The dashboard's, audits' and operations' bodies.


class WhoAmI(BaseModel):
    name: str
    role: str
    permissions: list[str]


class AccountPage(BaseModel):
    items: list[AccountView]
    next_after: str | None = Field(
        description="Pass as after for the next page; null when this is the last page."
    )


class StoredEvent(EventView):
    hash: str = Field(description="sha256 of the previous event's hash and this event.")


class StoredEventPage(BaseModel):
    items: list[StoredEvent]
    next_after_version: int | None


class CurrencyTotal(BaseModel):
    currency: str
    accounts_open: int
    balance: Annotated[str, Field(examples=["1250.00"])]


class ProjectionLag(BaseModel):
    checkpoint: int
    lag_events: int
    lag_capped: bool
    lag_seconds: float
    parked_streams: int
    last_error: str | None


class RateBucket(BaseModel):
    start: str
    events_per_s: float | None = Field(description="null: the sample does not cover it.")
    transfers_per_s: float | None


class Activity(BaseModel):
    bucket_seconds: int
    window_seconds: int
    sampled_events: int
    buckets: list[RateBucket]


class Stats(BaseModel):
    generated_at: str
    accounts_open: int
    totals: list[CurrencyTotal]
    projection: ProjectionLag
    activity: Activity


class AuditRecord(BaseModel):
    """One ``AuditCompleted`` event of the ``audit#trail`` stream."""

    version: int
    clean: bool
    streams: int
    events: int
    findings: dict[str, int] = Field(description="Count of findings by kind.")
    digest: str
    hash: str
    actor: str | None
    recorded_at: str | None


class Finding(BaseModel):
    kind: str
    stream: str | None
    version: int | None
    detail: str


class Books(BaseModel):
    balances: str
    deposits: str
    withdrawals: str


class AuditReport(BaseModel):
    clean: bool
    streams: int
    events: int
    findings: list[Finding]
    books: dict[str, Books]
    digest: str


class AuditJob(BaseModel):
    """An audit run in the background (``POST /audits``), followed at ``GET /audits/{id}``."""

    id: str
    status: Literal["running", "done", "failed"]
    actor: str = Field(description="Who started it (the token's name).")
    started_at: str
    finished_at: str | None = None
    report: AuditReport | None = Field(
        None, description="Once done: what the audit found (also recorded in the audit trail)."
    )
    error: str | None = Field(None, description="Once failed: why (nothing was recorded).")


# Batches of transfers (``POST /transfers/batch``).


class BatchTransferItem(TransferFields):
    """One item of a batch: a transfer with an idempotency key of its own (required: a batch
    retried without keys would pay twice). Always a final transfer: an item naming `pending`
    or `timeout_s` is refused."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"from_account_id": "acc-1", "to_account_id": "acc-2", "amount": "25.00",
         "idempotency_key": "payout-2024-11-acc-2"}]})  # fmt: skip

    idempotency_key: Annotated[
        str | None, Field(pattern=r"^[!-~]{1,255}$", examples=["payout-2024-11-acc-2"])
    ] = None


class TransferBatchRequest(Strict):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [
        {"from_account_id": "acc-1", "to_account_id": "acc-2", "amount": "25.00",
         "idempotency_key": "payout-1"},
        {"from_account_id": "acc-1", "to_account_id": "acc-3", "amount": "10.00",
         "idempotency_key": "payout-2"}], "atomic": False}]})  # fmt: skip

    items: Annotated[
        list[Any],
        Field(description="1 to 1,000 transfers, each a BatchTransferItem: `from_account_id`, "
              "`to_account_id`, `amount` and `idempotency_key`. An item that is not one is "
              "refused on its own, in its place in `results`.",
              json_schema_extra={"minItems": 1, "maxItems": 1000}),
    ]  # fmt: skip
    atomic: StrictBool = Field(
        False,
        description="All items or none, in one atomic write, which bounds the batch: 500 "
        "transfers on SQLite and PostgreSQL (1,000 events); on DynamoDB, 100 transaction items, "
        "5 per transfer and 1 per account (14 to 19 transfers). Larger: 422 batch_too_large.",
    )


class BatchItemError(BaseModel):
    """Why an item was not done: its problem ``type``, stable ``code`` and ``detail``, as a
    single transfer would have been answered."""

    type: str
    code: str
    detail: str


class BatchItemResult(BaseModel):
    index: int
    idempotency_key: str | None = Field(None, description="Absent if the item had none.")
    status: Literal["ok", "replayed", "refused"] = Field(
        description="ok: done now; replayed: done before under this key (the first outcome, no "
        "money moved now); refused: not done, see error."
    )
    transfer: CommandResult | None = None
    error: BatchItemError | None = None


class TransferBatchResult(BaseModel):
    """Each item's outcome, in the order sent."""

    results: list[BatchItemResult]
    succeeded: int = Field(description="Items done, now or before (ok + replayed).")
    refused: int
    replayed: int


class AccountAsOfView(AccountView):
    as_of: Annotated[
        str | None,
        Field(
            description="Present with the `as_of` parameter: the instant this state is as of "
            "(RFC 3339, UTC), folded from the account's events.",
            examples=["2026-11-30T23:59:59.000000Z"],
        ),
    ] = None


class StatementLine(BaseModel):
    version: int
    recorded_at: str
    kind: Literal[
        "deposit", "withdrawal", "transfer_out", "transfer_in", "transaction_debit",
        "transaction_credit",
    ] = Field(description="What moved the balance. A pending transfer's holds move none and "
              "are no line; its posting is a `transfer_*` line.")  # fmt: skip
    amount: Annotated[str, Field(description="Signed: negative is money out.", examples=["-5.00"])]
    balance_after: str
    description: Annotated[
        str,
        Field(description="A transaction's own description; else what happened and with whom, "
              'such as "transfer to bob" or "deposit (api)".'),
    ]  # fmt: skip
    counterparty: str | None
    transfer_id: Annotated[str | None, Field(description="The transfer's or transaction's id.")]
    reverses: Annotated[str | None, Field(description="A reversal's: what it reverses.")]
    metadata: dict[str, str]


class StatementView(BaseModel):
    """Every movement of the balance in the period, oldest first. Always
    `opening_balance + total_in - total_out = closing_balance`, and each line's
    `balance_after` is the one before plus its `amount`."""

    model_config = ConfigDict(populate_by_name=True)

    account_id: str
    currency: str
    from_: Annotated[str, Field(alias="from", description="The period's first instant (UTC).")]
    to: Annotated[
        str,
        Field(description="Its last instant (UTC): the `to` asked for, or now if that is later."),
    ]
    opening_balance: Annotated[str, Field(description="The balance just before `from`.")]
    total_in: str
    total_out: Annotated[str, Field(description="Positive: the sum of the money out.")]
    closing_balance: Annotated[str, Field(description="The balance at `to`.")]
    lines: list[StatementLine]


class TransferLegView(BaseModel):
    account_id: str
    direction: Literal["debit", "credit"]
    amount: str


class TransferMovementView(MovementView):
    account_id: str


class TransferRecord(BaseModel):
    """A transfer or a multi-leg transaction, from the transfers read model."""

    transfer_id: str
    kind: Literal["transfer", "transaction"]
    status: Annotated[
        Literal["posted", "pending", "voided", "expired"],
        Field(description="posted: the money moved; pending, voided, expired: a pending "
              "transfer's other states."),
    ]  # fmt: skip
    amount: Annotated[str, Field(description="What moved (a transaction's debits).")]
    pending_amount: Annotated[
        str | None, Field(description="What a pending transfer reserved; null if never pending.")
    ] = None
    currency: str
    from_account_id: Annotated[
        str | None, Field(description="A transfer's; null for a transaction.")
    ] = None
    to_account_id: str | None = None
    accounts: Annotated[list[str], Field(description="Every account it touches.")]
    created_at: Annotated[str, Field(description="Its first movement's time, RFC 3339 UTC.")]
    recorded_at: Annotated[str | None, Field(description="As recorded (GET by id).")] = None
    metadata: dict[str, str]
    description: Annotated[str, Field(description="A transaction's description.")]
    reverses: Annotated[
        str | None, Field(description="The transfer or transaction this one reverses.")
    ] = None
    reversed_by: Annotated[list[str], Field(description="The reversals of it, by id.")]
    reversed_amount: Annotated[str, Field(description="How much of it they moved back.")]
    legs: Annotated[
        list[TransferLegView] | None, Field(description="A transaction's legs (GET by id).")
    ] = None
    movements: Annotated[
        list[TransferMovementView] | None,
        Field(description="Every movement it made, on each account, oldest first (GET by id)."),
    ] = None


class TransferSearchPage(BaseModel):
    items: list[TransferRecord]
    next: Annotated[
        str | None,
        Field(description="Pass as `after` for the next page (the same filters); null: no more. "
              "A page may be short, even empty, and still have one."),
    ]  # fmt: skip


# API tokens (http/tokens.py): never a hash; the secret only in the answer to its creation.


class NewTokenRequest(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "till-7", "role": "teller"}]}
    )

    # Plain strings: auth.check_new_token refuses a bad one with its own code (the CLI's rules).
    name: Annotated[str, Field(description="1-64 letters, digits, _ . : @ or -, starting with a "
                               "letter or digit; not env-…. Recorded as the actor of what the "
                               "token does.")]  # fmt: skip
    role: Annotated[str, Field(description="teller, auditor or admin.")]


class TokenView(BaseModel):
    name: str
    role: str
    created_at: Annotated[str | None, Field(description="UTC; null if the file does not say.")]
    last_used_at: Annotated[
        str | None,
        Field(description="UTC: as the token file records it (up to a minute late) or, if "
              "later, as the answering server process saw it; null: never used."),
    ]  # fmt: skip
    source: Annotated[
        Literal["file", "environment"],
        Field(description="The token file, or EVENTBANK_TOKENS (`env-N`)."),
    ]
    read_only: Annotated[
        bool, Field(description="True for EVENTBANK_TOKENS' tokens: not revoked here.")
    ]


class TokenPage(BaseModel):
    items: list[TokenView]


class NewToken(TokenView):
    token: Annotated[
        str,
        Field(description="The secret, shown in this answer only: only its sha256 is kept."),
    ]
