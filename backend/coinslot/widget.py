"""The widget: what a publisher's page loads, and what the card says and looks like.

- Its files (``static/``: the loader, the card's script and stylesheet), served minified, with
  one version for all three and an SRI hash each.
- Its words: one catalog per language, ``locales/<lang>.json`` (adding a language is adding a
  file), and prices written as that language writes them (coinslot.money, CLDR through Babel).
- Its colours (``PALETTES``, from which the stylesheet's colours are rendered) and the rule
  for text on a publisher's accent colour (``on_accent``); ``card.js`` reads the result.

The card page and the loader's placeholders are rendered from these by ``http/embed.py``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import rcssmin
import rjsmin

from coinslot.catalog import Item, Site
from coinslot.money import format_amount

ASSET_TYPES = {
    "coinslot.js": "text/javascript; charset=utf-8",
    "card.js": "text/javascript; charset=utf-8",
    "card.css": "text/css; charset=utf-8",
}
ACCENT = re.compile(r"^#[0-9a-fA-F]{6}\Z")
THEMES = ("light", "dark", "auto")
DEFAULT_LANGUAGE = "en"

# The card's colours, each stated here once: card.css's colour rules are rendered from them, and
# so are the placeholders the loader draws in the card's place. Text colours meet WCAG AA (4.5:1).
PALETTES = {
    "light": {
        "bg": "#ffffff",
        "fg": "#1b1b1b",
        "muted": "#4f4f4f",
        "line": "#d4d4d4",
        "accent": "#1d4ed8",
        "on-accent": "#ffffff",
        "ok": "#166534",
        "error": "#9f1239",
        "field": "#ffffff",
    },
    "dark": {
        "bg": "#1c1c1e",
        "fg": "#f2f2f2",
        "muted": "#c2c2c2",
        "line": "#48484a",
        "accent": "#8ab4ff",
        "on-accent": "#000000",
        "ok": "#86efac",
        "error": "#fda4af",
        "field": "#2c2c2e",
    },
}
PLACEHOLDER_COLOURS = ("bg", "fg", "muted", "line", "accent", "on-accent")
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


# Files ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str
    integrity: str  # Subresource Integrity value, sha384-<base64>


def _palette_rules(selector: str, theme: str, keys: tuple[str, ...] | None = None) -> str:
    palette = PALETTES[theme]
    declarations = ";".join(f"--{k}:{v}" for k, v in palette.items() if keys is None or k in keys)
    return selector + "{" + declarations + (f";color-scheme:{theme}" if keys is None else "") + "}"


def palette_css() -> str:
    """card.css's colours: light by default, dark when asked for, or when the reader's system is dark."""
    dark = _palette_rules(':root[data-theme="dark"]', "dark")
    auto_dark = _palette_rules(':root[data-theme="auto"]', "dark")
    return _palette_rules(":root", "light") + dark + "@media (prefers-color-scheme:dark){" + auto_dark + "}"


@functools.cache
def asset(name: str) -> Asset:
    """A widget file shipped inside the package, minified once on first use: the repo keeps the
    readable source, readers get the smaller bytes, and SRI, ETag and version follow those."""
    source = resources.files("coinslot").joinpath("static", name).read_text(encoding="utf-8")
    if name.endswith(".css"):
        body = (palette_css() + rcssmin.cssmin(source)).encode()
    else:
        body = rjsmin.jsmin(source).encode()
    digest = hashlib.sha256(body).hexdigest()
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Asset(body, ASSET_TYPES[name], f'"{digest[:20]}"', integrity)


@functools.cache
def version() -> str:
    """One version for the loader, card script and stylesheet together: a digest of all three."""
    return hashlib.sha256(b"".join(asset(n).body for n in sorted(ASSET_TYPES))).hexdigest()[:16]


def loader_url(public_url: str) -> str:
    """The loader's versioned, immutable URL (its SRI hash is ``asset("coinslot.js").integrity``)."""
    return f"{public_url}/v/{version()}/coinslot.js"


# Words ------------------------------------------------------------------------------


