"""Pages on the backend's origin that a reader's top-up window visits.

``/topup/{link}`` opens a checkout from a link prepared in a 402 (bound to one wallet,
valid 15 minutes), so the card can open the window synchronously on the click. The
built-in test checkout lives at ``/checkout/test/{session}``; Stripe sends the reader back
to ``/checkout/return``, which credits through the same exactly-once path as the webhook.
"""

from __future__ import annotations

from html import escape

from itsdangerous import BadData, SignatureExpired
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from coinslot import topups
from coinslot.errors import Forbidden, NotFound, PaymentsRefused, PaymentsUnavailable, RateLimited
from coinslot.http.credentials import client_address
from coinslot.money import format_amount
from coinslot.services import services
from coinslot.tokens import WalletRef

TOPUP_LINK_MAX_AGE = 15 * 60  # seconds
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send "Origin: null" on the page's own form post,
    # which the pay handler's origin check rightly refuses.
    "Referrer-Policy": "same-origin",
}


TEST_BANNER = '<div class="test" role="note">TEST MODE: no real money moves</div>'


def page(title: str, body: str, status: int = 200, *, test_mode: bool = True) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)}</title>
<style>
body{{font:16px/1.5 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1b1b1b}}
main{{max-width:26rem;margin:3rem auto;padding:1.5rem;background:#fff;border-radius:12px;
box-shadow:0 1px 4px #0002}}
.test{{background:#ffd43b;color:#000;font-weight:700;text-align:center;padding:.4rem;letter-spacing:.08em}}
button{{font:inherit;font-weight:600;width:100%;padding:.8rem;border:0;border-radius:8px;background:#1d4ed8;
color:#fff;cursor:pointer}}
button:focus-visible{{outline:3px solid #000;outline-offset:2px}}
</style></head><body>{TEST_BANNER if test_mode else ""}
<main>{body}</main></body></html>"""
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


async def open_topup_link(request: Request) -> Response:
    svc = services(request)
    try:
        (wallet_id, generation, amount, topup_id), signed_at = svc.topup_links.loads(
            request.path_params["link"], max_age=TOPUP_LINK_MAX_AGE, return_timestamp=True
        )
    except SignatureExpired:
        return page("Link expired", "<h1>This top-up link has expired</h1><p>Go back and try again.</p>", 410)
    except (BadData, ValueError, TypeError):
        return page("Invalid link", "<h1>This top-up link is not valid</h1>", 400)
    test_mode = not svc.payments.livemode
    now_ms = svc.clock.now_ms()
    try:
        topup = await topups.create_topup(
            svc.store,
            svc.payments,
            WalletRef(wallet_id, generation),
            amount=amount,
            allowed=svc.settings.allowed_topups,
            now_ms=now_ms,
            topup_id=topup_id,
            issued_ms=int(signed_at.timestamp() * 1000),
            limits=topups.TopupLimits(
                per_wallet=svc.settings.topups_per_wallet_per_hour,
                per_ip=svc.settings.topups_per_ip_per_hour,
                address=await client_address(request, now_ms),
            ),
        )
    except RateLimited as exc:
        response = page(
            "Too many top-ups",
            f"<h1>Too many top-ups</h1><p>Please try again in {exc.retry_after // 60 + 1} minutes.</p>",
            429,
            test_mode=test_mode,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except (PaymentsUnavailable, PaymentsRefused):
        body = "<h1>Payments are unavailable</h1><p>No money was taken. Please try again in a few minutes.</p>"
        return page("Payments unavailable", body, 503, test_mode=test_mode)
    return RedirectResponse(topup.checkout_url, status_code=303, headers={"Cache-Control": "no-store"})


async def _test_session(request: Request) -> topups.Topup:
    svc = services(request)
    if svc.payments.name != "test":
        raise NotFound("the test checkout is off: payments are taken by Stripe")
    topup = await topups.find_session(svc.store, request.path_params["session"], now_ms=svc.clock.now_ms())
    if topup is None:
        raise NotFound("no such checkout session")
    return topup


async def test_checkout(request: Request) -> Response:
    topup = await _test_session(request)
    price = escape(format_amount(topup.amount, topup.currency))
    if topup.status == "paid":
        return page("Paid", "<h1>Payment received</h1><p>You can close this window.</p>")
    if topup.status != "pending":
        return page("Checkout closed", f"<h1>This checkout has {escape(topup.status)}</h1>", 410)
    body = f"""<h1>Top up your wallet</h1>
<p>Add {price} to your Coinslot wallet. This is the built-in test checkout: no card is charged.</p>
<form method="post"><button type="submit">Pay {price}</button></form>"""
    return page(f"Pay {price} (test mode)", body)


async def test_checkout_pay(request: Request) -> Response:
    svc = services(request)
    origin = request.headers.get("origin")
    if origin is not None and origin != svc.public_url:
        raise Forbidden(f"test checkout accepts its own form only, not one posted from {origin}")
    topup = await _test_session(request)
    if topup.status == "pending":
        outcome = await topups.fulfil(
            svc.store, topup.session_id, amount=topup.amount, currency=topup.currency, now_ms=svc.clock.now_ms()
        )
        if outcome not in (topups.Fulfilment.CREDITED, topups.Fulfilment.ALREADY):
            return page("Not credited", f"<h1>This payment could not be credited</h1><p>{outcome.value}</p>", 409)
    elif topup.status != "paid":
        return page("Checkout closed", f"<h1>This checkout has {escape(topup.status)}</h1>", 410)
    price = escape(format_amount(topup.amount, topup.currency))
    return page("Paid", f"<h1>Payment received</h1><p>{price} added to your wallet. You can close this window.</p>")


def _return_page(topup: topups.Topup, status: str, outcome: str, *, test_mode: bool) -> HTMLResponse:
    price = escape(format_amount(topup.amount, topup.currency))
    if outcome == topups.Fulfilment.MISMATCH.value:
        # Stripe took money, but not what was asked: the operator is alerted and settles it by hand.
        body = (
            "<h1>Payment received, under review</h1><p>Your payment differs from the top-up that was asked "
            "for, so it is being checked before your wallet is credited. You can close this window.</p>"
        )
    elif status == "paid":
        body = f"<h1>Payment received</h1><p>{price} added to your wallet. You can close this window.</p>"
    elif topup.awaiting_payment and status == "pending":
        body = (
            f"<h1>Your payment is on its way</h1><p>Your bank is transferring {price}; this can take a few "
            "business days. Your wallet is credited as soon as it arrives. You can close this window.</p>"
        )
    elif status in ("failed", "expired"):
        body = f"<h1>No payment was taken</h1><p>This top-up has {escape(status)}. You can close this window.</p>"
    else:
        body = "<h1>Top-up not finished</h1><p>No payment was taken. You can close this window.</p>"
    return page("Top-up", body, test_mode=test_mode)


async def checkout_return(request: Request) -> Response:
    """Where Stripe sends the reader back: credit now if Stripe says paid (the webhook may be late)."""
    svc = services(request)
    test_mode = not svc.payments.livemode
    now_ms = svc.clock.now_ms()
    if request.query_params.get("cancelled") is not None:
        # The reader left the checkout; the session stays open at Stripe until it expires.
        body = "<h1>Top-up cancelled</h1><p>No payment was taken. You can close this window.</p>"
        return page("Top-up cancelled", body, test_mode=test_mode)
    session_id = request.query_params.get("session_id", "")
    # Only sessions this deployment opened are looked up at Stripe, and only until they are paid.
    topup = await topups.find_session(svc.store, session_id, now_ms=now_ms) if session_id else None
    if topup is None:
        return page("Unknown top-up", "<h1>This top-up is not known here</h1>", 404, test_mode=test_mode)
    outcome = ""
    if topup.status == "pending":
        checking = (
            "<h1>Checking your payment…</h1><p>Your wallet is credited as soon as Stripe confirms it. "
            "You can close this window.</p>"
        )
        if not await topups.may_ask_provider(svc.store, session_id, now_ms=now_ms):
            return page("Top-up", checking, test_mode=test_mode)
        try:
            report = await svc.payments.retrieve_session(session_id)
        except (PaymentsUnavailable, PaymentsRefused):
            return page("Top-up", checking, 503, test_mode=test_mode)
        outcome = await topups.settle(svc.store, report, now_ms=now_ms)
        topup = await topups.find_session(svc.store, session_id, now_ms=now_ms) or topup
    return _return_page(topup, topup.status, outcome, test_mode=test_mode)
