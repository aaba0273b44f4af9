"""The widget's routes: loader and card files, the server-rendered card, and the card's reader state."""

from __future__ import annotations

import base64
import hashlib
import json
import re

import httpx
import pytest

from coinslot import widget
from coinslot.clock import FrozenClock
from coinslot.money import format_amount
from coinslot.store import Store

from api import Api, auth

SITE_ORIGIN = "http://localhost:8001"
PUBLIC = "http://127.0.0.1:8000"
# What a browser sends from the card's own iframe; a page on another site cannot produce these.
CARD_GET = {"Sec-Fetch-Site": "same-origin"}
CARD_POST = {"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC}


def card_get(token: str) -> dict[str, str]:
    return {**CARD_GET, "Cookie": f"coinslot_wallet={token}"}


def card_post(token: str) -> dict[str, str]:
    return {**CARD_POST, "Cookie": f"coinslot_wallet={token}"}


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


def config(html: str) -> dict[str, object]:
    found = re.search(r'<script type="application/json" id="coinslot-config">(.*?)</script>', html, re.S)
    assert found is not None
    result: dict[str, object] = json.loads(found.group(1))
    return result


async def test_loader_is_cacheable_and_pinned_by_a_versioned_url(api: Api) -> None:
    plain = await api.client.get("/coinslot.js")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.headers["cache-control"] == "public, max-age=300"
    assert plain.headers["access-control-allow-origin"] == "*"  # SRI on a cross-origin script needs CORS
    assert "access-control-allow-credentials" not in plain.headers

    versioned = await api.client.get(f"/v/{widget.version()}/coinslot.js")
    assert versioned.content == plain.content
    assert versioned.headers["cache-control"] == "public, max-age=31536000, immutable"
    sri = "sha384-" + base64.b64encode(hashlib.sha384(versioned.content).digest()).decode()
    assert widget.asset("coinslot.js").integrity == sri

    again = await api.client.get("/coinslot.js", headers={"If-None-Match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    stale = await api.client.get("/v/0000000000000000/coinslot.js")
    assert stale.status_code == 404
    assert stale.json()["type"].endswith("/not-found")
    other = await api.client.get(f"/v/{widget.version()}/secrets.txt")
    assert other.status_code == 404


async def test_widget_files_are_within_their_size_budgets() -> None:
    import gzip

    loader = len(gzip.compress(widget.asset("coinslot.js").body, 9))
    card = sum(len(gzip.compress(widget.asset(n).body, 9)) for n in ("card.js", "card.css"))
    assert loader <= 2048, f"coinslot.js is {loader} bytes gzipped, budget 2048"
    assert card <= 12 * 1024 - 2048, f"card.js + card.css are {card} bytes gzipped; the page itself needs room"


async def test_the_card_page_offers_the_sites_pass_before_any_read_and_follows_its_price(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN])
    await api.item(site, "a", 19)
    plain = config((await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})).text)
    assert plain["site_pass"] is None
    await api.item(site, "day", 99, pass_hours=24, title="All of today")
    offered = config((await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})).text)
    assert offered["site_pass"] == {"item": "day", "title": "All of today", "price": 99, "pass_hours": 24}
    await api.item(site, "day", 149, pass_hours=24, title="All of today")
    repriced = config((await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})).text)
    assert repriced["site_pass"]["price"] == 149  # type: ignore[index]
    itself = config((await api.client.get(f"/embed/{site[0]}/day", params={"origin": SITE_ORIGIN})).text)
    assert itself["site_pass"] is None  # the pass's own card does not offer it beside itself


async def test_card_is_rendered_with_title_and_price_and_framed_only_by_the_sites_origins(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN, "https://news.example.com"])
    await api.item(site, "a", 19, title="Heat <wave> & more")

    r = await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})
    assert r.status_code == 200
    assert "Unlock for €0.19" in r.text
    assert "Heat &lt;wave&gt; &amp; more" in r.text
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors http://localhost:8001 https://news.example.com" in csp
    assert csp == (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors http://localhost:8001 https://news.example.com"
    )  # nothing the card does not use: no images, no inline script or style, no eval
    assert "<script>" not in r.text and "style=" not in r.text  # CSP-clean: no inline script or style
    assert r.headers["cache-control"] == "public, max-age=60"
    assert "set-cookie" not in r.headers  # nothing about the reader: a CDN may serve it to everyone
    cfg = config(r.text)
    assert cfg["origin"] == SITE_ORIGIN and cfg["price"] == 19 and cfg["currency"] == "EUR"

    cached = await api.client.get(
        f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN}, headers={"If-None-Match": r.headers["etag"]}
    )
    assert cached.status_code == 304


