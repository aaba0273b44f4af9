"""The reader's paths: top-up, returning reader, voucher, tab, several and late items, languages, features."""

from __future__ import annotations

from playwright.sync_api import expect

from conftest import VOUCHER, Reader, Stack, card, content, press, redeem_in_card, shot, unlocks, wallet


def test_fresh_reader_tops_up_and_the_unlock_completes_by_itself(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    c = card(page, "article-heatwave")
    buy = c.get_by_role("button", name="Unlock for €0.19")
    expect(buy).to_be_visible()
    expect(c.get_by_text("Why this summer's heat wave broke every record")).to_be_visible()
    shot(page, "01-offer")
    assert reader.wallet_token() is None  # no wallet until the reader clicks

    press(c, buy)
    expect(c.get_by_role("button", name="Add €2.00")).to_be_visible()
    expect(c.get_by_role("status")).to_contain_text("€0.19 is more than your wallet's €0.00")
    expect(c.get_by_label("Voucher code")).to_be_visible()
    shot(page, "02-topup-choices")
    assert wallet(stack, reader)["balance"] == 0  # the first click made the wallet, silently

    with page.expect_popup() as popup_info:
        c.get_by_role("button", name="Add €2.00").click()
    popup = popup_info.value
    popup.wait_for_load_state()
    assert popup.url.startswith(stack.backend + "/checkout/test/")
    expect(popup.get_by_text("TEST MODE")).to_be_visible()
    expect(c.get_by_role("status")).to_contain_text("Finish the payment in the new window")
    shot(popup, "03-test-checkout")
    popup.get_by_role("button", name="Pay €2.00").click()

    # No second click: the card sees the top-up paid and unlocks by itself.
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists had warned")
    expect(c.get_by_text("€0.19 — Why this summer's heat wave broke every record")).to_be_visible()
    expect(c.locator("#balance")).to_have_text("Wallet balance: €1.81")
    expect(c.locator("#buy")).to_be_hidden()
    shot(page, "04-unlocked-after-topup")

    # The publisher's teaser stays first, the content follows it, the card comes last.
    children = page.locator('[data-coinslot-item="article-heatwave"] > *')
    assert children.evaluate_all("els => els.map((e) => e.className || e.tagName)") == [
        "teaser",
        "coinslot-content",
        "coinslot-card",
    ]
    expect(page.locator('[data-coinslot-item="article-heatwave"] > .coinslot-card > iframe')).to_have_count(1)
    events = unlocks(page)
    assert [e["item"] for e in events] == ["article-heatwave"]
    status, verified = stack.api("GET", "/v1/content/site_demo_news/article-heatwave?token=" + events[0]["token"])
    assert status == 200 and "Meteorologists" in verified["content_html"]  # the token is real
    w = wallet(stack, reader)
    assert w["balance"] == 181
    assert [(p["item"], p["charged"]) for p in w["purchases"]] == [("article-heatwave", 19)]
    assert popup.is_closed()  # the card closed the checkout window it opened
    assert reader.errors == []


def test_returning_reader_sees_content_without_a_click_and_pays_nothing(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    redeem_in_card(page, "article-heatwave")
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    before = wallet(stack, reader)
    assert before["balance"] == 500 - 19

    again = reader.page()
    again.goto(stack.demo + "/article.html")
    c = card(again, "article-heatwave")
    expect(content(again, "article-heatwave")).to_contain_text("Meteorologists")
    expect(c.get_by_text("Yours — unlocked before, no charge.")).to_be_visible()
    expect(c.locator("#balance")).to_have_text("Wallet balance: €4.81")
    expect(c.locator("#buy")).to_be_hidden()
    shot(again, "05-returning-reader")
    assert [e["item"] for e in unlocks(again)] == ["article-heatwave"]
    after = wallet(stack, reader)
    assert after["balance"] == before["balance"]
    assert len(after["purchases"]) == 1
    assert reader.errors == []


def test_voucher_path(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/course/lesson-3.html")
    c = card(page, "lesson-3")
    press(c, c.get_by_role("button", name="Unlock for €0.49"))
    c.locator("#code").fill("NOT-A-REAL-CODE")
    press(c, c.locator("#voucher button"))
    expect(c.get_by_role("status")).to_have_text("That code can't be used. Check it and try again.")
    shot(page, "06-voucher-refused")
    assert wallet(stack, reader)["balance"] == 0

    c.locator("#code").fill(VOUCHER.lower())  # codes are case-insensitive
    press(c, c.locator("#voucher button"))
    expect(content(page, "lesson-3")).to_contain_text("Flour the bench lightly")
    expect(c.locator("#balance")).to_have_text("Wallet balance: €4.51")
    expect(c.get_by_text("€0.49 — Lesson 3: shaping a sourdough loaf")).to_be_visible()
    shot(page, "07-voucher-unlocked")
    assert wallet(stack, reader)["balance"] == 451


def test_tab_site_unlocks_at_once(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/gazette/fair.html")
    c = card(page, "article-fair")
    press(c, c.get_by_role("button", name="Unlock for €0.19"))
    expect(content(page, "article-fair")).to_contain_text("brass band")
    expect(c.locator("#balance")).to_have_text("On your tab: €0.19")
    expect(c.locator("#topup")).to_be_hidden()
    shot(page, "08-tab-unlocked")
    assert wallet(stack, reader)["balance"] == -19


def test_two_items_on_one_page(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    heat, bridge = card(page, "article-heatwave"), card(page, "article-bridge")
    expect(heat.get_by_text("Why this summer's heat wave broke every record")).to_be_visible()
    expect(bridge.get_by_text("The bridge that took forty years")).to_be_visible()

    redeem_in_card(page, "article-bridge")
    expect(content(page, "article-bridge")).to_contain_text("napkin")
    expect(content(page, "article-heatwave")).to_have_count(0)  # only the item paid for opens
    expect(heat.locator("#buy")).to_be_visible()

    press(heat, heat.get_by_role("button", name="Unlock for €0.19"))  # funded now: one click
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    expect(heat.locator("#balance")).to_have_text("Wallet balance: €4.62")
    shot(page, "09-two-items")
    assert sorted(e["item"] for e in unlocks(page)) == ["article-bridge", "article-heatwave"]
    assert wallet(stack, reader)["balance"] == 500 - 19 - 19


def test_item_added_after_load(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/late-item.html")
    expect(page.locator("iframe")).to_have_count(0)
    page.get_by_role("button", name="Show the latest update").click()
    c = card(page, "article-council")
    expect(c.get_by_role("button", name="Unlock for €0.19")).to_be_visible()
    redeem_in_card(page, "article-council")
    expect(content(page, "article-council")).to_contain_text("The motion passes")
    # The publisher subscribed through the queue before coinslot.js had loaded.
    expect(page.locator("#publisher-log")).to_have_text("Publisher saw the unlock of article-council.")
    shot(page, "10-added-after-load")


def test_german_page(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/de/artikel.html")
    c = card(page, "artikel-hitze")
    buy = c.get_by_role("button", name="Für 0,19 € freischalten")
    expect(buy).to_be_visible()
    press(c, buy)
    expect(c.get_by_role("button", name="2,00 € aufladen")).to_be_visible()
    expect(c.get_by_role("status")).to_contain_text("0,19 € ist mehr als Ihr Guthaben von 0,00 €")
    shot(page, "11-german-topup")
    c.get_by_label("Gutscheincode").fill(VOUCHER)
    press(c, c.get_by_role("button", name="Einlösen"))
    expect(content(page, "artikel-hitze")).to_contain_text("Elf Tage lang")
    expect(c.locator("#balance")).to_have_text("Guthaben: 4,81 €")
    expect(c.get_by_text("0,19 € — Warum diese Hitzewelle alle Rekorde brach")).to_be_visible()
    shot(page, "12-german-unlocked")


def test_strict_csp_page(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/strict-csp.html")
    redeem_in_card(page, "article-datacentre")
    expect(content(page, "article-datacentre")).to_contain_text("pool next door")
    shot(page, "13-strict-csp")
    violations = [m for m in reader.console if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert violations == []
    assert reader.errors == []


def test_software_feature_turns_on_from_the_unlock_event(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/app/storage.html")
    redeem_in_card(page, "extra-storage")
    expect(page.locator("#storage-text")).to_have_text("9.2 GB of 20 GB used — extra storage is on")
    expect(card(page, "extra-storage").get_by_text("€0.99 — Extra storage: 10 GB more for your notes")).to_be_visible()
    assert content(page, "extra-storage").count() == 0  # nothing hosted: the publisher's own code acts on the token
    [event] = unlocks(page)
    status, _body = stack.api("GET", "/v1/content/site_demo_app/extra-storage?token=" + event["token"])
    assert status == 404  # the token verifies; there is simply no hosted content
    shot(page, "21-software-feature")


def test_a_card_the_page_moves_keeps_working(stack: Stack, reader: Reader) -> None:
    # Single-page apps move nodes around; a moved iframe reloads with a new window.
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    c = card(page, "article-bridge")
    expect(c.locator("#buy")).to_be_visible()
    page.evaluate(
        """() => { const el = document.querySelector('[data-coinslot-item="article-bridge"]');
        document.querySelector('main').prepend(el); }"""
    )
    redeem_in_card(page, "article-bridge")
    expect(content(page, "article-bridge")).to_be_visible()
    assert [e["item"] for e in unlocks(page)] == ["article-bridge"]
    assert reader.errors == []
