"""The app factory: the one place that wires settings, Redis, keys, payments and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from coinslot import secretfiles
from coinslot import store as keys
from coinslot.catalog import Catalog
from coinslot.clock import Clock, SystemClock
from coinslot.embedded import EmbeddedRedis, running_url
from coinslot.errors import CoinslotError
from coinslot.http import admin, checkout, embed, public, wallet, webhooks
from coinslot.http.openapi import Doc, build, openapi
from coinslot.http.problems import BareEndpoint, coinslot_error, http_error, unexpected_error
from coinslot.http.schemas import ItemPut, RedeemBody, TopupBody, UnlockBody, VoucherCreate, WalletCreate
from coinslot.payments import Payments, from_settings
from coinslot.services import Services
from coinslot.settings import Settings
from coinslot.signer import SigningProcess
from coinslot.store import AnyRedis, Store, connect
from coinslot.tokens import KeyRing, UnlockTokens
from coinslot.wallets import WalletTokens

log = logging.getLogger("coinslot")

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"

# (method, path) → endpoint and its documentation; openapi.json is built from this table.
API: list[tuple[str, str, Any, Doc]] = [
    # The hot path first: Starlette tries routes in order.
    (
        "POST",
        "/v1/unlocks",
        BareEndpoint(wallet.unlock),
        Doc(
            "Debit the wallet and grant the item (Idempotency-Key optional)",
            auth="wallet",
            body=UnlockBody,
            responses={
                200: "token, balance, charged, purchase_id",
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
            "Title, price, currency and (with a wallet) ownership of up to 50 items",
            query=("site", "items"),
            responses={200: "offers", 404: "", 422: ""},
            tags=("public",),
        ),
    ),
    ("OPTIONS", "/v1/offers", public.preflight, Doc("CORS preflight", tags=("public",))),
    (
        "GET",
        "/v1/content/{site}/{item}",
        public.content,
        Doc(
            "Hosted content, given an unlock token (Bearer or ?token=)",
            auth="unlock",
            query=("token",),
            responses={200: "content as JSON or sandboxed HTML", 401: "", 402: "", 404: ""},
            tags=("public",),
        ),
    ),
    ("OPTIONS", "/v1/content/{site}/{item}", public.preflight, Doc("CORS preflight", tags=("public",))),
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
            "Balance, receipts and recent ledger lines",
            auth="wallet",
            responses={200: "wallet", 401: ""},
            tags=("wallet",),
        ),
    ),
    (
        "POST",
        "/v1/topups",
        wallet.create_topup,
        Doc(
            "Open a checkout for an allowed amount",
            auth="wallet",
            body=TopupBody,
            responses={201: "topup_id and checkout_url", 401: "", 422: "", 429: "", 502: "", 503: ""},
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
    ("GET", "/v1/admin/site", admin.get_site, Doc("The site of this secret key", auth="secret", tags=("admin",))),
    ("GET", "/v1/admin/items", admin.list_items, Doc("The site's items", auth="secret", tags=("admin",))),
    (
        "PUT",
        "/v1/admin/items/{item}",
        admin.put_item,
        Doc(
            "Create or replace an item",
            auth="secret",
            body=ItemPut,
            responses={200: "item", 401: "", 422: ""},
            tags=("admin",),
        ),
    ),
    (
        "POST",
        "/v1/admin/vouchers",
        admin.create_voucher,
        Doc(
            "Issue a voucher paid from the site's promotions",
            auth="secret",
            body=VoucherCreate,
            responses={201: "voucher with its code", 409: ""},
            tags=("admin",),
        ),
    ),
    (
        "GET",
        "/v1/admin/ledger",
        admin.export_ledger,
        Doc(
            "Ledger entries that touch the site, as JSON lines or CSV",
            auth="secret",
            query=("format",),
            tags=("admin",),
        ),
    ),
    (
        "GET",
        "/v1/admin/stats",
        admin.stats,
        Doc("Revenue, promotions and unlocks per item", auth="secret", tags=("admin",)),
    ),
    (
        "GET",
        "/topup/{link}",
        checkout.open_topup_link,
        Doc(
            "Open a prepared top-up (from a 402) and redirect to its checkout",
            responses={303: "to checkout"},
            tags=("checkout",),
        ),
    ),
    (
        "GET",
        "/checkout/test/{session}",
        checkout.test_checkout,
        Doc("The built-in TEST MODE checkout page", tags=("checkout",)),
    ),
    (
        "POST",
        "/checkout/test/{session}",
        checkout.test_checkout_pay,
        Doc("Pay a test checkout session", tags=("checkout",)),
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
        embed.card,
        Doc(
            "The card the loader frames, rendered with title and price (cacheable; frame-ancestors: site origins)",
            query=("origin", "lang", "theme", "accent"),
            responses={200: "HTML card", 304: "", 403: "origin not allowed", 404: "unknown site or item"},
            tags=("widget",),
        ),
    ),
    (
        "GET",
        "/v1/card/{site}/{item}",
        embed.reader_state,
        Doc(
            "The card's one credentialed read: wallet, balance, owned (then a fresh token and content)",
            auth="wallet",
            responses={200: "reader state", 401: "", 404: ""},
            tags=("widget",),
        ),
    ),
]


class Coinslot(Starlette):
    """Starlette with a fast lane: bare endpoints on fixed paths skip its middleware and router.

    The unlock path is the product's hot path. A bare endpoint renders its own errors, so
    the exception middleware has nothing to add there, and a dict lookup replaces trying
    routes in turn.
    """

    def __init__(self, *, lanes: dict[tuple[str, str], BareEndpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            lane = self.lanes.get((scope["method"], scope["path"]))
            if lane is not None:
                scope["app"] = self
                await lane(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def routes() -> list[BaseRoute]:
    return [Route(path, endpoint, methods=[method]) for method, path, endpoint, _doc in API]


async def _follow_catalog_changes(redis: AnyRedis, catalog: Catalog) -> None:
    """Drop cached catalog entries when any worker publishes a change to a site."""
    # PUBLISH reaches every node of a cluster, so one node's subscription hears them all.
    if isinstance(redis, Redis):
        node, own = redis, False
    else:
        default = redis.get_default_node()
        node, own = Redis(host=default.host, port=int(default.port), decode_responses=True, protocol=2), True
    try:
        while True:
            try:
                async with node.pubsub() as pubsub:
                    await pubsub.subscribe(keys.CATALOG_CHANNEL)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            catalog.invalidate(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped subscription must not stop the worker; entries still expire
                log.warning("catalog change feed interrupted (%s); resubscribing", exc)
                await asyncio.sleep(1)
    finally:
        if own:
            await node.aclose()


def _clocked_signer(clock: Clock) -> type[TimestampSigner]:
    """A signer whose timestamps come from the app's clock, so link lifetimes follow it too."""

    class ClockedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return clock.now_ms() // 1000

    return ClockedSigner