async def test_a_rendered_card_follows_a_new_price_or_title_at_once(api: Api) -> None:
    # Card pages are kept rendered per process; what they are made of must name them, so a change
    # shows on the next view (once the catalog has heard of it) and never an older page.
    site = await api.site()
    await api.item(site, "a", 19, title="Before")
    first = await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})
    assert "Unlock for €0.19" in first.text and "Before" in first.text

    await api.item(site, "a", 25, title="After")
    second = await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})
    assert "Unlock for €0.25" in second.text and "After" in second.text and "Before" not in second.text
    assert config(second.text)["price"] == 25
    assert second.headers["etag"] != first.headers["etag"]
    dark = await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN, "theme": "dark"})
    assert 'data-theme="dark"' in dark.text and dark.headers["etag"] != second.headers["etag"]


async def test_card_in_german_with_theme_and_accent(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 150)
    r = await api.client.get(
        f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN, "lang": "de-AT", "theme": "dark", "accent": "#f59e0b"}
    )
    assert "Für 1,50\u00a0€ freischalten" in r.text
    assert '<html lang="de" data-theme="dark"' in r.text
    assert config(r.text)["accent"] == "#f59e0b"

    odd = await api.client.get(
        f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN, "theme": "neon", "accent": "red;}x{"}
    )
    assert 'data-theme="auto"' in odd.text
    assert config(odd.text)["accent"] == ""


@pytest.mark.parametrize(
    ("amount", "currency", "lang", "text"),
    [
        (19, "EUR", "en", "€0.19"),
        (19, "EUR", "de", "0,19\u00a0€"),
        (123456, "EUR", "de", "1.234,56\u00a0€"),
        (150, "USD", "en", "$1.50"),
        (150, "GBP", "de", "1,50\u00a0£"),
    ],
)
def test_prices_read_as_intl_number_format_writes_them(amount: int, currency: str, lang: str, text: str) -> None:
    assert format_amount(amount, currency, lang) == text


async def test_a_foreign_origin_gets_a_notice_and_is_never_a_message_target(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    for origin in ("https://evil.example", "", "null", SITE_ORIGIN + ".evil.example"):
        r = await api.client.get(f"/embed/{site[0]}/a", params={"origin": origin})
        assert r.status_code == 403
        assert "can't be shown on this website" in r.text
        assert config(r.text)["origin"] == ""
        assert "frame-ancestors http://localhost:8001" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"


async def test_unknown_site_or_item_is_a_calm_card_not_an_error(api: Api) -> None:
    site = await api.site()
    item = await api.client.get(f"/embed/{site[0]}/nope", params={"origin": SITE_ORIGIN, "lang": "de"})
    assert item.status_code == 404
    assert "Dieser Inhalt ist gerade nicht verfügbar." in item.text
    assert config(item.text)["item"] == ""
    for path in ("/embed/site_nope/a", "/embed/not-a-site/a", f"/embed/{site[0]}/bad%20item!"):
        r = await api.client.get(path, params={"origin": SITE_ORIGIN})
        assert r.status_code == 404, path
        assert r.headers["content-type"].startswith("text/html")


async def test_reader_state_without_a_wallet(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    r = await api.client.get(f"/v1/card/{site[0]}/a", headers=CARD_GET)
    assert r.json() == {
        "wallet": False,
        "currency": "EUR",
        "price": 19,
        "owned": False,
        "tab_limit": 0,
        "site_pass": None,
    }
    assert r.headers["cache-control"] == "no-store"


async def test_card_cookie_wallet_sees_balance_then_owned_with_a_fresh_token_and_content(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19, title="Heat wave", content_html="<p>Story</p><script>x()</script>")
    made = await api.client.post("/v1/wallets", json={"currency": "EUR"}, headers=CARD_POST)
    assert "Partitioned" in made.headers["set-cookie"]
    token = made.json()["token"]
    await api.fund(site, token, 100)

    before = await api.client.get(f"/v1/card/{site[0]}/a", headers=card_get(token))
    assert before.json() == {
        "wallet": True,
        "currency": "EUR",
        "balance": 100,
        "budget": 100,
        "tab_limit": 0,
        "price": 19,
        "owned": False,
        "cap": None,
        "site_pass": None,
    }

    unlocked = await api.client.post(
        "/v1/unlocks", json={"site": site[0], "item": "a", "price": 19}, headers=card_post(token)
    )
    assert unlocked.status_code == 200

    api.clock.advance(60)
    after = await api.client.get(f"/v1/card/{site[0]}/a", headers=card_get(token))
    body = after.json()
    assert body["owned"] is True and body["balance"] == 81 and body["charged"] == 0
    assert body["content"] == "<p>Story</p>"
    assert body["purchase_id"] == unlocked.json()["purchase_id"]
    assert body["token"] != unlocked.json()["token"]  # freshly signed, later expiry
    assert body["expires_at"] > unlocked.json()["expires_at"]
    verified = await api.client.get(f"/v1/content/{site[0]}/a", headers=auth(body["token"]))
    assert verified.status_code == 200
    assert await api.balance(token) == 81  # reading the state charged nothing


async def test_reader_state_ignores_the_cookie_from_another_site(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    made = await api.client.post("/v1/wallets", json={}, headers=CARD_POST)
    assert made.status_code == 201
    jar = {"Cookie": f"coinslot_wallet={made.json()['token']}"}
    assert (await api.client.get(f"/v1/card/{site[0]}/a", headers={**jar, **CARD_GET})).json()["wallet"] is True
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {}):
        r = await api.client.get(f"/v1/card/{site[0]}/a", headers={**jar, **headers})
        assert r.json()["wallet"] is False
        assert "access-control-allow-origin" not in r.headers


async def test_reader_state_with_a_stale_cookie_starts_afresh_but_a_bad_bearer_is_401(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    made = await api.client.post("/v1/wallets", json={}, headers=CARD_POST)
    token = made.json()["token"]
    await api.store.redis.delete("{w:" + made.json()["wallet_id"] + "}")
    r = await api.client.get(f"/v1/card/{site[0]}/a", headers=card_get(token))
    assert r.status_code == 200 and r.json()["wallet"] is False
    bearer = await api.client.get(f"/v1/card/{site[0]}/a", headers=auth(token))
    assert bearer.status_code == 401
    unknown = await api.client.get(f"/v1/card/{site[0]}/zzz", headers=card_get(token))
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/unknown-item")


def test_snippet_command_prints_the_pinned_loader(capsys: pytest.CaptureFixture[str]) -> None:
    from coinslot.cli import main

    assert main(["snippet", "site_abc", "--item", "story-1"]) == 0
    out = capsys.readouterr().out
    assert f"/v/{widget.version()}/coinslot.js" in out
    assert f'integrity="{widget.asset("coinslot.js").integrity}" crossorigin="anonymous"' in out
    assert 'data-site="site_abc"' in out and 'data-coinslot-item="story-1"' in out


async def test_changing_a_sites_origins_moves_where_its_cards_may_be_framed(api: Api) -> None:
    from coinslot import catalog

    site = await api.site()
    await api.item(site, "a", 19)
    assert (await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})).status_code == 200
    await catalog.set_origins(api.store, site[0], ["https://News.example.com/"])
    moved = await api.client.get(f"/embed/{site[0]}/a", params={"origin": "https://news.example.com"})
    assert moved.status_code == 200
    assert moved.headers["content-security-policy"].endswith("frame-ancestors https://news.example.com")
    assert (await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN})).status_code == 403


