"""One error hierarchy for everything a client can be told.

Each error knows its HTTP status and a stable problem ``type`` (RFC 9457); the app
registers one handler for ``CoinslotError`` and renders ``problem()`` as
``application/problem+json``. Messages state the facts, in minor units.
"""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://coinslot.dev/problems/"


class CoinslotError(Exception):
    status = 500
    type = "internal"
    title = "Internal error"
    retry_after: int | None = None  # seconds, sent as Retry-After when set
    challenge: str | None = None  # sent as WWW-Authenticate when set

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        return {
            "type": PROBLEM_BASE + self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }


class ConfigurationError(CoinslotError):
    """A setting is missing or malformed; raised at start-up, never per request."""

    type = "configuration"
    title = "Configuration error"


# 4xx -------------------------------------------------------------------------------


class BadRequest(CoinslotError):
    status = 400
    type = "bad-request"
    title = "Bad request"


class InvalidSetting(BadRequest):  # a site setting out of bounds (coinslot.sitesettings), created or changed
    type = "invalid-setting"
    title = "Invalid site setting"

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail, field=field)


class RequestAborted(BadRequest):
    """The client closed the connection before its request was complete: nobody is left to answer."""

    type = "request-aborted"
    title = "Request aborted"


class InvalidBody(CoinslotError):
    """The body is not JSON, has an unknown field or a field of the wrong type."""

    status = 422
    type = "invalid-body"
    title = "Invalid request body"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail, errors=errors or [])


class InvalidQuery(CoinslotError):
    status = 422
    type = "invalid-query"
    title = "Invalid query parameter"


class BodyTooLarge(CoinslotError):
    status = 413
    type = "body-too-large"
    title = "Request body too large"


class Unauthorized(CoinslotError):
    status = 401
    type = "unauthorized"
    title = "Missing or invalid credential"


class Forbidden(CoinslotError):
    status = 403
    type = "forbidden"
    title = "Forbidden"


class NotFound(CoinslotError):
    status = 404
    type = "not-found"
    title = "Not found"


class UnknownSite(NotFound):
    type = "unknown-site"
    title = "Unknown site"


class UnknownItem(NotFound):
    type = "unknown-item"
    title = "Unknown item"


class UnknownVoucher(NotFound):
    type = "unknown-voucher"
    title = "Unknown voucher"


class ItemArchived(CoinslotError):  # the publisher took the item off sale; who bought it keeps reading it
    status = 410
    type = "item-archived"
    title = "Item no longer sold"


class UnknownWallet(Unauthorized):
    """A well-signed wallet token whose wallet is gone or whose generation was replaced."""

    type = "unknown-wallet"
    title = "Wallet token no longer valid"

    def __init__(self, detail: str = "wallet token no longer valid (wallet unknown or recovered elsewhere)") -> None:
        super().__init__(detail)


class Conflict(CoinslotError):
    status = 409
    type = "conflict"
    title = "Conflict"


class PriceChanged(Conflict):
    type = "price-changed"
    title = "Price changed"

    def __init__(self, shown: int, price: int, currency: str) -> None:
        super().__init__(
            f"price shown {shown} != current price {price} ({currency} minor units)",
            price=price,
            currency=currency,
        )


class CurrencyMismatch(Conflict):
    type = "currency-mismatch"
    title = "Currency mismatch"


class IdempotencyKeyReused(Conflict):
    type = "idempotency-key-reused"
    title = "Idempotency-Key reused with another body"


class VoucherUnavailable(Conflict):
    type = "voucher-unavailable"
    title = "Voucher unavailable"


class VoucherAlreadyRedeemed(Conflict):
    type = "voucher-already-redeemed"
    title = "Voucher already redeemed by this wallet"


class VoucherDisabled(VoucherUnavailable):
    type = "voucher-disabled"
    title = "Voucher disabled by its site"


class DuplicateCode(Conflict):
    type = "duplicate-code"
    title = "Code already exists"


class PriceTestRunning(Conflict):
    type = "price-test-running"
    title = "A price test is running"


class NoPriceTest(Conflict):
    type = "no-price-test"
    title = "No price test is running"


class TopupPending(Conflict):
    """The wallet has a checkout that may still be paid: it cannot be erased until it is paid or expired."""

    type = "topup-pending"
    title = "Top-up pending"


class UnlockTokenInvalid(Unauthorized):
    type = "unlock-token-invalid"
    title = "Invalid unlock token"


class UnlockTokenExpired(UnlockTokenInvalid):
    type = "unlock-token-expired"
    title = "Unlock token expired"


class TopupAmountNotAllowed(CoinslotError):
    status = 422
    type = "topup-amount-not-allowed"
    title = "Top-up amount not allowed"


class RateLimited(CoinslotError):
    status = 429
    type = "rate-limited"
    title = "Too many requests"
    retry_after: int

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.retry_after = retry_after


class ServiceUnavailable(CoinslotError):
    status = 503
    type = "service-unavailable"
    title = "Service unavailable"
    retry_after = 1


class StoreUnavailable(ServiceUnavailable):
    """Redis could not be reached, or did not answer in time. Every request is safe to retry:
    an unlock whose reply was lost is found owned (or replayed by its Idempotency-Key)."""

    type = "store-unavailable"
    title = "Storage unavailable"


class BadWebhook(BadRequest):
    """A webhook whose signature is missing, wrong or too old, or whose body is not an event."""

    type = "bad-webhook"
    title = "Webhook refused"


class PaymentNotYetKnown(Conflict):
    """A refund or dispute for a payment not credited here yet; the provider retries the event later."""

    type = "payment-not-yet-known"
    title = "Payment not known yet"


class PaymentsUnavailable(ServiceUnavailable):
    """The payment provider could not be reached or is overloaded; trying again later may work."""

    type = "payments-unavailable"
    title = "Payment provider unavailable"


class PaymentsRefused(CoinslotError):
    """The payment provider refused our request (a configuration or account problem, not the reader's)."""

    status = 502
    type = "payments-refused"
    title = "Payment provider refused the request"


# Recovery codes (coinslot.recovery) ---------------------------------------------------


class BadRecoveryCode(BadRequest):
    """A recovery code that opens no wallet. Every such code gets this very answer, whether it
    was mistyped, replaced, or never issued: a guesser learns nothing from it."""

    type = "bad-recovery-code"
    title = "Recovery code not recognised"

    def __init__(self) -> None:
        super().__init__(
            "recovery code not recognised: it has 24 letters and digits, as shown when it was saved "
            "(case, spaces and dashes do not matter)"
        )


class WebhookUrlRefused(CoinslotError):  # webhooks (coinslot.hooks): https beyond loopback, no inward address
    status = 422
    type = "webhook-url-refused"
    title = "Webhook endpoint refused"


class UnknownWebhookEndpoint(NotFound):
    type = "unknown-webhook-endpoint"
    title = "Unknown webhook endpoint"


class UnknownWebhookEvent(NotFound):
    type = "unknown-webhook-event"
    title = "Unknown webhook event"


class TooManyWebhookEndpoints(Conflict):
    type = "too-many-webhook-endpoints"
    title = "Too many webhook endpoints"
