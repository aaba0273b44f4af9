"""Public reads: offers, hosted content, the JWKS and health.

Browsers get CORS for offers and content from the site's own origins, never with
credentials; nothing here moves money.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from coinslot import wallets
from coinslot.catalog import Site
from coinslot.errors import InvalidQuery, ServiceUnavailable, UnknownSite
from coinslot.http.context import services
from coinslot.http.cors import allow_site_origin
from coinslot.http.credentials import carries_wallet_credential, optional_wallet, require_metrics_reader
from coinslot.http.schemas import requested_items
from coinslot.pricetests import price_for, variant_of


async def preflight(request: Request) -> Response:
    """Preflight for offers and content: only GET, only Authorization, only the site's origins."""
    svc = services(request)
    site_id = request.path_params.get("site") or request.query_params.get("site", "")
    try:
        site: Site | None = await svc.catalog.site(site_id)
    except UnknownSite:
        site = None
    response = Response(status_code=204)
    allow_site_origin(request, site, response)
    if "Access-Control-Allow-Origin" in response.headers:
        response.headers["Access-Control-Allow-Methods"] = "GET"
        response.headers["Access-Control-Allow-Headers"] = "Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
    return response


async def offers(request: Request) -> Response:
    svc = services(request)
    site_id = request.query_params.get("site")
    if not site_id:
        raise InvalidQuery("query parameter 'site' is required", field="site")
    names = requested_items(request)
    site = await svc.catalog.site(site_id)
    found = await svc.catalog.items(site.id, names)
    ref = optional_wallet(request)
    now_ms = svc.clock.now_ms()
    owned = await wallets.owned_items(svc.store, ref, site.id, names, now_ms=now_ms) if ref is not None else {}
    out: list[dict[str, Any]] = []
    for name in names:
        item = found.get(name)
        if item is None:
            continue
        offer = item.public(site.currency)
        if ref is not None:
            offer["owned"] = owned[name]
            # The reader's price (a price test's variant); without a wallet, the item's, as the card page.
            offer["price"] = price_for(item, variant_of(item, ref.wallet_id, svc.unlock_tokens.pseudonym))
        out.append(offer)
    body = {
        "site": site.id,
        "currency": site.currency,
        "items": out,
        "unknown": [n for n in names if found.get(n) is None],
    }
    # A cookie the browser sent along cross-site is not honoured, but its answer is not stored either.
    headers = {"Cache-Control": "no-store" if carries_wallet_credential(request) else "public, max-age=30"}
    return allow_site_origin(request, site, JSONResponse(body, headers=headers))


def _token(request: Request) -> tuple[str | None, bool]:
    """The token sent, and whether it came in the Authorization header (a wallet token may only)."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip(), True
    return request.query_params.get("token"), False


async def content(request: Request) -> Response:
    svc = services(request)
    token, in_header = _token(request)
    found = await svc.paywall.open(
        request.path_params["site"],
        request.path_params["item"],
        token=token,
        in_header=in_header,
        now_ms=svc.clock.now_ms(),
    )
    headers = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "application/json" not in accept:
        headers["Content-Security-Policy"] = "sandbox"
        response: Response = HTMLResponse(found.html, headers=headers)
    else:
        body = {
            "site": found.site.id,
            "item": found.item.id,
            "title": found.item.title,
            "content_html": found.html,
            "expires_at": found.expires_at,
        }
        response = JSONResponse(body, headers=headers)
    return allow_site_origin(request, found.site, response)


async def jwks(request: Request) -> Response:
    return JSONResponse(services(request).keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


async def metrics(request: Request) -> Response:
    require_metrics_reader(request)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


async def healthz(request: Request) -> Response:
    svc = services(request)
    try:
        await svc.store.ping()
    except Exception as exc:  # any Redis failure means not healthy; say which
        raise ServiceUnavailable(f"redis did not answer PING: {type(exc).__name__}") from exc
    return JSONResponse({"status": "ok", "redis": "ok"}, headers={"Cache-Control": "no-store"})
