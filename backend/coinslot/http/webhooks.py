"""``POST /v1/webhooks/stripe``: Stripe's events, verified on the raw body, each handed to one domain call.

Answers: 200 once handled (also for events we ignore, so Stripe stops sending them); 400
for a bad or stale signature (nothing changes); 404 when Stripe is not configured; 409
``payment-not-yet-known`` for a refund or dispute whose top-up is not credited yet, which
Stripe retries with backoff for up to three days. Nothing here calls Stripe back.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coinslot import chargebacks, topups
from coinslot.http import counting
from coinslot.http.context import services
from coinslot.http.problems import read_body
from coinslot.payments import ChargeRefunds, DisputeReport, RefundReport, SessionReport

MAX_EVENT_BYTES = 1024 * 1024  # Stripe's events are a few KB; a session with many fields stays far below


async def stripe_webhook(request: Request) -> Response:
    svc = services(request)
    # Checked before reading: without Stripe there is nothing to verify against (404).
    payload = await read_body(request, MAX_EVENT_BYTES) if svc.payments.name == "stripe" else b""
    event = svc.payments.parse_event(payload, request.headers.get("stripe-signature"))
    now_ms = svc.clock.now_ms()
    if isinstance(event, SessionReport):
        outcome = await topups.settle(svc.store, event, now_ms=now_ms)
        if outcome == topups.Fulfilment.CREDITED.value:
            counting.topup_paid(svc, event.session_id, now_ms)
    elif isinstance(event, RefundReport):
        outcome = await chargebacks.refund(svc.store, event, now_ms=now_ms)
    elif isinstance(event, ChargeRefunds):
        # Without embedded refunds (API versions since 2022-11-15) the refund.* events carry each one.
        outcome = ",".join(await chargebacks.charge_refunds(svc.store, event, now_ms=now_ms)) or "no-refunds-embedded"
    elif isinstance(event, DisputeReport):
        outcome = await chargebacks.dispute(svc.store, event, now_ms=now_ms)
    else:
        outcome = "ignored"
    return JSONResponse({"received": True, "outcome": outcome})