def create_app(
    settings: Settings,
    *,
    redis: AnyRedis | None = None,
    payments: Payments | None = None,
    clock: Clock | None = None,
    keyring: KeyRing | None = None,
) -> Coinslot:
    """Build the app. Redis is connected (or the embedded server started) in the lifespan."""
    public_url = settings.public_url or DEFAULT_PUBLIC_URL
    data_dir = settings.data_dir
    secrets = [str(s).encode() for s in settings.secret_keys] or secretfiles.load_or_create(data_dir)
    ring = keyring or KeyRing.load(data_dir, settings.unlock_key_files)
    chosen_payments: Payments = payments or from_settings(settings, public_url)
    the_clock = clock or SystemClock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        embedded: EmbeddedRedis | None = None
        client = redis
        if client is None:
            url = settings.redis_url or running_url(data_dir)
            if url is None:
                embedded = EmbeddedRedis(data_dir)
                embedded.start()
                url = embedded.url
                log.info("embedded redis-server on %s", url)
            client = await connect(url)
        store = Store(client)
        catalog = Catalog(store)
        signer = SigningProcess()
        await signer.start()
        # Pseudonyms must stay stable when secrets rotate, so they derive from the first secret.
        first = secrets[0]
        app.state.services = Services(
            settings=settings,
            public_url=public_url,
            store=store,
            catalog=catalog,
            clock=the_clock,
            wallet_tokens=WalletTokens(secrets),
            keyring=ring,
            unlock_tokens=UnlockTokens(
                ring,
                issuer=public_url,
                pseudonym_secret=secretfiles.derive(first, "pseudonym"),
                livemode=chosen_payments.livemode,
                ttl_s=settings.unlock_token_ttl,
                signer=signer,
            ),
            payments=chosen_payments,
            topup_links=URLSafeTimedSerializer(secrets, salt="coinslot.topup-link", signer=_clocked_signer(the_clock)),
        )
        follower = asyncio.create_task(_follow_catalog_changes(client, catalog))
        # What start-up built lives as long as the app; keep it out of every later collection.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Python 3.11's wait_for (used by redis-py) can swallow one cancel; insist until it stops.
            while not follower.done():
                follower.cancel()
                await asyncio.wait({follower}, timeout=0.1)
            await signer.stop()
            if redis is None:
                await store.close()
            if payments is None:
                await chosen_payments.aclose()
            if embedded is not None:
                embedded.stop()

    app = Coinslot(
        lanes={(m, p): e for m, p, e, _doc in API if isinstance(e, BareEndpoint) and "{" not in p},
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={
            CoinslotError: coinslot_error,
            HTTPException: http_error,
            Exception: unexpected_error,
        },
    )
    app.state.openapi = build({(m, p): d for m, p, _e, d in API}, public_url)
    return app
