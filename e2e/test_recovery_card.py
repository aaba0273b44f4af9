"""Recovery codes in the card: offered after the first top-up, shown once, and brought to a fresh
browser with "I have a code", where what the wallet owns opens without a charge."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, expect

from conftest import RECORD_EVENTS, Reader, Stack, card, content, press, shot, wallet
from publisher import new_site, story


def new_reader(browser: Browser) -> Reader:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.add_init_script(RECORD_EVENTS)
    return Reader(context)


def test_a_recovery_code_brings_the_wallet_to_a_fresh_browser(stack: Stack, browser: Browser) -> None:
    pub = new_site(stack, "The Pocket Gazette")
    pub.item("tides", "Tide tables for June", 19, content=story("High water at 06:12 on the first."))
    first, second = new_reader(browser), new_reader(browser)
    try:
        page = first.page()
        page.goto(pub.page("tides"))
        c = card(page, "tides")
        press(c, c.get_by_role("button", name="Unlock for €0.19"))
        with page.expect_popup() as popup:
            c.get_by_role("button", name="Add €2.00").click()
        popup.value.get_by_role("button", name="Pay €2.00").click()
        expect(content(page, "tides")).to_contain_text("High water")

        # After the first top-up the card suggests a code; one press makes it.
        expect(c.locator("#hint")).to_contain_text("Keep your wallet if you change browsers:")
        press(c, c.get_by_role("button", name="Save a recovery code"))
        panel = c.get_by_role("dialog", name="Your wallet")
        code_field = panel.get_by_label("Your recovery code")
        expect(code_field).to_be_visible()
        expect(code_field).to_be_focused()
        expect(panel).to_contain_text("it is shown only once")
        code = code_field.input_value()
        assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{2,4}){3,}", code), code
        press(c, panel.get_by_role("button", name="Copy", exact=True))
        expect(panel.locator("#panel-status")).to_have_text("Copied.")
        shot(page, "72-recovery-code-shown")
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(c.locator("#code-out")).to_have_value("")  # shown once: gone when the panel closes
        old_token = first.wallet_token()
        assert old_token

        # A fresh browser: no wallet, the price, and "I have a code".
        fresh = second.page()
        fresh.goto(pub.page("tides"))
        c2 = card(fresh, "tides")
        expect(c2.get_by_role("button", name="Unlock for €0.19")).to_be_visible()
        press(c2, c2.get_by_role("button", name="Wallet"))
        restore = c2.get_by_label("I have a code")
        restore.fill(code.lower().replace("-", " "))  # as a person might type it
        shot(fresh, "73-restore-with-a-code")
        c2.get_by_role("button", name="Restore").click()
        expect(c2.locator("#panel-status")).to_have_text("Wallet restored: €1.81.")
        expect(content(fresh, "tides")).to_contain_text("High water")  # owned: opens, no charge
        expect(c2.get_by_role("listitem").filter(has_text="Tide tables for June")).to_be_visible()
        shot(fresh, "74-restored")
        c2.get_by_role("button", name="Close").click()
        expect(c2.get_by_text("Yours — unlocked before, no charge.")).to_be_visible()

        restored = wallet(stack, second)
        assert restored["balance"] == 181
        assert [p["item"] for p in restored["purchases"]] == ["tides"]
        status, _ = stack.api("GET", "/v1/wallet", old_token)
        assert status == 401  # the older browser's token stopped working
        assert first.errors == [] and second.errors == []
    finally:
        first.context.close()
        second.context.close()


def test_a_wrong_code_is_refused_calmly(stack: Stack, reader: Reader) -> None:
    pub = new_site(stack, "The Pocket Gazette")
    pub.item("tides", "Tide tables for June", 19, content=story("High water at 06:12 on the first."))
    page = reader.page()
    page.goto(pub.page("tides"))
    c = card(page, "tides")
    press(c, c.get_by_role("button", name="Wallet"))
    c.get_by_label("I have a code").fill("AAAA-BBBB-CCCC-DDDD-EEEE-FF")
    c.get_by_role("button", name="Restore").click()
    expect(c.locator("#panel-status")).to_have_text("That code doesn't match a wallet. Check it and try again.")
    expect(c.get_by_label("I have a code")).to_be_focused()
    assert reader.errors == []
