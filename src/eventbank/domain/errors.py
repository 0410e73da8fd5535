"""The error families every layer speaks.

Each error carries a stable machine-readable ``code``. The interfaces map the *family*
to an outcome (CLI exit code, HTTP status) so a new error needs no new mapping:

- ``InvalidInput``  — the caller sent something malformed; nothing was attempted.
- ``RuleViolation`` — well-formed, but the ledger's rules refuse it (e.g. overdraft).
- ``Conflict``      — it clashed with a concurrent or earlier request; may succeed on retry
                      (or, for a reused idempotency key, needs a new key).
"""

from __future__ import annotations


class EventbankError(Exception):
    """Base of every error eventbank raises on purpose."""

    code = "error"


class InvalidInput(EventbankError):
    code = "validation_error"


class InvalidAmount(InvalidInput):
    code = "invalid_amount"


class UnknownCurrency(InvalidInput):
    code = "invalid_currency"


class RuleViolation(EventbankError):
    code = "rule_violation"


class InsufficientFunds(RuleViolation):
    code = "insufficient_funds"


class NotFound(RuleViolation):
    code = "not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class AccountAlreadyExists(RuleViolation):
    code = "account_exists"


class AccountIsClosed(RuleViolation):
    code = "account_closed"


class AccountIsFrozen(RuleViolation):
    code = "account_frozen"


class AccountNotFrozen(RuleViolation):
    code = "account_not_frozen"


class CurrencyMismatch(RuleViolation):
    code = "currency_mismatch"


class SelfTransfer(RuleViolation):
    code = "self_transfer"


class BalanceNotZero(RuleViolation):
    code = "balance_not_zero"


class BalanceLimitExceeded(RuleViolation):
    code = "balance_limit_exceeded"


class TransferNotFound(NotFound):
    code = "transfer_not_found"


class TransferNotPending(RuleViolation):
    """Post or void of a transfer that is not pending: final from the start, or already
    posted, voided or expired."""

    code = "transfer_not_pending"


class TransferExpired(RuleViolation):
    """Post or void of a pending transfer past its timeout (released, or about to be)."""

    code = "transfer_expired"


class TooManyHolds(RuleViolation):
    code = "too_many_holds"


class Conflict(EventbankError):
    code = "conflict"
