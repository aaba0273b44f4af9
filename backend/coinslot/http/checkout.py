"""Pages on the backend's origin that a reader's top-up window visits.

``/topup/{link}`` opens a checkout from a link prepared in a 402 (bound to one wallet,
valid 15 minutes), so the card can open the window synchronously on the click. The
built-in test checkout lives at ``/checkout/test/{session}``.
"""

from __future__ import annotations

from html import escape

from itsdangerous import BadData, SignatureExpired
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from coinslot import topups
from coinslot.errors import Forbidden, NotFound
from coinslot.money import format_amount
from coinslot.services import services
from coinslot.wallets import WalletRef

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


def page(title: str, body: str, status: int = 200) -> HTMLResponse:
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
</style></head><body><div class="test" role="note">TEST MODE: no real money moves</div>
<main>{body}</main></body></html>"""
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


async def open_topup_link(request: Request) -> Response:
    svc = services(request)
    try:
        wallet_id, generation, amount, topup_id = svc.topup_links.loads(
            request.path_params["link"], max_age=TOPUP_LINK_MAX_AGE
        )
    except SignatureExpired:
        return page("Link expired", "<h1>This top-up link has expired</h1><p>Go back and try again.</p>", 410)
    except (BadData, ValueError, TypeError):
        return page("Invalid link", "<h1>This top-up link is not valid</h1>", 400)
    topup = await topups.create_topup(
        svc.store,
        svc.payments,
        WalletRef(wallet_id, generation),
        amount=amount,
        allowed=svc.settings.allowed_topups,
        now_ms=svc.clock.now_ms(),
        topup_id=topup_id,
    )
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
