"""Pages on the backend's origin that a reader's top-up window visits.

``/topup/{link}`` opens a checkout from a link prepared in a 402 (bound to one wallet,
valid 15 minutes), so the card can open the window synchronously on the click. The
built-in test checkout lives at ``/checkout/test/{session}``; Stripe sends the reader back
to ``/checkout/return``, which credits through the same exactly-once path as the webhook.
"""

from __future__ import annotations

from itsdangerous import BadData, SignatureExpired
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from coinslot import topups
from coinslot.errors import (
    CurrencyMismatch,
    Forbidden,
    NotFound,
    PaymentsRefused,
    PaymentsUnavailable,
    RateLimited,
    UnknownSite,
)
from coinslot.http import counting
from coinslot.http.context import services
from coinslot.http.credentials import client_address
from coinslot.http.templates import templates
from coinslot.money import format_amount

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, browsers send "Origin: null" on the page's own form post,
    # which the pay handler's origin check rightly refuses.
    "Referrer-Policy": "same-origin",
}


def page(
    request: Request,
    title: str,
    heading: str,
    *paragraphs: str,
    status: int = 200,
    test_mode: bool = True,
    pay: str | None = None,
) -> Response:
    """A page of the top-up window (templates/topup.html): a heading, a few lines, maybe a pay button."""
    context = {"title": title, "heading": heading, "paragraphs": paragraphs, "test_mode": test_mode, "pay": pay}
    return templates().TemplateResponse(request, "topup.html", context, status_code=status, headers=PAGE_HEADERS)


async def open_topup_link(request: Request) -> Response:
    svc = services(request)
    try:
        link = svc.topup_links.read(request.path_params["link"])
    except SignatureExpired:
        return page(request, "Link expired", "This top-up link has expired", "Go back and try again.", status=410)
    except (BadData, ValueError, TypeError):
        return page(request, "Invalid link", "This top-up link is not valid", status=400)
    test_mode = not svc.payments.livemode
    now_ms = svc.clock.now_ms()
    try:
        topup = await topups.create_topup(
            svc.store,
            svc.payments,
            link.wallet,
            amount=link.amount,
            allowed=svc.settings.allowed_topups,
            now_ms=now_ms,
            topup_id=link.topup_id,
            issued_ms=link.issued_ms,
            site_id=link.site,
            catalog=svc.catalog,
            limits=topups.TopupLimits(
                per_wallet=svc.settings.topups_per_wallet_per_hour,
                per_ip=svc.settings.topups_per_ip_per_hour,
                address=await client_address(request, now_ms),
            ),
        )
    except RateLimited as exc:
        response = page(
            request,
            "Too many top-ups",
            "Too many top-ups",
            f"Please try again in {exc.retry_after // 60 + 1} minutes.",
            status=429,
            test_mode=test_mode,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except (UnknownSite, CurrencyMismatch):  # the site that offered the link is gone, or changed
        return page(request, "Invalid link", "This top-up link is no longer valid", status=410, test_mode=test_mode)
    except (PaymentsUnavailable, PaymentsRefused):
        return page(
            request,
            "Payments unavailable",
            "Payments are unavailable",
            "No money was taken. Please try again in a few minutes.",
            status=503,
            test_mode=test_mode,
        )
    counting.topup_started(svc, link.topup_id, now_ms, link.site)
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
    price = format_amount(topup.amount, topup.currency)
    if topup.status == "paid":
        return page(request, "Paid", "Payment received", "You can close this window.")
    if topup.status != "pending":
        return page(request, "Checkout closed", f"This checkout has {topup.status}", status=410)
    return page(
        request,
        f"Pay {price} (test mode)",
        "Top up your wallet",
        f"Add {price} to your Coinslot wallet. This is the built-in test checkout: no card is charged.",
        pay=f"Pay {price}",
    )


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
        if outcome is topups.Fulfilment.CREDITED:
            counting.topup_paid(svc, topup.session_id, svc.clock.now_ms())
        if outcome not in (topups.Fulfilment.CREDITED, topups.Fulfilment.ALREADY):
            return page(request, "Not credited", "This payment could not be credited", outcome.value, status=409)
    elif topup.status != "paid":
        return page(request, "Checkout closed", f"This checkout has {topup.status}", status=410)
    price = format_amount(topup.amount, topup.currency)
    return page(request, "Paid", "Payment received", f"{price} added to your wallet. You can close this window.")


def _return_page(request: Request, topup: topups.Topup, status: str, outcome: str, *, test_mode: bool) -> Response:
    price = format_amount(topup.amount, topup.currency)
    if outcome == topups.Fulfilment.MISMATCH.value:
        # Stripe took money, but not what was asked: the operator is alerted and settles it by hand.
        heading = "Payment received, under review"
        line = (
            "Your payment differs from the top-up that was asked for, so it is being checked before your "
            "wallet is credited. You can close this window."
        )
    elif status == "paid":
        heading, line = "Payment received", f"{price} added to your wallet. You can close this window."
    elif topup.awaiting_payment and status == "pending":
        heading = "Your payment is on its way"
        line = (
            f"Your bank is transferring {price}; this can take a few business days. Your wallet is credited "
            "as soon as it arrives. You can close this window."
        )
    elif status in ("failed", "expired"):
        heading, line = "No payment was taken", f"This top-up has {status}. You can close this window."
    else:
        heading, line = "Top-up not finished", "No payment was taken. You can close this window."
    return page(request, "Top-up", heading, line, test_mode=test_mode)


async def checkout_return(request: Request) -> Response:
    """Where Stripe sends the reader back: credit now if Stripe says paid (the webhook may be late)."""
    svc = services(request)
    test_mode = not svc.payments.livemode
    now_ms = svc.clock.now_ms()
    if request.query_params.get("cancelled") is not None:
        # The reader left the checkout; the session stays open at Stripe until it expires.
        lines = ("Top-up cancelled", "No payment was taken. You can close this window.")
        return page(request, "Top-up cancelled", *lines, test_mode=test_mode)
    session_id = request.query_params.get("session_id", "")
    # Only sessions this deployment opened are looked up at Stripe, and only until they are paid.
    topup = await topups.find_session(svc.store, session_id, now_ms=now_ms) if session_id else None
    if topup is None:
        return page(request, "Unknown top-up", "This top-up is not known here", status=404, test_mode=test_mode)
    outcome = ""
    if topup.status == "pending":
        checking = (
            "Checking your payment…",
            "Your wallet is credited as soon as Stripe confirms it. You can close this window.",
        )
        if not await topups.may_ask_provider(svc.store, session_id, now_ms=now_ms):
            return page(request, "Top-up", *checking, test_mode=test_mode)
        try:
            report = await svc.payments.retrieve_session(session_id)
        except (PaymentsUnavailable, PaymentsRefused):
            return page(request, "Top-up", *checking, status=503, test_mode=test_mode)
        outcome = await topups.settle(svc.store, report, now_ms=now_ms)
        if outcome == topups.Fulfilment.CREDITED.value:
            counting.topup_paid(svc, session_id, now_ms)
        topup = await topups.find_session(svc.store, session_id, now_ms=now_ms) or topup
    return _return_page(request, topup, topup.status, outcome, test_mode=test_mode)
