"""What a publisher's page loads: the loader script, the card it frames, and the card's state.

The card page depends only on site, item, origin, language, theme and accent, so it is
cacheable (ETag, a short public max-age) and a CDN can serve every page view; what concerns
the reader (wallet, balance, owned) comes from ``GET /v1/card/...``, which the card fetches
from its own origin with the wallet cookie after it renders.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any

import rcssmin
import rjsmin
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from coinslot import catalog
from coinslot.catalog import Item, Site
from coinslot.errors import NotFound, UnknownItem, UnknownSite, UnknownWallet
from coinslot.http.context import services
from coinslot.http.cors import allow_site_origin
from coinslot.http.credentials import carries_wallet_credential, optional_wallet, uses_cookie
from coinslot.http.problems import PrivateJSONResponse
from coinslot.http.schemas import requested_items
from coinslot.money import format_amount

ASSETS = {"coinslot.js": "text/javascript; charset=utf-8", "card.js": "text/javascript; charset=utf-8"}
ASSETS["card.css"] = "text/css; charset=utf-8"
LOADER_MAX_AGE = 5 * 60  # seconds, at the unversioned URL; the versioned one is immutable
IMMUTABLE = "public, max-age=31536000, immutable"
CARD_MAX_AGE = 60  # seconds: a price change reaches readers within a minute (and rule 7 guards the gap)
ACCENT = re.compile(r"^#[0-9a-fA-F]{6}\Z")
THEMES = ("light", "dark", "auto")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "unlockFor": "Unlock for {price}",
        "balance": "Wallet balance: {amount}",
        "owing": "On your tab: {amount}",
        "working": "One moment…",
        "unlocked": "Unlocked. Enjoy!",
        "receipt": "{amount} — {title}",
        "owned": "Yours — unlocked before, no charge.",
        "needMoney": "{price} is more than your wallet's {balance}. Add money once, then each unlock is one click.",
        "add": "Add {amount}",
        "voucherLabel": "Voucher code",
        "redeem": "Redeem",
        "waiting": "Finish the payment in the new window; this card unlocks by itself.",
        "paid": "Payment received.",
        "topupFailed": "The payment did not go through and nothing was charged. Press the button to try again.",
        "topupExpired": "That payment window has expired. Press the button to try again.",
        # Said when the card loses sight of the window: the reader closed it, or the browser cut the
        # link (a page or checkout sending Cross-Origin-Opener-Policy) while the reader still pays.
        "windowClosed": "Waiting for your payment. If you closed the payment window, choose an amount to try again.",
        "popupBlocked": "If no payment window opened, your browser may have blocked it:",
        "openCheckout": "Open it here",
        "voucherAdded": "Voucher added: {amount}.",
        "voucherRefused": "That code can't be used. Check it and try again.",
        "priceChanged": "The price is now {price}. Press the button to unlock at this price.",
        "frozen": "Your wallet is at {balance} after a payment was taken back. Add money to unlock again.",
        "tabFull": "Your tab is used up ({balance}). Add money once, then each unlock is one click.",
        "onItsWay": "Your bank payment is on its way. It can take a few business days; this card unlocks once it "
        "arrives.",
        "notSeen": "This box must be fully visible to pay. Check that nothing covers it, then press again.",
        "tooMany": "Too many tries. Please wait a few minutes.",
        "networkError": "Can't reach the payment service. Check your connection and try again.",
        "serviceError": "Something went wrong on our side and nothing was charged. Please try again.",
        "unavailable": "This item isn't available right now.",
        "wrongOrigin": "This payment box can't be shown on this website.",
        "brand": "Coinslot · no account needed",
        "label": "Unlock with Coinslot",
    },
    "de": {
        "unlockFor": "Für {price} freischalten",
        "balance": "Guthaben: {amount}",
        "owing": "Offen: {amount}",
        "working": "Einen Moment …",
        "unlocked": "Freigeschaltet. Viel Freude!",
        "receipt": "{amount} — {title}",
        "owned": "Gehört Ihnen – schon freigeschaltet, keine Kosten.",
        "needMoney": "{price} ist mehr als Ihr Guthaben von {balance}. Einmal aufladen, dann reicht je ein Klick.",
        "add": "{amount} aufladen",
        "voucherLabel": "Gutscheincode",
        "redeem": "Einlösen",
        "waiting": "Schließen Sie die Zahlung im neuen Fenster ab; diese Karte schaltet dann von selbst frei.",
        "paid": "Zahlung erhalten.",
        "topupFailed": "Die Zahlung ist nicht durchgegangen, es wurde nichts berechnet. Bitte erneut versuchen.",
        "topupExpired": "Das Zahlungsfenster ist abgelaufen. Bitte erneut versuchen.",
        "windowClosed": "Wir warten auf Ihre Zahlung. Haben Sie das Zahlungsfenster geschlossen, wählen Sie "
        "erneut einen Betrag.",
        "popupBlocked": "Falls sich kein Zahlungsfenster geöffnet hat, hat Ihr Browser es vielleicht blockiert:",
        "openCheckout": "Hier öffnen",
        "voucherAdded": "Gutschein gutgeschrieben: {amount}.",
        "voucherRefused": "Dieser Code ist nicht gültig. Bitte prüfen und erneut versuchen.",
        "priceChanged": "Der Preis ist jetzt {price}. Drücken Sie den Knopf, um zu diesem Preis freizuschalten.",
        "frozen": "Ihr Guthaben steht nach einer Rückbuchung bei {balance}. Bitte aufladen, um wieder freizuschalten.",
        "tabFull": "Ihr Limit ist ausgeschöpft ({balance}). Einmal aufladen, dann reicht je ein Klick.",
        "onItsWay": "Ihre Bankzahlung ist unterwegs. Das kann einige Werktage dauern; die Karte schaltet frei, sobald "
        "sie eingeht.",
        "notSeen": "Zum Bezahlen muss dieses Feld ganz sichtbar sein. Prüfen Sie, dass nichts darüber liegt, und "
        "drücken Sie erneut.",
        "tooMany": "Zu viele Versuche. Bitte warten Sie ein paar Minuten.",
        "networkError": "Der Zahlungsdienst ist nicht erreichbar. Bitte Verbindung prüfen und erneut versuchen.",
        "serviceError": "Bei uns ist etwas schiefgegangen, es wurde nichts berechnet. Bitte erneut versuchen.",
        "unavailable": "Dieser Inhalt ist gerade nicht verfügbar.",
        "wrongOrigin": "Diese Bezahlbox kann auf dieser Website nicht angezeigt werden.",
        "brand": "Coinslot · ohne Konto",
        "label": "Mit Coinslot freischalten",
    },
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    integrity: str  # Subresource Integrity value, sha384-<base64>


@functools.cache
def asset(name: str) -> Asset:
    """A static widget file shipped inside the package, minified once on first use: the repo keeps
    the readable source, readers get the smaller bytes, and SRI, ETag and version follow those."""
    source = resources.files("coinslot").joinpath("static", name).read_text(encoding="utf-8")
    body = (rcssmin.cssmin(source) if name.endswith(".css") else rjsmin.jsmin(source)).encode()
    digest = hashlib.sha256(body).hexdigest()
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Asset(body, ASSETS[name], f'"{digest[:20]}"', integrity)


@functools.cache
def version() -> str:
    """One version for the loader, card script and stylesheet together: a digest of all three."""
    return hashlib.sha256(b"".join(asset(n).body for n in sorted(ASSETS))).hexdigest()[:16]


def loader_url(public_url: str) -> str:
    """The loader's versioned, immutable URL (its SRI hash is ``asset("coinslot.js").integrity``)."""
    return f"{public_url}/v/{version()}/coinslot.js"