@functools.cache
def languages() -> tuple[str, ...]:
    """The languages the card speaks: one catalog file each."""
    folder = resources.files("coinslot").joinpath("locales")
    return tuple(sorted(f.name.removesuffix(".json") for f in folder.iterdir() if f.name.endswith(".json")))


@functools.cache
def texts(lang: str) -> dict[str, str]:
    """The card's words in ``lang`` (one of ``languages()``)."""
    catalog: dict[str, str] = json.loads(
        resources.files("coinslot").joinpath("locales", lang + ".json").read_text(encoding="utf-8")
    )
    return catalog


def pick_language(value: str | None) -> str:
    """The card's language for a page's ``lang`` (``de-AT`` → ``de``); English when it has no catalog."""
    primary = (value or "").lower().partition("-")[0].partition("_")[0]
    return primary if primary in languages() else DEFAULT_LANGUAGE


def pick_theme(value: str | None) -> str:
    return value if value in THEMES else "auto"


def price_text(item: Item, site: Site, lang: str) -> str:
    """The button's words: "Unlock for €0.19", as the card itself writes them. Under a price test the
    price is the reader's, which only the card's read knows: a page for everybody names none."""
    if item.test_price is not None:
        return texts(lang)["unlock"]
    return texts(lang)["unlockFor"].format(price=format_amount(item.price, site.currency, lang))


# Colours ----------------------------------------------------------------------------


def on_accent(accent: str) -> str:
    """Black or white text on the publisher's ``#rrggbb`` accent, whichever contrasts more (WCAG 2 luminance)."""
    channels = [int(accent[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#000" if (lum + 0.05) / 0.05 > 1.05 / (lum + 0.05) else "#fff"


def accent_colours(accent: str | None) -> dict[str, str]:
    """The publisher's accent and the text colour on it, both empty for anything but ``#rrggbb``."""
    if accent is None or not ACCENT.match(accent):
        return {"accent": "", "onAccent": ""}
    return {"accent": accent, "onAccent": on_accent(accent)}


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\a ") + '"'


def placeholder_css(lang: str, theme: str, accent: str | None) -> str:
    """The stylesheet for placeholders in a page's shadow roots: the card's look in its theme."""
    css = (
        _palette_rules(":host", "light", PLACEHOLDER_COLOURS) + f":host{{--brand:{_css_string(texts(lang)['brand'])}}}"
    )
    if theme == "dark":
        css += _palette_rules(":host", "dark", PLACEHOLDER_COLOURS)
    elif theme == "auto":
        css += "@media (prefers-color-scheme:dark){" + _palette_rules(":host", "dark", PLACEHOLDER_COLOURS) + "}"
    colours = accent_colours(accent)
    if colours["accent"]:
        css += f":host{{--accent:{colours['accent']};--on-accent:{colours['onAccent']}}}"
    return css + PLACEHOLDER_CSS


def card_config(lang: str, **more: Any) -> dict[str, Any]:
    """What card.js reads from the page (its ``coinslot-config`` element)."""
    return {"lang": lang, "texts": texts(lang), "item": "", "origin": "", **more}


# Search engines: a page whose text is hidden until paid must say so, or crawlers that see more
# than readers may take it for cloaking. The container a publisher pastes carries this class, the
# page's JSON-LD points at it, and the card keeps prices out of snippets (data-nosnippet).
LOCKED_CLASS = "coinslot-locked"
SCHEMA_TYPES = ("NewsArticle", "Article", "BlogPosting", "CreativeWork", "Course", "WebPage")


def paywall_json_ld(schema_type: str = "NewsArticle") -> str:
    """The JSON-LD block that marks a page paywalled (isAccessibleForFree false) and where its paid part is."""
    if schema_type not in SCHEMA_TYPES:
        raise ValueError(f"schema type {schema_type!r} is not one of {SCHEMA_TYPES}")
    data = {
        "@context": "https://schema.org",
        "@type": schema_type,
        "headline": "The page's title",
        "isAccessibleForFree": False,
        "hasPart": {"@type": "WebPageElement", "isAccessibleForFree": False, "cssSelector": "." + LOCKED_CLASS},
    }
    return '<script type="application/ld+json">\n' + json.dumps(data, indent=2) + "\n</script>"
