"""Stripe Checkout: real top-ups through the official ``stripe`` library, without blocking the loop.

Sessions are created with ``price_data`` (amount and currency from the server's allowed list,
no pre-made Prices), our top-up id as the Idempotency-Key, and the top-up and wallet in the
session's and the PaymentIntent's metadata, so refunds and disputes can be traced back.
Webhooks are verified on the raw body by ``stripe.Webhook.construct_event`` and turned into
the plain reports of ``coinslot.payments``; Stripe's errors become ``CoinslotError``s here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import stripe
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coinslot.errors import BadWebhook, ConfigurationError, NotFound, PaymentsRefused, PaymentsUnavailable
from coinslot.metrics import ALERTS
from coinslot.payments import (
    REFUND_RETURNED,
    REFUND_TAKEN,
    ChargeRefunds,
    CheckoutSession,
    DisputeReport,
    Ignored,
    PaymentEvent,
    RefundReport,
    SessionReport,
)
from coinslot.settings import Settings

log = logging.getLogger("coinslot.payments.stripe")

# Stripe requires 30 min to 24 h. An hour covers 3-D Secure and bank redirects; a prepared
# top-up link (valid 15 min) counts it from its signing, so at least 45 min remain.
SESSION_LIFETIME_S = 60 * 60
REQUEST_TIMEOUT_S = 10.0  # per attempt; a top-up request waits on it, so not the library's 80 s
NETWORK_RETRIES = 2  # safe: every create carries our Idempotency-Key
PRODUCT_NAME = "Coinslot wallet top-up"
LIST_PAGE = 100  # Stripe's largest page


class _HTTPXClient(stripe.HTTPXClient):
    """stripe's httpx client, sending the form body as ``content=``.

    stripe-python passes the encoded form as ``data=<str>``, which httpx deprecates (a
    DeprecationWarning on every request); the bytes on the wire are the same.
    """

    def _get_request_args_kwargs(self, method: str, url: str, headers: Any, post_data: Any) -> Any:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if isinstance(data, str | bytes):
            kwargs["content"] = data
        return args, kwargs


def _wrap(exc: stripe.StripeError, doing: str) -> Exception:
    """Stripe's error as ours: transient ones are 503 (try again), refusals 502 (our set-up)."""
    status = getattr(exc, "http_status", None)
    request_id = getattr(exc, "request_id", None)
    log.error("Stripe %s failed: %s %s (request %s)", doing, type(exc).__name__, status, request_id)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError) or (status or 0) >= 500:
        return PaymentsUnavailable(f"Stripe could not be reached to {doing}; try again shortly")
    return PaymentsRefused(f"Stripe refused to {doing} ({type(exc).__name__}, HTTP {status}); the operator is alerted")


# What Coinslot reads of Stripe's objects, checked before use: a signed event is still input, and a
# field of another type (or a null object) must be a 400 that Stripe retries, not a 500 or a guess.
# Strict: no float, bool or numeric string passes for an amount; amounts stay exact in Lua's doubles.
MAX_AMOUNT = 10**12  # minor units, far above any Stripe charge
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
Currency = Annotated[str, Field(pattern=r"^[A-Za-z]{3}$")]


