"""The price before the card: the loader's placeholder (title and the card's words, drawn in the
page while the card's cross-site frame starts) shows the right words, looks like the card, is
replaced by it, and can never be used to pay."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, Request, Route, expect

from conftest import Reader, Stack, card, content, press, redeem_in_card, shot, wallet

# Collects what the page's Content Security Policy refused, as the page itself would see it.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__violations.push({directive: e.effectiveDirective, blocked: e.blockedURI}));
"""


@dataclass
class HeldCards:
    """The cards' frames held back (their pages wait) until released: the placeholder stays."""

    context: BrowserContext
    routes: list[Route] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context.route("**/embed/**", lambda route: self.routes.append(route))

    def release(self) -> None:
        for route in self.routes:
            route.continue_()
        self.context.unroute("**/embed/**")


@pytest.fixture
def held(reader: Reader) -> HeldCards:
    return HeldCards(reader.context)


def placeholder(page: Page, item: str) -> Locator:
    return page.locator(f'[data-coinslot-item="{item}"] .coinslot-placeholder')


def words(ph: Locator) -> list[str]:
    # Playwright's CSS locators reach into the open shadow root.
    return ph.locator("span").all_inner_texts()


def requests_to(reader: Reader, path: str) -> list[Request]:
    seen: list[Request] = []
    reader.context.on("request", lambda r: seen.append(r) if path in r.url else None)
    return seen


GERMAN = (
    "/de/artikel.html",
    "artikel-hitze",
    "Warum diese Hitzewelle alle Rekorde brach",
    "Für 0,19\u00a0€ freischalten",
)


@pytest.mark.parametrize(
    ("path", "item", "title", "price", "width"),
    [
        (
            "/article.html",
            "article-heatwave",
            "Why this summer's heat wave broke every record",
            "Unlock for €0.19",
            900,
        ),
        (*GERMAN, 900),
        (*GERMAN, 375),  # a phone: title and price on two lines
    ],
)
def test_the_placeholder_shows_title_and_price_until_the_card_takes_its_place(
    stack: Stack, reader: Reader, held: HeldCards, path: str, item: str, title: str, price: str, width: int
) -> None:
    page = reader.page()
    page.set_viewport_size({"width": width, "height": 740})
    page.goto(stack.demo + path, wait_until="commit")
    ph = placeholder(page, item)
    expect(ph).to_be_visible()
    assert words(ph) == [title, price]
    shot(page, f"40-placeholder-{item}-{width}")

    # Nothing in it to press or to focus, and nothing for a screen reader to announce as a button.
    expect(ph).to_have_attribute("aria-hidden", "true")
    assert ph.evaluate("(el) => el.shadowRoot.querySelectorAll('button, a, input, [tabindex]').length") == 0
    expect(page.get_by_role("button", name=price)).to_have_count(0)
    for _ in range(4):
        page.keyboard.press("Tab")
        assert page.evaluate("() => !!document.activeElement.closest('.coinslot-placeholder')") is False
    before = ph.bounding_box()
    below = page.locator("footer").bounding_box()
    assert before is not None and below is not None

    held.release()
    c = card(page, item)
    expect(c.get_by_role("button", name=price)).to_be_visible()
    expect(ph).to_have_count(0)  # replaced as soon as the card said it is ready
    frame = page.locator(f'[data-coinslot-item="{item}"] iframe').bounding_box()
    assert frame is not None
    # The card sits where the placeholder was (3 px around it, as the card's own page has), and
    # nothing below moved.
    assert abs(frame["y"] + 3 - before["y"]) <= 1 and abs(frame["height"] - 6 - before["height"]) <= 1
    after = page.locator("footer").bounding_box()
    assert after is not None and abs(after["y"] - below["y"]) < 1  # the card's height is rounded up to a pixel
    assert reader.errors == []


