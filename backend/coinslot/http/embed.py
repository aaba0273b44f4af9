"""What a publisher's page loads: the loader script, the card it frames, and the card's state.

The card page depends only on site, item, origin, language, theme and accent, so it is
cacheable (ETag, a short public max-age) and a CDN can serve every page view; what concerns
the reader (wallet, balance, owned) comes from ``GET /v1/card/...``, which the card fetches
from its own origin with the wallet cookie after it renders. What the card says and looks
like is coinslot.widget's; this module only answers HTTP with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from coinslot import pricetests, widget
from coinslot.cardreads import offered_pass, site_pass
from coinslot.catalog import Catalog, Item, Site, check_item_id
from coinslot.errors import NotFound, UnknownItem, UnknownSite, UnknownWallet
from coinslot.http import counting
from coinslot.http.context import services
from coinslot.http.cors import allow_site_origin
from coinslot.http.credentials import carries_wallet_credential, optional_wallet, uses_cookie
from coinslot.http.problems import PrivateJSONResponse
from coinslot.http.schemas import requested_items
from coinslot.http.templates import templates
from coinslot.money import format_amount, minor_digits, shown_digits

LOADER_MAX_AGE = 5 * 60  # seconds, at the unversioned URL; the versioned one is immutable
IMMUTABLE = "public, max-age=31536000, immutable"
CARD_MAX_AGE = 60  # seconds: a price change reaches readers within a minute (and rule 7 guards the gap)
CARD_CACHE = f"public, max-age={CARD_MAX_AGE}"


def _not_modified(request: Request, etag: str) -> bool:
    return etag in [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]


def _asset_response(request: Request, name: str, cache_control: str) -> Response:
    a = widget.asset(name)
    headers = {
        "Cache-Control": cache_control,
        "ETag": a.etag,
        "X-Content-Type-Options": "nosniff",
        # Publishers may pin the loader with integrity=…; SRI on a cross-origin script needs CORS.
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if _not_modified(request, a.etag):
        return Response(status_code=304, headers=headers)
    return Response(a.body, media_type=a.media_type, headers=headers)


async def loader(request: Request) -> Response:
    return _asset_response(request, "coinslot.js", f"public, max-age={LOADER_MAX_AGE}")


async def versioned_asset(request: Request) -> Response:
    name, version = request.path_params["asset"], request.path_params["version"]
    if version != widget.version() or name not in widget.ASSET_TYPES:
        raise NotFound(f"no widget file {name!r} at version {version!r}; current: {widget.version()}")
    return _asset_response(request, name, IMMUTABLE)


# Rendered card pages, by everything they are made of (the site and item as cached, language,
# theme, accent, origin): a page view then costs a lookup instead of a render (~40 µs), and its
# headers are made once too.
PAGES_KEPT = 2048  # a few KB each


@dataclass(frozen=True, slots=True)
class _Rendered:
    body: bytes
    etag: str
    headers: dict[str, str]
    raw_headers: list[tuple[bytes, bytes]]  # of the 200 answer, as sent


_rendered: dict[tuple[Any, ...], _Rendered] = {}


class _PageResponse(Response):
    """A rendered page sent with headers made beforehand: Starlette's header handling costs µs a view."""

    def __init__(self, page: _Rendered) -> None:
        self.status_code = 200
        self.background = None
        self.body = page.body
        self.raw_headers = page.raw_headers


