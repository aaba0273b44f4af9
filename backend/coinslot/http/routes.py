"""The HTTP API as one table: method, path, endpoint and its documentation.

``/openapi.json`` is built from this table, and a test checks that every route is in it.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Route

from coinslot.http import checkout, embed, public, wallet, webhooks
from coinslot.http.adminroutes import ADMIN
from coinslot.http.dashroutes import DASHBOARD
from coinslot.http.hookroutes import HOOK_API
from coinslot.http.openapi import PAYMENT_REQUIRED, Doc, openapi
from coinslot.http.pricetests import PRICE_TESTS
from coinslot.http.problems import BareEndpoint
from coinslot.http.schemas import (
    RecoverBody,
    RedeemBody,
    TopupBody,
    UnlockBody,
    WalletCreate,
    WalletSettings,
)

# (method, path) → endpoint and its documentation; openapi.json is built from this table.
API: list[tuple[str, str, Any, Doc]] = [
    # The hot path first: Starlette tries routes in order.
    (
        "POST",
        "/v1/unlocks",
        BareEndpoint(wallet.unlock),
        Doc(
            "Debit the wallet and grant the item (Idempotency-Key optional); 402 insufficient-funds, wallet-frozen "
            "(both with top-up links) or wallet-daily-limit",
            auth="wallet",
            body=UnlockBody,
            responses={
                200: "token, expires_at, balance, charged, purchase_id, access (purchase, pass or cap), "
                "access_until, undo",
                401: "",
                402: "",
                404: "",
                409: "",
                413: "",
                422: "",
            },
            tags=("wallet",),
        ),
    ),
    (
        "GET",
        "/v1/offers",
        public.offers,
        Doc(
            "Title, price, currency and (with a wallet) ownership of up to 50 items; with a wallet, an item under a "
            "price test shows the price this reader is charged",
            query=("site", "items"),
            responses={200: "offers", 404: "", 422: ""},
            tags=("public",),
        ),
    ),
    (
        "OPTIONS",
        "/v1/offers",
        public.preflight,
        Doc("CORS preflight", responses={204: "CORS headers, no body"}, tags=("public",)),
    ),
    (
        "GET",
        "/v1/content/{site}/{item}",
        public.content,
        Doc(
            "Hosted content, given an unlock token (Bearer or ?token=) or the Bearer token of a wallet that owns "
            "the item; without one, a 402 with the offer and a WWW-Authenticate challenge",
            auth="unlock",
            query=("token",),
            responses={200: "content as JSON or sandboxed HTML", 401: "", 402: "", 404: ""},
            tags=("public",),
            described={402: PAYMENT_REQUIRED},
        ),
    ),
    (
        "OPTIONS",
        "/v1/content/{site}/{item}",
        public.preflight,
        Doc("CORS preflight", responses={204: "CORS headers, no body"}, tags=("public",)),
    ),
    ("GET", "/.well-known/jwks.json", public.jwks, Doc("Public keys that verify unlock tokens", tags=("public",))),
    ("GET", "/healthz", public.healthz, Doc("Liveness, including Redis", responses={200: "ok", 503: ""})),
    ("GET", "/metrics", public.metrics, Doc("Prometheus metrics", responses={200: "text exposition format"})),
    ("GET", "/openapi.json", openapi, Doc("This document")),
    (
        "POST",
        "/v1/wallets",
        wallet.create_wallet,
        Doc(
            "Create a guest wallet",
            body=WalletCreate,
            responses={201: "wallet and its token", 422: ""},
            tags=("wallet",),
        ),
    ),
    (
        "GET",
        "/v1/wallet",
        wallet.get_wallet,
        Doc(
            "Balance, budget, daily limit (daily_limit, spent_today, day_ends), receipts and recent ledger lines",
            auth="wallet",
            responses={200: "wallet", 401: ""},
            tags=("wallet",),
        ),
    ),
    (
        "PATCH",
        "/v1/wallet",
        wallet.set_budget,
        Doc(
            "Set the reader's one-click budget (the card asks once more above it) and the wallet's daily "
            "spending limit for unattended use (per UTC day; 0 or null = none)",
            auth="wallet",
            body=WalletSettings,
            responses={200: "what was set: budget; daily_limit, spent_today, day_ends (ms)", 401: "", 413: "", 422: ""},
            tags=("wallet",),
        ),
    ),
    (
        "POST",
        "/v1/purchases/{purchase_id}/refund",
        wallet.undo_purchase,
        Doc(
            "The reader's undo of a purchase: within the site's refund window, at most 3 in 30 days, "
            "not a pass that served, not on a day with items free under the daily cap (money rule 8)",
            auth="wallet",
            responses={200: "refunded, with the balance", 401: "", 404: "not this wallet's purchase", 409: ""},
            tags=("wallet",),
        ),
    ),
    (
        "GET",
        "/v1/wallet/export",
        wallet.export_wallet,
        Doc(
            "Everything kept about the wallet: its record, what it owns and bought, its whole ledger, its top-ups",
            auth="wallet",
            responses={200: "the wallet's data", 401: ""},
            tags=("wallet",),
        ),
    ),
    (
        "DELETE",
        "/v1/wallet",
        wallet.erase_wallet,
        Doc(
            "Erase the wallet: purchases and its token go, the ledger stays under its unlinked id; "
            "answers the balance given up",
            auth="wallet",
            responses={200: "erased, with the balance left", 401: "", 409: ""},
            tags=("wallet",),
        ),
    ),
    (
        "POST",
        "/v1/topups",
        wallet.create_topup,
        Doc(
            "Open a checkout for an allowed amount (Idempotency-Key optional: a retry under it opens no second one); "
            "a site named in it hears of the payment (topup.paid)",
            auth="wallet",
            body=TopupBody,
            responses={201: "topup_id and checkout_url", 401: "", 404: "", 409: "", 422: "", 429: "", 502: "", 503: ""},
            tags=("wallet",),
        ),
    ),
    (
        "GET",
        "/v1/topups/{topup_id}",
        wallet.get_topup,
        Doc(
            "Top-up status: pending, paid, failed or expired",
            auth="wallet",
            responses={200: "top-up", 404: ""},
            tags=("wallet",),
        ),
    ),
    (
        "POST",
        "/v1/vouchers/redeem",
        wallet.redeem_voucher,
        Doc(
            "Credit the wallet from a voucher code",
            auth="wallet",
            body=RedeemBody,
            responses={200: "credited and balance", 409: ""},
            tags=("wallet",),
        ),
    ),
    (
        "GET",
        "/topup/{link}",
        checkout.open_topup_link,
        Doc(
            "Open a prepared top-up (from a 402) and redirect to its checkout",
            responses={303: "to checkout"},
            tags=("checkout",),
            page=True,
        ),
    ),
    (
        "GET",
        "/checkout/test/{session}",
        checkout.test_checkout,
        Doc("The built-in TEST MODE checkout page", responses={200: "HTML page", 404: ""}, tags=("checkout",)),
    ),
    (
        "POST",
        "/checkout/test/{session}",
        checkout.test_checkout_pay,
        Doc("Pay a test checkout session", responses={200: "HTML page", 403: "", 404: ""}, tags=("checkout",)),
    ),
    (
        "GET",
        "/checkout/return",
        checkout.checkout_return,
        Doc(
            "Where Stripe Checkout returns the reader; credits a paid session at once",
            query=("session_id", "cancelled"),
            responses={200: "HTML page", 404: "", 503: ""},
            tags=("checkout",),
            page=True,
        ),
    ),
    (
        "POST",
        "/v1/webhooks/stripe",
        webhooks.stripe_webhook,
        Doc(
            "Stripe events, verified with the Stripe-Signature header on the raw body",
            responses={200: "handled or ignored", 400: "", 404: "", 409: "", 413: ""},
            tags=("payments",),
        ),
    ),
    # The widget: loader, card page, the card's own files, and the reader's state for a card.
    (
        "GET",
        "/coinslot.js",
        embed.loader,
        Doc("The loader script a publisher pastes (short cache; see /v/{version}/coinslot.js)", tags=("widget",)),
    ),
    (
        "GET",
        "/v/{version}/{asset}",
        embed.versioned_asset,
        Doc(
            "coinslot.js, card.js or card.css at an immutable versioned URL",
            responses={200: "the file", 304: "", 404: ""},
            tags=("widget",),
        ),
    ),
    (
        "GET",
        "/embed/{site}/{item}",
        BareEndpoint(embed.card),
        Doc(
            "The card the loader frames, rendered with title and price (cacheable; frame-ancestors: site origins)",
            query=("origin", "lang", "theme", "accent"),
            responses={200: "HTML card", 304: "", 403: "origin not allowed", 404: "unknown site or item"},
            tags=("widget",),
            page=True,
        ),
    ),
    (
        "GET",
        "/placeholders/{site}",
        embed.placeholders,
        Doc(
            "What the loader shows while cards load: titles and the card's words for each price, and its look "
            "(public, cacheable; CORS for the site's origins)",
            query=("items", "lang", "theme", "accent"),
            responses={200: "placeholders", 404: "unknown site", 422: ""},
            tags=("widget",),
        ),
    ),
    (
        "GET",
        "/v1/card/{site}/{item}",
        BareEndpoint(embed.reader_state),
        Doc(
            "The card's one credentialed read: wallet, the reader's price, balance, budget, the daily cap, the "
            "site's pass, owned (then a fresh token, content, access and undo). ?view=1: the page view's first read "
            "(counted as the card shown); ?variant=a|b: a price test's variant drawn earlier in the view, for a "
            "reader without a wallet",
            auth="wallet",
            query=("view", "variant"),
            responses={200: "reader state", 401: "", 404: ""},
            tags=("widget",),
        ),
    ),
]


API += ADMIN  # the publisher's calls, with the site's secret key
API += PRICE_TESTS  # an item's second price, tested on half of the readers

# Recovery codes (coinslot.recovery).
API += [
    (
        "POST",
        "/v1/wallet/recovery-code",
        wallet.issue_recovery_code,
        Doc(
            "Save a recovery code for the wallet, shown once; it replaces the code saved before",
            auth="wallet",
            responses={201: "code (24 characters in groups of four) and created_at (ms)", 401: ""},
            tags=("wallet",),
        ),
    ),
    (
        "POST",
        "/v1/wallets/recover",
        wallet.recover_wallet,
        Doc(
            "Exchange a recovery code for a new token of its wallet (every older token stops working); "
            "the card gets it as its cookie, other callers in the body",
            body=RecoverBody,
            responses={200: "wallet_id, balance, currency (and token)", 400: "", 413: "", 422: "", 429: ""},
            tags=("wallet",),
        ),
    ),
]

API += HOOK_API  # publisher webhooks (coinslot.hooks)
API += DASHBOARD  # the publisher's dashboard (HTML pages)


def routes() -> list[BaseRoute]:
    return [Route(path, endpoint, methods=[method]) for method, path, endpoint, _doc in API]