def test_the_placeholder_cannot_be_used_to_pay(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    redeem_in_card(page, "article-heatwave")  # a funded wallet: a press that counted would pay at once
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    assert wallet(stack, reader)["balance"] == 481

    held = HeldCards(reader.context)
    unlocks = requests_to(reader, "/v1/unlocks")
    page.reload(wait_until="commit")
    ph = placeholder(page, "article-bridge")
    expect(ph).to_be_visible()
    ph.click()  # the reader's click
    outcome = page.evaluate(
        """async ([api]) => {
        const ph = document.querySelector('[data-coinslot-item="article-bridge"] .coinslot-placeholder');
        // A script in the page: synthetic clicks and keys on it and inside it, and forged card messages.
        ph.click();
        for (const el of ph.shadowRoot.querySelectorAll('*')) {
          el.click();
          el.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter', bubbles: true}));
        }
        for (const type of ['ready', 'painted', 'unlock', 'unlocked']) {
          window.postMessage({coinslot: {type, item: 'article-bridge', token: 'x'}}, '*');
        }
        await new Promise((r) => setTimeout(r, 1000));
        return {stillThere: ph.isConnected, content: !!document.querySelector(
          '[data-coinslot-item="article-bridge"] .coinslot-content')};
      }""",
        [stack.backend],
    )
    assert outcome == {"stillThere": True, "content": False}  # forged "ready" or "painted" do not remove it
    assert unlocks == []

    held.release()
    bridge = card(page, "article-bridge")
    expect(bridge.locator("#buy")).to_be_visible()
    expect(ph).to_have_count(0)
    expect(bridge.locator("#balance")).to_have_text("Wallet balance: €4.81")
    expect(bridge.locator("#status")).to_have_text("")
    page.wait_for_timeout(500)  # what a wrongly counted press would need to arrive
    assert unlocks == []
    after = wallet(stack, reader)
    assert after["balance"] == 481
    assert [p["item"] for p in after["purchases"]] == ["article-heatwave"]
    assert content(page, "article-bridge").count() == 0

    # Only the card pays, and still with one press of its own button.
    press(bridge, bridge.locator("#buy"))
    expect(content(page, "article-bridge")).to_contain_text("napkin")
    assert wallet(stack, reader)["balance"] == 462
    assert reader.errors == []


def test_one_public_request_without_the_cookie_for_all_items_and_no_price_for_unknown_ones(
    stack: Stack, reader: Reader
) -> None:
    page = reader.page()
    page.goto(stack.demo + "/late-item.html")
    asked = requests_to(reader, "/placeholders/")
    held = HeldCards(reader.context)
    with page.expect_response(lambda r: "/placeholders/" in r.url) as answer:
        page.evaluate(
            """() => { for (const id of ['article-bridge', 'no-such-item']) {
            const d = document.createElement('div'); d.setAttribute('data-coinslot-item', id);
            document.querySelector('main').append(d); } }"""
        )
    assert len(asked) == 1 and "items=article-bridge%2Cno-such-item" in asked[0].url
    assert answer.value.json()["unknown"] == ["no-such-item"]
    assert answer.value.headers["cache-control"] == "public, max-age=60"
    expect(placeholder(page, "article-bridge")).to_be_visible()
    expect(placeholder(page, "no-such-item")).to_have_count(0)
    shot(page, "41-placeholder-and-unknown-item")

    held.release()
    expect(card(page, "no-such-item").get_by_text("This item isn't available right now.")).to_be_visible()
    expect(placeholder(page, "no-such-item")).to_have_count(0)

    # A reader with a wallet: the request for placeholders still carries no cookie. (This Chromium
    # sends no cookie of the backend's on a request from the page even when asked to, the wallet's
    # being partitioned to the card's frame; so the loader's own word is checked too.)
    redeem_in_card(page, "article-bridge")
    expect(content(page, "article-bridge")).to_contain_text("napkin")
    assert reader.wallet_token() is not None
    asked.clear()
    page.goto(stack.demo + "/two-items.html")
    expect(card(page, "article-bridge").locator("#balance")).to_have_text("Wallet balance: €4.81")
    assert len(asked) == 1 and "items=article-heatwave%2Carticle-bridge" in asked[0].url
    assert "cookie" not in asked[0].all_headers()
    assert asked[0].all_headers().get("origin") == stack.demo  # CORS, answered for the site's origins only
    loader = page.evaluate("(url) => fetch(url).then((r) => r.text())", stack.backend + "/coinslot.js")
    assert "/placeholders/${encodeURIComponent(site)}?${q}`,{credentials:'omit'})" in loader
    assert reader.errors == []


def test_strict_csp_page_shows_the_placeholder_and_nothing_is_refused(stack: Stack, reader: Reader) -> None:
    reader.context.add_init_script(RECORD_VIOLATIONS)
    held = HeldCards(reader.context)
    page = reader.page()
    page.goto(stack.demo + "/strict-csp.html", wait_until="commit")
    ph = placeholder(page, "article-datacentre")
    expect(ph).to_be_visible()
    assert words(ph) == ["Inside the data centre that heats a swimming pool", "Unlock for €0.19"]
    # Styled like the card under style-src 'self': a constructed stylesheet in its shadow root.
    assert ph.evaluate("(el) => getComputedStyle(el).borderTopLeftRadius") == "12px"
    shot(page, "42-placeholder-strict-csp")
    held.release()
    expect(card(page, "article-datacentre").locator("#buy")).to_be_visible()
    expect(ph).to_have_count(0)
    assert page.evaluate("window.__violations") == []
    assert [m for m in reader.console if "Content Security Policy" in m] == []
    assert reader.errors == []


# A publisher whose CSP has no connect-src for the backend: the demo's strict page with one more
# policy added as the page starts (policies from <meta> elements in <head> add up), in the page
# only: init scripts run in every frame, and the card's own CSP is the backend's business.
NO_CONNECT = """if (window === window.top) new MutationObserver((list, observer) => {
  if (!document.head) return;
  observer.disconnect();
  const meta = document.createElement('meta');
  meta.httpEquiv = 'Content-Security-Policy';
  meta.content = "connect-src 'none'";
  document.head.prepend(meta);
}).observe(document, {childList: true, subtree: true});"""


def test_a_csp_without_connect_src_only_loses_the_placeholder(stack: Stack, reader: Reader) -> None:
    reader.context.add_init_script(RECORD_VIOLATIONS)
    reader.context.add_init_script(NO_CONNECT)
    page = reader.page()
    page.goto(stack.demo + "/strict-csp.html")
    c = card(page, "article-datacentre")
    expect(c.get_by_role("button", name="Unlock for €0.19")).to_be_visible()
    expect(placeholder(page, "article-datacentre")).to_have_count(0)
    violations = page.evaluate("window.__violations")
    # The browser refused the one request for placeholders, and nothing else of ours.
    assert [v["directive"] for v in violations] == ["connect-src"]
    assert "/placeholders/site_demo_news" in violations[0]["blocked"]
    redeem_in_card(page, "article-datacentre")
    expect(content(page, "article-datacentre")).to_contain_text("pool next door")
    assert not any("[coinslot]" in m for m in reader.console)  # quiet: nothing for the publisher to fix
    assert reader.errors == []


LOOK = """(el) => { const box = el.shadowRoot ? el : el.querySelector('.card');
  const button = el.shadowRoot ? el.shadowRoot.querySelectorAll('span')[1] : el.querySelector('#buy');
  const s = getComputedStyle(box), b = getComputedStyle(button);
  return [s.backgroundColor, s.borderTopColor, s.color, b.backgroundColor, b.color, b.fontWeight]; }"""


@pytest.mark.parametrize(
    ("path", "item", "accent"),
    [
        ("/events/keynote.html", "session-keynote", ["rgb(138, 180, 255)", "rgb(0, 0, 0)"]),  # data-theme="dark"
        ("/course/lesson-3.html", "lesson-3", ["rgb(245, 158, 11)", "rgb(0, 0, 0)"]),  # data-accent="#f59e0b"
    ],
)
def test_the_placeholder_has_the_cards_theme_and_accent(
    stack: Stack, reader: Reader, held: HeldCards, path: str, item: str, accent: list[str]
) -> None:
    page = reader.page()
    page.goto(stack.demo + path, wait_until="commit")
    ph = placeholder(page, item)
    expect(ph).to_be_visible()
    drawn = ph.evaluate(LOOK)
    assert drawn[3:5] == accent
    shot(page, f"43-placeholder-{item}")
    held.release()
    c = card(page, item)
    expect(c.locator("#buy")).to_be_visible()
    expect(ph).to_have_count(0)
    assert c.locator("body").evaluate(LOOK) == drawn  # the same colours and weight as the card
    assert reader.errors == []


def test_a_card_that_never_says_it_painted_is_not_left_covered(stack: Stack, reader: Reader, held: HeldCards) -> None:
    # A card that reports its readiness but never its first frame (an older card.js, say): the
    # loader takes the placeholder away soon after "ready" anyway, so the card can be used.
    def silent(route: Route) -> None:
        response = route.fetch()
        body = response.text()
        assert "frames(3);" in body
        route.fulfill(response=response, body=body.replace("frames(3);", ""))

    reader.context.route("**/card.js", silent)
    page = reader.page()
    page.goto(stack.demo + "/article.html", wait_until="commit")
    ph = placeholder(page, "article-heatwave")
    expect(ph).to_be_visible()
    held.release()
    c = card(page, "article-heatwave")
    expect(c.locator("#buy")).to_be_visible()
    expect(ph).to_have_count(0)
    press(c, c.locator("#buy"))
    expect(c.get_by_role("button", name="Add €2.00")).to_be_visible()
    assert reader.errors == []