class _Read(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Expanded(_Read):
    id: str


class _Session(_Read):
    id: str = Field(min_length=1)
    status: str | None = None
    payment_status: str | None = None
    amount_total: Amount | None = None
    currency: Currency | None = None
    payment_intent: str | _Expanded | None = None
    metadata: dict[str, str] | None = None
    created: int | None = None


class _Created(_Read):
    """What a new session must carry for the reader to be sent to it."""

    id: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://\S+$")  # absolute; Rust regex: $ is the end of the text
    expires_at: int


class _Refund(_Read):
    id: str = Field(min_length=1)
    amount: Amount
    currency: Currency
    status: str | None = None
    payment_intent: str | _Expanded | None = None


class _RefundList(_Read):
    data: list[_Refund]


class _Charge(_Read):
    id: str = Field(min_length=1)
    payment_intent: str | _Expanded | None = None
    # Embedded before API version 2022-11-15; later versions leave it out (the refund.* events carry each refund).
    refunds: _RefundList | None = None


class _Dispute(_Read):
    id: str = Field(min_length=1)
    amount: Amount
    currency: Currency
    status: str
    payment_intent: str | _Expanded | None = None


class _PaidThrough(_Read):
    payment_intent: str | _Expanded | None = None


class _Event(_Read):
    id: str
    type: str
    data: dict[str, Any]
    api_version: str | None = None


def _id_of(ref: str | _Expanded | None) -> str | None:
    return ref.id if isinstance(ref, _Expanded) else ref


def session_report(session: dict[str, Any], *, event: str | None = None) -> SessionReport:
    """A Checkout Session (as a plain dict) as the domain sees it; ``event`` is the webhook type, if any.

    Raises ``pydantic.ValidationError`` for a session that is not shaped as Stripe documents it.
    """
    s = _Session.model_validate(session)
    if event == "checkout.session.async_payment_failed":
        state = "failed"
    elif event == "checkout.session.expired" or s.status == "expired":
        state = "expired"
    elif s.status == "complete" and s.payment_status == "paid":
        state = "paid"
    elif s.status == "complete" and s.payment_status == "unpaid":
        state = "awaiting"
    else:  # open, or complete without payment (never for our sessions, whose amount is > 0)
        state = "open"
    return SessionReport(
        session_id=s.id,
        state=state,
        amount=s.amount_total or 0,
        currency=(s.currency or "").upper(),
        payment_intent=_id_of(s.payment_intent),
        topup_id=(s.metadata or {}).get("topup_id"),
        created_s=s.created or 0,
    )


def _readable(session: dict[str, Any]) -> SessionReport:
    """A session from Stripe's API as a report; one we cannot read is Stripe's fault, not the reader's (502)."""
    try:
        return session_report(session)
    except ValidationError as exc:
        log.error("Stripe answered with a checkout session Coinslot cannot read: %s", exc)
        raise PaymentsRefused("Stripe answered with a checkout session Coinslot cannot read") from exc


# Events whose object is one Refund. Stripe sends refund.* for every refund since API version
# 2024-10-28.acacia (before, only charge.refunded and charge.refund.updated for a charge's refunds).
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")


def _refund_report(refund: _Refund, payment_intent: str) -> RefundReport | None:
    """A refund as the domain sees it; None for a status Stripe may add later (a later event tells more)."""
    if refund.status not in (*REFUND_TAKEN, *REFUND_RETURNED):
        log.warning("refund %s has status %r, which Coinslot does not act on", refund.id, refund.status)
        return None
    return RefundReport(
        refund_id=refund.id,
        payment_intent=payment_intent,
        amount=refund.amount,
        currency=refund.currency.upper(),
        status=refund.status,
    )


def translate(kind: str, obj: dict[str, Any]) -> PaymentEvent:
    """One verified Stripe event as a report; anything we do not act on is ``Ignored``.

    Raises ``pydantic.ValidationError`` when an event we act on lacks a field or has one of another type.
    """
    if kind in (
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
    ):
        return session_report(obj, event=kind)
    if kind not in (*REFUND_EVENTS, "charge.refunded", "charge.dispute.created", "charge.dispute.closed"):
        return Ignored(kind)
    pi = _id_of(_PaidThrough.model_validate(obj).payment_intent)
    if pi is None:
        return Ignored(kind)  # not a charge of a Checkout Session (ours always have a PaymentIntent)
    if kind in REFUND_EVENTS:
        report = _refund_report(_Refund.model_validate(obj), pi)
        return report if report is not None else Ignored(kind)
    if kind == "charge.refunded":
        charge = _Charge.model_validate(obj)
        embedded = charge.refunds.data if charge.refunds is not None else []
        reports = (_refund_report(r, pi) for r in embedded)
        return ChargeRefunds(charge_id=charge.id, refunds=tuple(r for r in reports if r is not None))
    dispute = _Dispute.model_validate(obj)
    if dispute.status.startswith("warning_"):
        status = "inquiry"  # an inquiry or early warning: no funds were withdrawn
    elif kind == "charge.dispute.created":
        status = "open"
    else:
        status = dispute.status if dispute.status in ("won", "lost") else "open"
    return DisputeReport(
        dispute_id=dispute.id,
        payment_intent=pi,
        amount=dispute.amount,
        currency=dispute.currency.upper(),
        status=status,
    )


# Webhook endpoints on API versions from the first to (not including) the second neither embed a
# charge's refunds in charge.refunded nor send refund.* for them: a new refund reaches Coinslot by no id.
REFUNDS_UNEMBEDDED = "2022-11-15"
REFUND_EVENTS_FOR_CHARGES = "2024-10-28"


def _refunds_unseen(event_id: str, api_version: str | None) -> None:
    # Stripe's versions are dates (with a release name after them), so they order as strings.
    if api_version is not None and REFUNDS_UNEMBEDDED <= api_version < REFUND_EVENTS_FOR_CHARGES:
        ALERTS.labels("refund-unseen").inc()
        log.error(
            "ALERT charge.refunded event %s on API version %s carries no refunds, and Stripe sends this endpoint no "
            "refund.* events for them: nothing posted; give the webhook endpoint API version %s or later",
            event_id,
            api_version,
            REFUND_EVENTS_FOR_CHARGES,
        )


class StripeCheckout:
    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str, *, public_url: str, api_base: str | None = None) -> None:
        if not secret_key or not webhook_secret:
            raise ConfigurationError("Stripe needs both a secret key and a webhook signing secret")
        self.livemode = secret_key.startswith(("sk_live_", "rk_live_"))
        self.public_url = public_url
        # Comma-separated while Stripe rolls the endpoint's secret: the old one stays valid for a while.
        self._webhook_secrets = [w.strip() for w in webhook_secret.split(",") if w.strip()]
        self._http = _HTTPXClient(timeout=REQUEST_TIMEOUT_S)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=NETWORK_RETRIES,
            http_client=self._http,
        )

    @classmethod
    def from_settings(cls, settings: Settings, public_url: str) -> StripeCheckout:
        if settings.stripe_secret_key is None or settings.stripe_webhook_secret is None:
            raise ConfigurationError(
                "COINSLOT_PAYMENTS=stripe needs COINSLOT_STRIPE_SECRET_KEY and COINSLOT_STRIPE_WEBHOOK_SECRET"
            )
        return cls(
            str(settings.stripe_secret_key),
            str(settings.stripe_webhook_secret),
            public_url=public_url,
            api_base=settings.stripe_api_base,
        )

    async def create_checkout(
        self, *, topup_id: str, wallet_id: str, amount: int, currency: str, now_ms: int
    ) -> CheckoutSession:
        expires_at = now_ms // 1000 + SESSION_LIFETIME_S
        ours = {"topup_id": topup_id, "wallet_id": wallet_id}
        return_url = f"{self.public_url}/checkout/return?session_id={{CHECKOUT_SESSION_ID}}"
        params: Any = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": amount,
                        "product_data": {"name": PRODUCT_NAME},
                    },
                }
            ],
            "client_reference_id": wallet_id,
            "metadata": ours,
            "payment_intent_data": {"metadata": ours},
            "expires_at": expires_at,
            "success_url": return_url,
            # No session id here: Stripe documents the {CHECKOUT_SESSION_ID} template for success_url only.
            "cancel_url": f"{self.public_url}/checkout/return?cancelled=1",
        }
        try:
            session = await self._client.v1.checkout.sessions.create_async(params, {"idempotency_key": topup_id})
        except stripe.StripeError as exc:
            raise _wrap(exc, "open a checkout") from exc
        try:
            created = _Created.model_validate(session.to_dict())
        except ValidationError as exc:
            log.error("Stripe answered a new checkout session Coinslot cannot use: %s", exc)
            raise PaymentsRefused("Stripe answered with a checkout session without a usable id, URL or expiry") from exc
        return CheckoutSession(session_id=created.id, url=created.url, expires_ms=created.expires_at * 1000)

    async def retrieve_session(self, session_id: str) -> SessionReport:
        try:
            session = await self._client.v1.checkout.sessions.retrieve_async(session_id)
        except stripe.InvalidRequestError as exc:
            if getattr(exc, "http_status", None) == 404:
                raise NotFound(f"Stripe knows no checkout session {session_id!r}") from exc
            raise _wrap(exc, "read a checkout session") from exc
        except stripe.StripeError as exc:
            raise _wrap(exc, "read a checkout session") from exc
        return _readable(session.to_dict())

    async def recent_sessions(self, *, since_s: int) -> AsyncIterator[SessionReport]:
        params: Any = {"created": {"gte": since_s}, "limit": LIST_PAGE}
        try:
            page = await self._client.v1.checkout.sessions.list_async(params)
            async for session in page.auto_paging_iter():
                yield _readable(session.to_dict())
        except stripe.StripeError as exc:
            raise _wrap(exc, "list checkout sessions") from exc

    def parse_event(self, payload: bytes, signature: str | None) -> PaymentEvent:
        verified = False
        refused: Exception | None = None
        for secret in self._webhook_secrets:
            try:
                # The library checks the signature on the raw body before it reads anything else.
                self._client.construct_event(payload, signature, secret)
                verified = True
                break
            except stripe.SignatureVerificationError as exc:
                refused = exc
            except (
                ValueError,
                IndexError,
                KeyError,
                UnicodeDecodeError,
                AttributeError,
                TypeError,
                RecursionError,
            ) as exc:
                # A malformed header, or a signed body that is not an event object (a JSON list, null, a
                # number, nesting too deep), which the library trips over after verifying it.
                raise BadWebhook(f"webhook is not a Stripe event: {type(exc).__name__}") from exc
        if not verified:
            raise BadWebhook(
                f"Stripe-Signature not valid for this body and secret, or older than 300 s: {refused}"
            ) from refused
        try:
            # Read from the verified raw body, not from the library's objects, so every field we use is checked.
            event = _Event.model_validate_json(payload)
            obj = event.data.get("object")
            if not isinstance(obj, dict):
                raise BadWebhook(f"{event.type} event {event.id} carries no object")
            report = translate(event.type, obj)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or "event" for e in exc.errors()[:5])
            raise BadWebhook(f"Stripe event lacks a field Coinslot needs or has one of another type: {fields}") from exc
        if isinstance(report, ChargeRefunds) and obj.get("refunds") is None:
            _refunds_unseen(event.id, event.api_version)
        return report

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
