"""The app factory: the one place that wires settings, Redis, keys, payments and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from coinslot import keyfiles, keyspace
from coinslot.addresses import Addresses
from coinslot.cardreads import CardReads
from coinslot.catalog import Catalog
from coinslot.clock import Clock, SystemClock
from coinslot.dashauth import DashboardAuth
from coinslot.discovery import running_url
from coinslot.embedded import EmbeddedRedis
from coinslot.errors import CoinslotError
from coinslot.hookdelivery import Deliverer
from coinslot.http.lanes import Lanes
from coinslot.http.openapi import build
from coinslot.http.problems import (
    STORE_FAILURES,
    client_gone,
    coinslot_error,
    http_error,
    store_failure,
    unexpected_error,
)
from coinslot.http.routes import API, routes
from coinslot.insights import Insights
from coinslot.keyring import KeyRing
from coinslot.payments import Payments
from coinslot.payments.choice import from_settings
from coinslot.paywall import Paywall
from coinslot.ratelimit import Allowance
from coinslot.recovery import RecoveryCodes
from coinslot.services import Services
from coinslot.settings import Settings
from coinslot.signer import SigningProcess
from coinslot.store import COMMAND_TIMEOUT_S, AnyRedis, Store, connect
from coinslot.tokens import UnlockTokens, WalletTokens, derive
from coinslot.topuplinks import TopupLinks
from coinslot.unlocks import Unlocks

log = logging.getLogger("coinslot")

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


class Coinslot(Starlette):
    """Starlette with a fast lane: bare endpoints skip its middleware and router.

    The unlock is the product's hot path, and the card page and the card's read come once per
    page view. A bare endpoint renders its own errors, so the exception middleware has nothing
    to add there, and a lookup by path (``Lanes``) replaces trying routes in turn.
    """

    def __init__(self, *, lanes: Lanes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            lane = self.lanes.match(scope["method"], scope["path"])
            if lane is not None:
                endpoint, params = lane
                scope["app"] = self
                if params is not None:
                    scope["path_params"] = params
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _follow_catalog_changes(redis: AnyRedis, catalog: Catalog, subscribed: asyncio.Event) -> None:
    """Drop cached catalog entries when any worker publishes a change to a site.

    Sets ``subscribed`` once Redis has confirmed the subscription: a change published before
    that would never reach this worker, and its cache would serve the old price until the TTL.
    """
    # The client's own pubsub connects with its settings (password, TLS, timeouts); on a
    # Cluster it picks one node, and PUBLISH reaches every node, so that node hears them all.
    while True:
        try:
            async with redis.pubsub() as pubsub:
                await pubsub.subscribe(keyspace.CATALOG_CHANNEL)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        catalog.invalidate(message["data"])
                    elif message["type"] == "subscribe":
                        if subscribed.is_set():  # a resubscription: changes in the gap went unheard
                            catalog.invalidate_all()
                        subscribed.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a dropped subscription must not stop the worker; entries still expire
            log.warning("catalog change feed interrupted (%s); resubscribing", exc)
            await asyncio.sleep(1)


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
    secrets = [str(s).encode() for s in settings.secret_keys] or keyfiles.load_or_create_secrets(data_dir)
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
        unlock_tokens = UnlockTokens(
            ring,
            issuer=public_url,
            pseudonym_secret=derive(first, "pseudonym"),
            livemode=chosen_payments.livemode,
            ttl_s=settings.unlock_token_ttl,
            signer=signer,
        )
        links = TopupLinks(
            URLSafeTimedSerializer(secrets, salt="coinslot.topup-link", signer=_clocked_signer(the_clock)),
            public_url,
            settings.allowed_topups,
        )
        addresses = Addresses(store)
        wallet_tokens, card_reads = WalletTokens(secrets), CardReads(store, catalog, unlock_tokens)
        app.state.services = Services(
            settings=settings,
            public_url=public_url,
            store=store,
            catalog=catalog,
            clock=the_clock,
            wallet_tokens=wallet_tokens,
            keyring=ring,
            unlock_tokens=unlock_tokens,
            payments=chosen_payments,
            topup_links=links,
            addresses=addresses,
            unlocks=Unlocks(
                store,
                catalog,
                unlock_tokens,
                links,
                addresses,
                tab_wallets_per_ip=settings.tab_wallets_per_ip,
                attempts=Allowance(settings.unlocks_per_wallet_per_minute, 60),
            ),
            card_reads=card_reads,
            recovery=RecoveryCodes(store, secrets),
            paywall=Paywall(store, catalog, unlock_tokens, wallet_tokens, card_reads, public_url),
            insights=Insights(store, catalog, unlock_tokens.pseudonym, retention_days=settings.insights_days),
            dashboard=DashboardAuth(store, secrets),
        )
        counting = asyncio.create_task(app.state.services.insights.run())
        deliverer = Deliverer(
            store,
            the_clock,
            unlock_tokens.pseudonym,
            livemode=chosen_payments.livemode,
            allow_private=settings.webhooks_allow_private,
            first_retry_s=settings.webhook_first_retry,
            timeout_s=settings.webhook_timeout,
        )
        delivering = asyncio.create_task(deliverer.run())
        subscribed = asyncio.Event()
        follower = asyncio.create_task(_follow_catalog_changes(client, catalog, subscribed))
        # Serve only once changes are heard; if Redis cannot confirm in time, cached entries still expire.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(subscribed.wait(), COMMAND_TIMEOUT_S)
        # What start-up built lives as long as the app; keep it out of every later collection.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            # Python 3.11's wait_for (used by redis-py) can swallow one cancel; insist until it stops.
            with contextlib.suppress(TimeoutError):  # what was counted before the end is written
                await asyncio.wait_for(app.state.services.insights.flush(), COMMAND_TIMEOUT_S)
            for task in (follower, delivering, counting):
                while not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=0.1)
            await deliverer.close()
            await signer.stop()
            if redis is None:
                await store.close()
            if payments is None:
                await chosen_payments.aclose()
            if embedded is not None:
                embedded.stop()

    app = Coinslot(
        lanes=Lanes(API),
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={
            CoinslotError: coinslot_error,
            HTTPException: http_error,
            **dict.fromkeys(STORE_FAILURES, store_failure),
            ClientDisconnect: client_gone,
            Exception: unexpected_error,
        },
    )
    app.state.openapi = build({(m, p): d for m, p, _e, d in API}, public_url)
    return app