def _not_modified(request: Request, etag: str) -> bool:
    return etag in [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]


def _asset_response(request: Request, name: str, cache_control: str) -> Response:
    a = asset(name)
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
    name = request.path_params["asset"]
    if request.path_params["version"] != version() or name not in ASSETS:
        raise NotFound(f"no widget file {name!r} at version {request.path_params['version']!r}; current: {version()}")
    return _asset_response(request, name, IMMUTABLE)


def _lang(value: str | None) -> str:
    return "de" if (value or "").lower().startswith("de") else "en"


def _page(
    *,
    lang: str,
    theme: str,
    title: str,
    config: dict[str, Any],
    body: str,
    status: int,
    ancestors: str,
    cache_control: str,
    request: Request,
) -> Response:
    v = version()
    # JSON inside <script type="application/json"> is data, not script, so CSP allows it;
    # escaping '<' keeps a title such as "</script>" from closing the element.
    data = json.dumps(config, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    html = f"""<!doctype html>
<html lang="{lang}" data-theme="{theme}" data-state="offer"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{escape(title)}</title>
<link rel="stylesheet" href="/v/{v}/card.css"><script src="/v/{v}/card.js" defer></script>
<script type="application/json" id="coinslot-config">{data}</script></head>
<body>{body}</body></html>
"""
    payload = html.encode()
    etag = '"' + hashlib.sha256(payload).hexdigest()[:20] + '"'
    headers = {
        "Cache-Control": cache_control,
        "ETag": etag,
        # Only what the card uses: its own script, style and API; no images, no inline anything.
        "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    if status == 200 and _not_modified(request, etag):
        return Response(status_code=304, headers=headers)
    return HTMLResponse(payload, status_code=status, headers=headers)


def _offer_body(texts: dict[str, str], item: Item, price: str) -> str:
    return f"""<main class="card" id="card" aria-label="{escape(texts["label"])}">
<div class="row"><div class="what"><p class="title">{escape(item.title)}</p>
<p class="meta" id="balance"></p><p class="receipt" id="receipt"></p></div>
<button id="buy" class="buy" type="button">{escape(texts["unlockFor"].format(price=price))}</button></div>
<p class="status" id="status" role="status" aria-live="polite"></p>
<div class="topup" id="topup" hidden><div class="options" id="options"></div>
<form class="voucher" id="voucher" novalidate><label for="code">{escape(texts["voucherLabel"])}</label>
<input id="code" name="code" autocomplete="off" autocapitalize="characters" spellcheck="false" maxlength="64">
<button type="submit">{escape(texts["redeem"])}</button></form></div>
<p class="brand">{escape(texts["brand"])}</p></main>"""


def _notice_body(texts: dict[str, str], message: str) -> str:
    return f"""<main class="card unavailable" aria-label="{escape(texts["label"])}">
<p class="title" role="status">{escape(message)}</p><p class="brand">{escape(texts["brand"])}</p></main>"""


async def card(request: Request) -> Response:
    """The card for one item, rendered with its title and price in the reader's language."""
    svc = services(request)
    q = request.query_params
    lang = _lang(q.get("lang"))
    theme = q.get("theme", "auto")
    theme = theme if theme in THEMES else "auto"
    accent = q.get("accent", "")
    texts = TEXTS[lang]

    def page(title: str, config: dict[str, Any], body: str, status: int, ancestors: str, cache: str) -> Response:
        return _page(
            lang=lang,
            theme=theme,
            title=title,
            config=config,
            body=body,
            status=status,
            ancestors=ancestors,
            cache_control=cache,
            request=request,
        )

    base: dict[str, Any] = {"lang": lang, "texts": texts, "item": "", "origin": ""}
    site_id, item_id = request.path_params["site"], request.path_params["item"]
    try:
        site: Site = await svc.catalog.site(site_id)
    except UnknownSite:
        # No site, so no origins to allow or to answer: a calm notice that nothing can be bought.
        return page(
            title=texts["unavailable"],
            config={**base, "problem": f"unknown site {site_id!r}"},
            body=_notice_body(texts, texts["unavailable"]),
            status=404,
            ancestors="*",
            cache=f"public, max-age={CARD_MAX_AGE}",
        )
    ancestors = " ".join(site.origins) or "'none'"
    origin = q.get("origin", "").lower()
    if origin not in site.origins:
        # Never a postMessage target we did not check; the loader reports the silence.
        return page(
            title=texts["wrongOrigin"],
            config={**base, "problem": f"origin {origin!r} is not allowed for {site.id}"},
            body=_notice_body(texts, texts["wrongOrigin"]),
            status=403,
            ancestors=ancestors,
            cache="no-store",
        )
    try:
        item = await svc.catalog.item(site.id, catalog.check_item_id(item_id))
    except UnknownItem:
        return page(
            title=texts["unavailable"],
            config={**base, "origin": origin, "problem": f"unknown item {item_id!r} on {site.id}"},
            body=_notice_body(texts, texts["unavailable"]),
            status=404,
            ancestors=ancestors,
            cache=f"public, max-age={CARD_MAX_AGE}",
        )
    config = {
        **base,
        "site": site.id,
        "item": item.id,
        "title": item.title,
        "price": item.price,
        "currency": site.currency,
        "origin": origin,
        "accent": accent if ACCENT.match(accent) else "",
    }
    price = format_amount(item.price, site.currency, lang)
    return page(
        title=f"{item.title} — {price}",
        config=config,
        body=_offer_body(texts, item, price),
        status=200,
        ancestors=ancestors,
        cache=f"public, max-age={CARD_MAX_AGE}",
    )


# The card's colours (as card.css has them), for the placeholder the loader draws in its place.
PALETTES = {
    "light": {"bg": "#ffffff", "fg": "#1b1b1b", "muted": "#4f4f4f", "line": "#d4d4d4", "accent": "#1d4ed8"},
    "dark": {"bg": "#1c1c1e", "fg": "#f2f2f2", "muted": "#c2c2c2", "line": "#48484a", "accent": "#8ab4ff"},
}
ON_ACCENT = {"light": "#ffffff", "dark": "#000000"}
# The card's box, title row and brand line (body padding 3px, card padding 12px 14px, a 40px
# button; 12px between title and button, also when a narrow screen wraps them, 8px above the
# brand), so the card takes its place without moving anything.
PLACEHOLDER_CSS = (
    ":host{display:flex;flex-wrap:wrap;align-items:center;align-content:start;gap:12px;grid-area:1/1;z-index:1;"
    "margin:3px;padding:12px 14px;background:var(--bg);color:var(--fg);border:1px solid var(--line);"
    'border-radius:12px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;cursor:default}'
    "span{flex:1 1 12em;min-width:0;font-weight:600;overflow-wrap:anywhere}"
    "span+span{flex:none;line-height:24px;padding:8px 16px;border-radius:8px;background:var(--accent);"
    "color:var(--on-accent)}"
    ":host::after{content:var(--brand);flex:1 0 100%;margin-top:-4px;font-size:11px;color:var(--muted);"
    "text-align:right}"
)


def on_accent(accent: str) -> str:
    """Black or white text on the publisher's accent, whichever contrasts more: card.js's rule (WCAG)."""
    channels = [int(accent[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#fff"


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ") + '"'


def placeholder_css(texts: dict[str, str], theme: str, accent: str) -> str:
    """The stylesheet for placeholders in a page's shadow roots: the card's look in its theme."""

    def colours(name: str) -> str:
        p = PALETTES[name]
        return ":host{" + ";".join(f"--{k}:{v}" for k, v in p.items()) + f";--on-accent:{ON_ACCENT[name]}}}"

    css = colours("light") + f":host{{--brand:{_css_string(texts['brand'])}}}"
    if theme == "dark":
        css += colours("dark")
    elif theme == "auto":
        css += "@media (prefers-color-scheme:dark){" + colours("dark") + "}"
    if ACCENT.match(accent):
        css += f":host{{--accent:{accent};--on-accent:{on_accent(accent)}}}"
    return css + PLACEHOLDER_CSS


async def placeholders(request: Request) -> Response:
    """What the loader shows while a card's frame starts (a new process: it is another site):
    each item's title and the card's own words for its price, and the card's look. Public and
    cacheable like the card page; it reads no credential, and unknown items get no price."""
    svc = services(request)
    q = request.query_params
    names = requested_items(request)
    site = await svc.catalog.site(request.path_params["site"])
    found = await svc.catalog.items(site.id, names)
    lang = _lang(q.get("lang"))
    theme = q.get("theme", "auto")
    texts = TEXTS[lang]
    items = [
        {
            "item": item.id,
            "title": item.title,
            "text": texts["unlockFor"].format(price=format_amount(item.price, site.currency, lang)),
        }
        for item in (found.get(n) for n in names)
        if item is not None
    ]
    body = {
        "site": site.id,
        "items": items,
        "unknown": [n for n in names if found.get(n) is None],
        "css": placeholder_css(texts, theme if theme in THEMES else "auto", q.get("accent", "")),
    }
    cache = "no-store" if carries_wallet_credential(request) else f"public, max-age={CARD_MAX_AGE}"
    return allow_site_origin(request, site, JSONResponse(body, headers={"Cache-Control": cache}))


async def reader_state(request: Request) -> Response:
    """The one credentialed read a card makes (coinslot.unlocks.Unlocks.reader_state)."""
    svc = services(request)
    site_id, item_id, now_ms = request.path_params["site"], request.path_params["item"], svc.clock.now_ms()
    try:
        state = await svc.unlocks.reader_state(
            optional_wallet(request), site_id=site_id, item_id=item_id, now_ms=now_ms
        )
    except UnknownWallet:
        if not uses_cookie(request, svc):
            raise
        # A cookie naming a wallet that is gone (or was recovered elsewhere): the card starts afresh.
        state = await svc.unlocks.reader_state(None, site_id=site_id, item_id=item_id, now_ms=now_ms)
    return PrivateJSONResponse(state)