def test_every_card_text_exists_in_every_language_with_the_same_placeholders() -> None:
    # A missing German string would show as "undefined" in a German reader's card.
    assert {"en", "de"} <= set(widget.languages())
    english = widget.texts("en")
    for lang in widget.languages():
        assert widget.texts(lang).keys() == english.keys(), lang
        for key, text in english.items():
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", widget.texts(lang)[key])), key


async def test_widget_files_are_served_minified_and_pinned_by_what_is_served(api: Api) -> None:
    from importlib import resources

    import rcssmin
    import rjsmin

    for name, minify in (("coinslot.js", rjsmin.jsmin), ("card.js", rjsmin.jsmin), ("card.css", rcssmin.cssmin)):
        source = resources.files("coinslot").joinpath("static", name).read_text(encoding="utf-8")
        served = await api.client.get(f"/v/{widget.version()}/{name}")
        assert served.status_code == 200
        # The stylesheet's colours are rendered in front of it from widget.PALETTES, their one home.
        colours = widget.palette_css() if name == "card.css" else ""
        assert served.content == (colours + minify(source)).encode() == widget.asset(name).body
        assert len(served.content) < len(source.encode())  # the readable source stays in the repo
        assert served.headers["etag"] == '"' + hashlib.sha256(served.content).hexdigest()[:20] + '"'
        sri = "sha384-" + base64.b64encode(hashlib.sha384(served.content).digest()).decode()
        assert widget.asset(name).integrity == sri
    digest = hashlib.sha256(b"".join(widget.asset(n).body for n in ("card.css", "card.js", "coinslot.js")))
    assert widget.version() == digest.hexdigest()[:16]  # the versioned URL follows the served bytes


