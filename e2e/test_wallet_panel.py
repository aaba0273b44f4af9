"""The wallet panel inside the card: balance and receipts, by keyboard alone, labelled for screen
readers (axe-core finds nothing), in both languages and themes, on a phone."""

from __future__ import annotations

import re

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Frame, Page, expect

from conftest import Reader, Stack, card, content, press, redeem_in_card, shot
from publisher import Publisher, new_site, story


def frame_of(page: Page, item: str) -> Frame:
    handle = page.locator(f'[data-coinslot-item="{item}"] iframe').element_handle()
    frame = handle.content_frame() if handle else None
    assert frame is not None
    return frame


def focused_id(page: Page, item: str) -> str:
    ids: str = card(page, item).locator(":focus").evaluate_all("els => els.map((e) => e.id).join()")
    return ids


@pytest.fixture
def post(stack: Stack) -> Publisher:
    pub = new_site(stack, "The Evening Post")
    pub.item("street", "A quiet street", 19, content=story("The street was quiet until the bakery opened."))
    pub.item("harbour", "The harbour at night", 29, content=story("Cranes stand still after ten."))
    return pub


def test_the_wallet_panel_by_keyboard_alone(stack: Stack, reader: Reader, post: Publisher) -> None:
    page = reader.page()
    page.goto(post.page("street", "harbour"))
    redeem_in_card(page, "street")
    expect(content(page, "street")).to_contain_text("bakery")
    c = card(page, "street")

    for _ in range(8):
        page.keyboard.press("Tab")
        if focused_id(page, "street") == "open":
            break
    opener = c.get_by_role("button", name="Wallet")
    expect(opener).to_be_focused()
    expect(opener).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")

    panel = c.get_by_role("dialog", name="Your wallet")
    expect(panel).to_be_visible()
    expect(c.get_by_role("heading", name="Your wallet")).to_be_focused()  # focus moved into the panel
    expect(opener).to_be_hidden()  # the panel takes the card's place: nothing else to tab into
    expect(panel.locator("#total")).to_have_text("Wallet balance: €4.81")
    receipt = panel.get_by_role("listitem").filter(has_text="A quiet street")
    expect(receipt).to_contain_text(re.compile(r"€0\.19 · \d?\d:\d\d"))
    shot(page, "60-wallet-panel")

    page.keyboard.press("Tab")
    expect(c.get_by_role("button", name="Close")).to_be_focused()
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(opener).to_be_focused()  # and back where the reader was
    expect(opener).to_have_attribute("aria-expanded", "false")

    page.keyboard.press("Enter")
    expect(panel).to_be_visible()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # Close
    expect(panel).to_be_hidden()
    expect(opener).to_be_focused()
    assert reader.errors == []


def test_a_reader_without_a_wallet_sees_why_and_can_bring_one(stack: Stack, reader: Reader, post: Publisher) -> None:
    page = reader.page()
    page.goto(post.page("street"))
    c = card(page, "street")
    press(c, c.get_by_role("button", name="Wallet"))
    panel = c.get_by_role("dialog", name="Your wallet")
    expect(panel).to_contain_text("No wallet in this browser yet.")
    expect(panel.get_by_label("I have a code")).to_be_visible()
    expect(panel.get_by_role("heading", name="Receipts")).to_be_hidden()
    shot(page, "61-wallet-panel-no-wallet")
    assert reader.wallet_token() is None  # looking makes no wallet


def test_the_wallet_panel_passes_axe(stack: Stack, reader: Reader, post: Publisher) -> None:
    page = reader.page()
    for theme in ("light", "dark"):
        page.goto(post.page("street", theme=theme))
        c = card(page, "street")
        if theme == "light":
            redeem_in_card(page, "street")
            expect(content(page, "street")).to_be_visible()
        press(c, c.get_by_role("button", name="Wallet"))
        expect(c.get_by_role("dialog")).to_be_visible()
        expect(c.locator("#total")).to_contain_text("€")
        results = Axe().run(frame_of(page, "street"))
        assert results.violations_count == 0, results.generate_report()


PHONE_FITS = """() => [...document.querySelectorAll('button, input, p, label, li, h2, h3')]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => { const r = el.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth + 0.5; })
  .map((el) => el.id || el.className || el.tagName)"""


@pytest.mark.parametrize(("lang", "theme"), [("en", "light"), ("de", "dark")])
def test_the_wallet_panel_fits_a_phone(stack: Stack, browser: Browser, post: Publisher, lang: str, theme: str) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        page.goto(post.page("street", "harbour", lang=lang, theme=theme))
        redeem_in_card(page, "street")
        expect(content(page, "street")).to_be_visible()
        c = card(page, "street")
        press(c, c.get_by_role("button", name=re.compile("^(Wallet|Geldbörse)$")))
        expect(c.get_by_role("dialog")).to_be_visible()
        expect(c.get_by_role("listitem").first).to_be_visible()
        assert c.locator("html").evaluate("(h) => h.scrollWidth <= h.clientWidth")
        assert c.locator("html").evaluate(PHONE_FITS) == []
        page.locator('[data-coinslot-item="street"] iframe').scroll_into_view_if_needed()
        shot(page, f"62-phone-wallet-{lang}-{theme}")
    finally:
        context.close()