def _render(page: dict[str, Any], *, ancestors: str, cache_control: str) -> _Rendered:
    context = {"version": widget.version(), "t": widget.texts(page["lang"]), "item": None, **page}
    body = templates().get_template("card.html").render(context).encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
    headers = {
        "Cache-Control": cache_control,
        "ETag": etag,
        # Only what the card uses: its own script, style and API; no images, no inline anything.
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return _Rendered(body, etag, headers, HTMLResponse(body, headers=headers).raw_headers)


@dataclass(frozen=True, slots=True)
class _Seen:
    site: Site
    item: Item
    pass_item: Item | None
    page: _Rendered


# The page last sent for each request line (site, item, query string), with the catalog entries
# it was made of. While those are still the ones cached, the same line gets the same page without
# parsing its query and looking up its parts again: most page views repeat a few lines.
_seen: dict[tuple[str, str, bytes], _Seen] = {}


def _seen_page(catalog: Catalog, site_id: str, item_id: str, query: bytes) -> _Rendered | None:
    seen = _seen.get((site_id, item_id, query))
    if seen is None:
        return None
    current = catalog.cached(site_id, item_id)
    if current is None or current[0] is not seen.site or current[1] is not seen.item:
        return None
    if seen.site.pass_item is not None:
        offered = catalog.cached(site_id, seen.site.pass_item)
        if offered is None or offered[1] is not seen.pass_item:
            return None
    return seen.page


def _remember(key: tuple[str, str, bytes], site: Site, item: Item, pass_item: Item | None, page: _Rendered) -> None:
    if len(_seen) >= PAGES_KEPT:
        _seen.clear()
    _seen[key] = _Seen(site, item, pass_item, page)


def _send(request: Request, page: _Rendered) -> Response:
    if _not_modified(request, page.etag):
        return Response(status_code=304, headers=page.headers)
    return _PageResponse(page)


def _card_page(
    request: Request,
    page: Callable[[], dict[str, Any]],
    *,
    key: tuple[Any, ...] | None,
    status: int,
    ancestors: str,
    cache_control: str,
) -> Response:
    rendered = _rendered.get(key) if key is not None else None
    if rendered is None:
        rendered = _render(page(), ancestors=ancestors, cache_control=cache_control)
        if key is not None:
            if len(_rendered) >= PAGES_KEPT:
                _rendered.clear()
            _rendered[key] = rendered
    if status != 200:
        return HTMLResponse(rendered.body, status_code=status, headers=rendered.headers)
    return _send(request, rendered)


async def card(request: Request) -> Response:
    """The card for one item, rendered with its title and price in the reader's language."""
    svc = services(request)
    site_id, item_id = request.path_params["site"], request.path_params["item"]
    line = (site_id, item_id, request.scope["query_string"])
    if (seen := _seen_page(svc.catalog, *line)) is not None:
        return _send(request, seen)
    q = request.query_params
    lang, theme = widget.pick_language(q.get("lang")), widget.pick_theme(q.get("theme"))
    t = widget.texts(lang)
    origin = q.get("origin", "").lower()

    def notice(message: str, problem: str, *, origin: str = "") -> Callable[[], dict[str, Any]]:
        config = widget.card_config(lang, origin=origin, problem=problem)
        return lambda: {"lang": lang, "theme": theme, "title": message, "notice": message, "config": config}

    try:
        site = await svc.catalog.site(site_id)
    except UnknownSite:
        # No site, so no origins to allow or to answer: a calm notice that nothing can be bought.
        page = notice(t["unavailable"], f"unknown site {site_id!r}")
        return _card_page(request, page, key=None, status=404, ancestors="*", cache_control=CARD_CACHE)
    ancestors = " ".join(site.origins) or "'none'"
    if origin not in site.origins:
        # Never a postMessage target we did not check; the loader reports the silence.
        page = notice(t["wrongOrigin"], f"origin {origin!r} is not allowed for {site.id}")
        return _card_page(request, page, key=None, status=403, ancestors=ancestors, cache_control="no-store")
    try:
        item = await svc.catalog.item(site.id, check_item_id(item_id))
    except UnknownItem:
        page = notice(t["unavailable"], f"unknown item {item_id!r} on {site.id}", origin=origin)
        return _card_page(request, page, key=None, status=404, ancestors=ancestors, cache_control=CARD_CACHE)
    colours = widget.accent_colours(q.get("accent"))
    pass_item = await site_pass(svc.catalog, site) if site.pass_item else None
    pass_offer = None if pass_item is None or pass_item.id == item.id else offered_pass(pass_item)

    def offer() -> dict[str, Any]:
        config = widget.card_config(
            lang,
            site=site.id,
            item=item.id,
            title=item.title,
            price=None if item.test_price is not None else item.price,  # the reader's comes with their read
            currency=site.currency,
            digits=minor_digits(site.currency),
            shown=shown_digits(site.currency),
            origin=origin,
            site_pass=pass_offer,
            archived=item.archived,
            **colours,
        )
        price = None if item.test_price is not None else format_amount(item.price, site.currency, lang)
        title = item.title if price is None else f"{item.title} — {price}"
        page = {"lang": lang, "theme": theme, "title": title, "config": config, "item": item}
        return page | {"price_text": widget.price_text(item, site, lang)}

    key = (site, item, pass_item, lang, theme, colours["accent"], origin)
    response = _card_page(request, offer, key=key, status=200, ancestors=ancestors, cache_control=CARD_CACHE)
    _remember(line, site, item, pass_item, _rendered[key])
    return response


async def placeholders(request: Request) -> Response:
    """What the loader shows while a card's frame starts (a new process: it is another site):
    each item's title and the card's own words for its price, and the card's look. Public and
    cacheable like the card page; it reads no credential, and unknown items get no price."""
    svc = services(request)
    q = request.query_params
    names = requested_items(request)
    site = await svc.catalog.site(request.path_params["site"])
    found = await svc.catalog.items(site.id, names)
    lang = widget.pick_language(q.get("lang"))
    items = [
        {"item": item.id, "title": item.title, "text": widget.price_text(item, site, lang)}
        for item in (found.get(n) for n in names)
        if item is not None and not item.archived  # no price drawn for what is no longer sold
    ]
    body = {
        "site": site.id,
        "items": items,
        "unknown": [n for n in names if found.get(n) is None],
        "css": widget.placeholder_css(lang, widget.pick_theme(q.get("theme")), q.get("accent")),
    }
    cache = "no-store" if carries_wallet_credential(request) else CARD_CACHE
    return allow_site_origin(request, site, JSONResponse(body, headers={"Cache-Control": cache}))


async def reader_state(request: Request) -> Response:
    """The one credentialed read a card makes (coinslot.cardreads)."""
    svc = services(request)
    site_id, item_id, now_ms = request.path_params["site"], request.path_params["item"], svc.clock.now_ms()
    wallet = optional_wallet(request)
    view = request.scope["query_string"] == b"view=1"  # the page view's first read (card.js): the card was shown
    # A reader without a wallet keeps the price test's variant drawn at the page view's first read.
    variant = None if view else pricetests.checked_variant(request.query_params.get("variant"))
    try:
        state = await svc.card_reads.read(wallet, site_id=site_id, item_id=item_id, now_ms=now_ms, variant=variant)
    except UnknownWallet:
        if not uses_cookie(request, svc):
            raise
        # A cookie naming a wallet that is gone (or was recovered elsewhere): the card starts afresh.
        wallet = None
        state = await svc.card_reads.read(None, site_id=site_id, item_id=item_id, now_ms=now_ms, variant=variant)
    if view:
        counting.shown(svc, site_id, item_id, wallet, now_ms, None if state["owned"] else state.get("variant"))
    return PrivateJSONResponse(state)