async def test_placeholders_carry_titles_and_the_cards_own_words_publicly(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN])
    await api.item(site, "a", 19, title="Heat <wave>")
    await api.item(site, "b", 150)

    r = await api.client.get(
        f"/placeholders/{site[0]}", params={"items": "b,zzz,a,b", "lang": "de"}, headers={"Origin": SITE_ORIGIN}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["items"] == [
        {"item": "b", "title": "Title of b", "text": "Für 1,50\u00a0€ freischalten"},
        {"item": "a", "title": "Heat <wave>", "text": "Für 0,19\u00a0€ freischalten"},
    ]
    assert body["unknown"] == ["zzz"]  # no price for an item that does not exist
    assert r.headers["cache-control"] == "public, max-age=60"
    assert r.headers["access-control-allow-origin"] == SITE_ORIGIN
    assert "access-control-allow-credentials" not in r.headers
    assert "Origin" in r.headers["vary"]
    assert "set-cookie" not in r.headers

    # The very words of the card's button, in both languages.
    for lang in ("en", "de"):
        card = await api.client.get(f"/embed/{site[0]}/a", params={"origin": SITE_ORIGIN, "lang": lang})
        words = (await api.client.get(f"/placeholders/{site[0]}", params={"items": "a", "lang": lang})).json()
        assert f'class="buy" type="button">{words["items"][0]["text"]}</button>' in card.text

    stranger = await api.client.get(
        f"/placeholders/{site[0]}", params={"items": "a"}, headers={"Origin": "https://evil.example"}
    )
    assert "access-control-allow-origin" not in stranger.headers


async def test_placeholders_never_cached_for_a_request_with_a_wallet_credential(api: Api) -> None:
    site = await api.site(origins=[SITE_ORIGIN])
    await api.item(site, "a", 19)
    token = await api.wallet()
    for headers in ({"Cookie": f"coinslot_wallet={token}"}, auth(token)):
        r = await api.client.get(f"/placeholders/{site[0]}", params={"items": "a"}, headers=headers)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        assert set(r.json()["items"][0]) == {"item", "title", "text"}  # and still nothing about the reader
        offers = await api.client.get("/v1/offers", params={"site": site[0], "items": "a"}, headers=headers)
        assert offers.headers["cache-control"] == "no-store"
    anonymous = await api.client.get("/v1/offers", params={"site": site[0], "items": "a"})
    assert anonymous.headers["cache-control"] == "public, max-age=30"


async def test_placeholders_look_like_the_card_in_its_theme_and_accent(api: Api) -> None:

    site = await api.site()
    await api.item(site, "a", 19)

    async def css(**params: str) -> str:
        r = await api.client.get(f"/placeholders/{site[0]}", params={"items": "a", **params})
        assert r.status_code == 200
        text: str = r.json()["css"]
        return text

    card_css = widget.asset("card.css").body.decode()
    for palette in widget.PALETTES.values():
        for name, colour in palette.items():
            assert f"--{name}:{colour}" in card_css  # the card's colours, from the same palettes

    auto, light, dark = await css(), await css(theme="light"), await css(theme="dark", lang="de")
    assert "@media (prefers-color-scheme:dark){:host{--bg:#1c1c1e" in auto
    assert "#1c1c1e" not in light and "@media" not in light
    assert ":host{--bg:#1c1c1e" in dark and "@media" not in dark
    assert '--brand:"Coinslot · no account needed"' in auto and '--brand:"Coinslot · ohne Konto"' in dark

    assert (await css(accent="#ffd60a")).endswith(PLACEHOLDER_TAIL)
    assert ":host{--accent:#ffd60a;--on-accent:#000}" in await css(accent="#ffd60a")  # dark text on yellow
    assert ":host{--accent:#7c2d12;--on-accent:#fff}" in await css(accent="#7c2d12")  # white on brown
    odd = await css(theme="neon", accent="red;}x{")
    assert odd == auto  # unknown theme: auto; an accent that is not #rrggbb never reaches the stylesheet


PLACEHOLDER_TAIL = widget.PLACEHOLDER_CSS


@pytest.mark.parametrize(
    ("accent", "text"),
    [
        ("#ffffff", "#000"),
        ("#000000", "#fff"),
        ("#1d4ed8", "#fff"),
        ("#8ab4ff", "#000"),
        ("#767676", "#000"),
        ("#707070", "#fff"),
    ],
)
def test_text_on_an_accent_is_black_or_white_whichever_contrasts_more(accent: str, text: str) -> None:
    assert widget.on_accent(accent) == text


async def test_placeholders_refuse_bad_queries_as_problems(api: Api) -> None:
    site = await api.site()
    for params in ({}, {"items": ""}, {"items": ",".join(f"i{n}" for n in range(51))}):
        r = await api.client.get(f"/placeholders/{site[0]}", params=params)
        assert r.status_code == 422
        assert r.json()["type"].endswith("/invalid-query")
    missing = await api.client.get("/placeholders/site_nope", params={"items": "a"})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    odd = await api.client.get(f"/placeholders/{site[0]}", params={"items": "../../etc,a b,ok"})
    assert odd.status_code == 200 and odd.json()["unknown"] == ["../../etc", "a b", "ok"]
