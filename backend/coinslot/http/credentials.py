"""Who is asking: a wallet (Bearer token or the card's cookie) or a publisher (secret key).

This module only finds the credential and hands it on: a wallet token to tokens.py, which
verifies it, a secret key to catalog.authenticate.

The cookie belongs to the card's iframe on the backend's own origin. It is honoured only
on same-origin requests, as the browser itself reports them in ``Sec-Fetch-Site`` (which a
page cannot forge), so no publisher page can spend a reader's wallet through it.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from coinslot import catalog
from coinslot.catalog import Site
from coinslot.errors import NotFound, Unauthorized
from coinslot.http.context import services
from coinslot.services import Services
from coinslot.tokens import WalletRef

COOKIE = "coinslot_wallet"
COOKIE_MAX_AGE = 400 * 24 * 60 * 60  # the longest lifetime Chromium keeps, in seconds


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return value.strip()


def require_metrics_reader(request: Request) -> None:
    """Only the operator's Prometheus, with the configured token, reads /metrics."""
    expected = services(request).settings.metrics_token
    if expected is None:
        raise NotFound("/metrics is off until COINSLOT_METRICS_TOKEN is set (Prometheus sends it as a bearer token)")
    given = bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), str(expected).encode()):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <COINSLOT_METRICS_TOKEN>'")


def is_same_origin(request: Request, public_url: str) -> bool:
    if request.headers.get("sec-fetch-site") != "same-origin":
        return False
    origin = request.headers.get("origin")
    if origin is None:
        # Browsers omit Origin on same-origin GET; Sec-Fetch-Site already proved it.
        return request.method in ("GET", "HEAD")
    return origin == public_url


def optional_wallet(request: Request) -> WalletRef | None:
    """The wallet the request speaks for, or None. A bad Bearer token is a 401; a bad cookie is ignored."""
    svc = services(request)
    token = bearer(request)
    if token is not None:
        if token.startswith("sk_"):
            raise Unauthorized("a site secret key is not a wallet credential")
        return svc.wallet_tokens.verify(token)
    cookie = request.cookies.get(COOKIE)
    if cookie is None or not is_same_origin(request, svc.public_url):
        return None
    try:
        return svc.wallet_tokens.verify(cookie)
    except Unauthorized:
        return None


def carries_wallet_credential(request: Request) -> bool:
    """Whether the request carries anything that could name a wallet, honoured here or not: its
    answer must never be stored by a shared cache."""
    return "authorization" in request.headers or COOKIE in request.cookies


def require_wallet(request: Request) -> WalletRef:
    ref = optional_wallet(request)
    if ref is None:
        raise Unauthorized("this call needs a wallet: 'Authorization: Bearer <wallet token>' (POST /v1/wallets)")
    return ref


def uses_cookie(request: Request, svc: Services) -> bool:
    return request.headers.get("authorization") is None and is_same_origin(request, svc.public_url)


def set_wallet_cookie(response: Response, token: str) -> None:
    # Written by hand: Starlette's set_cookie(partitioned=True) needs Python 3.14's http.cookies.
    # The token is URL-safe base64 and dots, so it needs no quoting.
    response.headers.append(
        "set-cookie",
        f"{COOKIE}={token}; Max-Age={COOKIE_MAX_AGE}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned",
    )


def clear_wallet_cookie(response: Response) -> None:
    """Tell the browser to forget the wallet (same attributes, or a partitioned cookie would stay)."""
    response.headers.append("set-cookie", f"{COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=None; Partitioned")


async def require_site(request: Request) -> Site:
    svc = services(request)
    token = bearer(request)
    if token is None or not token.startswith("sk_"):
        raise Unauthorized("this call needs the site's secret key: 'Authorization: Bearer sk_...'")
    return await catalog.authenticate(svc.store, token, now_ms=svc.clock.now_ms())


async def client_address(request: Request, now_ms: int) -> str:
    """The client, as per-address limits count it: today's pseudonym of its address (coinslot.addresses)."""
    svc = services(request)
    return await svc.addresses.pseudonym(client_ip(request, svc.settings.trusted_proxy_hops), now_ms)


def client_ip(request: Request, trusted_hops: int) -> str:
    """The client's address; X-Forwarded-For only as far as the configured proxies are trusted."""
    if trusted_hops > 0:
        # Every line, in order, as one list (RFC 9110 5.3): a proxy that adds a line of its own
        # after the client's must not leave the client's line to be read as the proxy's word.
        forwarded = [
            p.strip() for line in request.headers.getlist("x-forwarded-for") for p in line.split(",") if p.strip()
        ]
        if len(forwarded) >= trusted_hops:
            return forwarded[-trusted_hops]
    return request.client.host if request.client else "unknown"
