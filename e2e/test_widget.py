"""The reader's one click, in headless Chromium against the real backend and the demo site."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import redis
from playwright.sync_api import Browser, FrameLocator, Page, expect

from conftest import Reader, Stack, shot

VOUCHER = "DEMO-FIVE-EUROS"  # €5.00, seeded by `coinslot demo`


def card(page: Page, item: str) -> FrameLocator:
    return page.frame_locator(f'[data-coinslot-item="{item}"] iframe')


def content(page: Page, item: str) -> object:
    return page.locator(f'[data-coinslot-item="{item}"] .coinslot-content')


def unlocks(page: Page) -> list[dict[str, str]]:
    events: list[dict[str, str]] = page.evaluate("window.__unlocks")
    return events


def wallet(stack: Stack, reader: Reader) -> dict[str, Any]:
    """The reader's wallet as the backend holds it, read with the cookie's token as a server would."""
    token = reader.wallet_token()
    assert token is not None, "the card should have made a wallet cookie"
    status, body = stack.api("GET", "/v1/wallet", token)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def redeem_in_card(page: Page, item: str, code: str = VOUCHER) -> None:
    c = card(page, item)
    c.get_by_role("button", name=re.compile("Unlock for|freischalten")).click()
    c.locator("#code").fill(code)
    c.locator("#voucher button").click()


def test_fresh_reader_tops_up_and_the_unlock_completes_by_itself(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    c = card(page, "article-heatwave")
    buy = c.get_by_role("button", name="Unlock for €0.19")
    expect(buy).to_be_visible()
    expect(c.get_by_text("Why this summer's heat wave broke every record")).to_be_visible()
    shot(page, "01-offer")
    assert reader.wallet_token() is None  # no wallet until the reader clicks

    buy.click()
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
        "IFRAME",
    ]
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
    c.get_by_role("button", name="Unlock for €0.49").click()
    c.locator("#code").fill("NOT-A-REAL-CODE")
    c.locator("#voucher button").click()
    expect(c.get_by_role("status")).to_have_text("That code can't be used. Check it and try again.")
    shot(page, "06-voucher-refused")
    assert wallet(stack, reader)["balance"] == 0

    c.locator("#code").fill(VOUCHER.lower())  # codes are case-insensitive
    c.locator("#voucher button").click()
    expect(content(page, "lesson-3")).to_contain_text("Flour the bench lightly")
    expect(c.locator("#balance")).to_have_text("Wallet balance: €4.51")
    expect(c.get_by_text("€0.49 — Lesson 3: shaping a sourdough loaf")).to_be_visible()
    shot(page, "07-voucher-unlocked")
    assert wallet(stack, reader)["balance"] == 451


def test_tab_site_unlocks_at_once(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/gazette/fair.html")
    c = card(page, "article-fair")
    c.get_by_role("button", name="Unlock for €0.19").click()
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

    heat.get_by_role("button", name="Unlock for €0.19").click()  # funded now: one click
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
    buy.click()
    expect(c.get_by_role("button", name="2,00 € aufladen")).to_be_visible()
    expect(c.get_by_role("status")).to_contain_text("0,19 € ist mehr als Ihr Guthaben von 0,00 €")
    shot(page, "11-german-topup")
    c.get_by_label("Gutscheincode").fill(VOUCHER)
    c.get_by_role("button", name="Einlösen").click()
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


def test_page_scripts_cannot_read_the_wallet_or_make_the_card_pay(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    redeem_in_card(page, "article-heatwave")
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    bridge = card(page, "article-bridge")
    expect(bridge.locator("#buy")).to_be_visible()
    funded = wallet(stack, reader)
    assert funded["balance"] == 481

    outcome = page.evaluate(
        """async ([api, site]) => {
        const out = {};
        const frames = [...document.querySelectorAll('iframe')];
        // 1. Messages into the cards, in every shape a forger might try.
        const forged = [
          {coinslot: {type: 'unlock', item: 'article-bridge'}},
          {coinslot: {type: 'click'}}, {coinslot: {type: 'buy', item: 'article-bridge', price: 19}},
          {type: 'unlock', item: 'article-bridge'}, 'unlock', {coinslot: {type: 'topup', amount: 500}},
        ];
        for (const f of frames) for (const m of forged) {
          f.contentWindow.postMessage(m, '*');
          f.contentWindow.postMessage(m, api);
        }
        // 2. A forged "unlocked" message to the page itself: the loader must ignore it.
        window.postMessage({coinslot: {type: 'unlocked', item: 'article-bridge', token: 'x',
                                       content: '<p id="forged">FORGED</p>'}}, '*');
        // 3. The card's document is out of reach.
        out.frameDocument = frames.map((f) => {
          try { return f.contentDocument !== null; } catch (e) { return false; }
        });
        // 4. Credentialed reads and writes straight to the backend.
        const attempt = async (path, init) => {
          try { const r = await fetch(api + path, {credentials: 'include', ...init}); return 'read ' + r.status; }
          catch (e) { return 'blocked'; }
        };
        out.wallet = await attempt('/v1/wallet', {});
        out.state = await attempt('/v1/card/' + site + '/article-bridge', {});
        out.unlockCors = await attempt('/v1/unlocks', {method: 'POST', headers: {'Content-Type': 'application/json'},
          body: JSON.stringify({site, item: 'article-bridge', price: 19})});
        out.unlockNoCors = await attempt('/v1/unlocks', {method: 'POST', mode: 'no-cors',
          body: JSON.stringify({site, item: 'article-bridge', price: 19})});
        out.walletNoCors = await attempt('/v1/wallets', {method: 'POST', mode: 'no-cors', body: '{}'});
        await new Promise((r) => setTimeout(r, 1500));  // give any (wrongly) accepted message time to act
        return out;
      }""",
        [stack.backend, "site_demo_news"],
    )
    assert outcome["frameDocument"] == [False, False]
    assert outcome["wallet"] == "blocked"
    assert outcome["state"] == "blocked"
    assert outcome["unlockCors"] == "blocked"
    assert outcome["unlockNoCors"] == "read 0"  # opaque: sent, but the cookie is not honoured cross-site

    expect(bridge.locator("#buy")).to_be_visible()
    expect(bridge.locator("#status")).to_have_text("")
    assert page.locator("#forged").count() == 0
    assert content(page, "article-bridge").count() == 0
    assert [e["item"] for e in unlocks(page)] == ["article-heatwave"]
    after = wallet(stack, reader)
    assert after["balance"] == 481
    assert [p["item"] for p in after["purchases"]] == ["article-heatwave"]
    assert reader.wallet_token() is not None
    assert reader.errors == []


def test_a_page_on_another_origin_cannot_frame_the_card(stack: Stack, reader: Reader) -> None:
    # The same snippet, copied onto a site the publisher never allowed, plus a hand-made frame
    # that claims to be the allowed origin.
    embed = f"{stack.backend}/embed/site_demo_news/article-heatwave?origin={stack.demo}"
    (stack.stranger_dir / "index.html").write_text(
        f"""<!doctype html><html lang="en"><body><h1>Not the publisher</h1>
<div data-coinslot-item="article-heatwave"><p>Teaser</p></div>
<iframe id="direct" src="{embed}" title="direct"></iframe>
<script src="{stack.backend}/coinslot.js" data-site="site_demo_news" async></script></body></html>"""
    )
    page = reader.page()
    blocked = []
    page.on("console", lambda m: blocked.append(m.text) if "frame-ancestors" in m.text else None)
    page.goto(stack.stranger + "/index.html")
    expect(page.locator(".coinslot-unavailable")).to_have_text("Unlocking is not available right now.", timeout=20_000)
    shot(page, "14-stranger-origin")
    for frame in page.frames[1:]:
        assert frame.url.startswith("chrome-error://") or frame.locator("#buy").count() == 0
    assert len(blocked) >= 2  # both frames were refused by frame-ancestors
    assert any("[coinslot]" in m and "no card for" in m for m in reader.console)
    assert reader.wallet_token() is None
    assert reader.errors == []


def test_unknown_item_and_network_failures_stay_calm(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/late-item.html")
    page.evaluate(
        """() => { const d = document.createElement('div'); d.setAttribute('data-coinslot-item', 'no-such-item');
        document.querySelector('main').append(d); }"""
    )
    expect(card(page, "no-such-item").get_by_text("This item isn't available right now.")).to_be_visible()
    page.get_by_role("button", name="Show the latest update").click()
    c = card(page, "article-council")
    expect(c.locator("#buy")).to_be_visible()
    shot(page, "15-unknown-item")

    reader.context.route("**/v1/unlocks", lambda route: route.abort())
    c.locator("#buy").click()
    expect(c.get_by_role("status")).to_have_text(
        "Can't reach the payment service. Check your connection and try again."
    )
    shot(page, "16-network-error")
    reader.context.unroute("**/v1/unlocks")
    c.locator("#buy").click()  # the same button tries again
    expect(c.get_by_role("button", name="Add €2.00")).to_be_visible()
    assert any("[coinslot]" in m and "no-such-item" in m for m in reader.console)
    assert any("[coinslot]" in m and "request failed" in m for m in reader.console)

    # The backend unreachable when a card loads (the loader itself came from the cache), and an
    # element without an item id: the teaser stays, with a calm line instead of a browser error.
    reader.context.route("**/embed/**", lambda route: route.abort("connectionrefused"))
    page.evaluate(
        """() => { for (const id of ['article-bridge', '']) { const d = document.createElement('div');
        d.setAttribute('data-coinslot-item', id); d.innerHTML = '<p>Teaser ' + id + '</p>';
        document.querySelector('main').append(d); } }"""
    )
    expect(page.locator('[data-coinslot-item="article-bridge"] .coinslot-unavailable')).to_have_text(
        "Unlocking is not available right now."
    )
    expect(page.locator('[data-coinslot-item="article-bridge"] iframe')).to_have_count(0)
    expect(page.locator('[data-coinslot-item=""] iframe')).to_have_count(0)
    shot(page, "24-backend-unreachable")
    assert any("[coinslot]" in m and 'no card for "article-bridge"' in m for m in reader.console)
    assert any("[coinslot]" in m and "empty data-coinslot-item" in m for m in reader.console)
    assert reader.errors == []


def _topup_keys(stack: Stack, reader: Reader) -> list[str]:
    wallet_id = wallet(stack, reader)["wallet_id"]
    with redis.Redis.from_url(stack.redis.url, decode_responses=True) as r:
        return sorted(r.scan_iter(match="{w:" + str(wallet_id) + "}:tu:*"))


def _set_topup(stack: Stack, key: str, **fields: str | int) -> None:
    # What the payment provider would report (a declined debit, a session that timed out);
    # the built-in test checkout has no button for failing, so the test writes the outcome.
    with redis.Redis.from_url(stack.redis.url, decode_responses=True) as r:
        r.hset(key, mapping=fields)


def test_failed_closed_and_expired_topups_are_calm_and_can_be_retried(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/events/keynote.html")
    c = card(page, "session-keynote")
    expect(c.get_by_role("button", name="Unlock for €1.50")).to_be_visible()
    shot(page, "17-dark-theme-offer")
    c.locator("#buy").click()

    # A window the reader closes without paying.
    with page.expect_popup() as first:
        c.get_by_role("button", name="Add €2.00").click()
    first.value.wait_for_load_state()
    first.value.close()
    expect(c.get_by_role("status")).to_have_text("The payment window was closed. Choose an amount to try again.")

    # A payment that fails.
    seen = set(_topup_keys(stack, reader))
    with page.expect_popup() as second:
        c.get_by_role("button", name="Add €5.00").click()
    second.value.wait_for_load_state()
    expect(c.get_by_role("status")).to_contain_text("Finish the payment in the new window")
    [key] = set(_topup_keys(stack, reader)) - seen
    _set_topup(stack, key, status="failed")
    expect(c.get_by_role("status")).to_have_text(
        "The payment did not go through and nothing was charged. Press the button to try again."
    )
    shot(page, "18-topup-failed")
    second.value.close()

    # A checkout that expires (its spent links are gone; the button brings fresh ones).
    expect(c.locator("#options button")).to_have_count(0)
    c.locator("#buy").click()
    seen = set(_topup_keys(stack, reader))
    with page.expect_popup() as third:
        c.get_by_role("button", name="Add €10.00").click()
    third.value.wait_for_load_state()
    [key] = set(_topup_keys(stack, reader)) - seen
    _set_topup(stack, key, expires_ms=1)
    expect(c.get_by_role("status")).to_have_text("That payment window has expired. Press the button to try again.")
    third.value.close()
    assert wallet(stack, reader)["balance"] == 0

    # Trying again: fresh choices, a real payment, and the unlock completes by itself.
    c.locator("#buy").click()
    with page.expect_popup() as fourth:
        c.get_by_role("button", name="Add €2.00").click()
    fourth.value.get_by_role("button", name="Pay €2.00").click()
    expect(content(page, "session-keynote")).to_contain_text("Recording: 42 minutes")
    expect(c.locator("#balance")).to_have_text("Wallet balance: €0.50")
    shot(page, "19-dark-theme-unlocked")
    assert wallet(stack, reader)["balance"] == 50
    assert reader.errors == []


def test_a_keyboard_only_reader_can_unlock(stack: Stack, browser: Browser) -> None:
    context = browser.new_context(reduced_motion="reduce")
    try:
        page = context.new_page()
        page.goto(stack.demo + "/article.html")
        c = card(page, "article-heatwave")
        expect(c.locator("#buy")).to_be_visible()
        focused = ""
        for _ in range(10):
            page.keyboard.press("Tab")
            focused = c.locator(":focus").evaluate_all("els => els.map((e) => e.id).join()")
            if focused == "buy":
                break
        assert focused == "buy"
        buy = c.locator("#buy")
        # A visible focus ring; no motion when the reader asked for less.
        assert buy.evaluate("(b) => getComputedStyle(b).outlineStyle") == "solid"
        assert buy.evaluate("(b) => getComputedStyle(b).transitionDuration") == "0s"
        shot(page, "20-keyboard-focus")
        page.keyboard.press("Enter")
        expect(c.get_by_role("button", name="Add €2.00")).to_be_focused()
        c.locator("#code").focus()
        page.keyboard.type(VOUCHER)
        page.keyboard.press("Enter")
        expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
        expect(c.locator("#receipt")).to_be_focused()  # focus stays in the card when the button goes
    finally:
        context.close()


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


CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => v / 255)
    .map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4))
    .reduce((s, c, i) => s + c * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  return [...document.querySelectorAll('.title, .meta, .receipt, .status, button, label, input, .brand')]
    .filter((el) => el.offsetParent !== null && (el.tagName === 'INPUT' || el.textContent.trim() !== ''))
    .map((el) => {
      const a = lum(rgb(getComputedStyle(el).color)), b = lum(background(el));
      return [el.id || el.className || el.tagName, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)];
    });
}"""


def test_card_text_meets_aa_contrast_in_every_theme(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    for path, item in (
        ("/article.html", "article-heatwave"),  # light (auto, light system)
        ("/events/keynote.html", "session-keynote"),  # dark
        ("/course/lesson-3.html", "lesson-3"),  # a light publisher accent, so black button text
    ):
        page.goto(stack.demo + path)
        c = card(page, item)
        c.locator("#buy").click()
        c.locator("#code").fill("WRONG-CODE-1")
        c.locator("#voucher button").click()
        expect(c.get_by_role("status")).to_have_text("That code can't be used. Check it and try again.")
        ratios = c.locator("body").evaluate(CONTRAST)
        assert len(ratios) >= 8
        low = [(name, round(ratio, 2)) for name, ratio in ratios if ratio < 4.5]
        assert low == [], f"{path}: below WCAG AA 4.5:1: {low}"


def _cli(stack: Stack, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "coinslot.cli", *args], env=stack.env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_price_change_after_render_is_shown_before_anyone_pays_it(stack: Stack, reader: Reader) -> None:
    _cli(stack, "item", "put", "site_demo_news", "price-test", "--title", "Prices move", "--price", "19")
    page = reader.page()
    page.goto(stack.demo + "/late-item.html")
    page.evaluate(
        """() => { const d = document.createElement('div'); d.setAttribute('data-coinslot-item', 'price-test');
        document.querySelector('main').append(d); }"""
    )
    c = card(page, "price-test")
    redeem_in_card(page, "price-test")  # funds the wallet with the voucher, buying this first item
    expect(content(page, "price-test")).to_have_count(0)  # no hosted content; the receipt tells
    expect(c.get_by_text("€0.19 — Prices move")).to_be_visible()

    _cli(stack, "item", "put", "site_demo_news", "price-test-2", "--title", "Prices move again", "--price", "19")
    page.evaluate(
        """() => { const d = document.createElement('div'); d.setAttribute('data-coinslot-item', 'price-test-2');
        document.querySelector('main').append(d); }"""
    )
    c2 = card(page, "price-test-2")
    expect(c2.get_by_role("button", name="Unlock for €0.19")).to_be_visible()
    # The publisher raises the price while the reader looks at €0.19.
    _cli(stack, "item", "put", "site_demo_news", "price-test-2", "--title", "Prices move again", "--price", "29")
    c2.locator("#buy").click()
    expect(c2.get_by_role("status")).to_have_text("The price is now €0.29. Press the button to unlock at this price.")
    expect(c2.get_by_role("button", name="Unlock for €0.29")).to_be_visible()
    shot(page, "22-price-changed")
    assert wallet(stack, reader)["balance"] == 500 - 19  # nothing charged at a price not shown
    c2.get_by_role("button", name="Unlock for €0.29").click()
    expect(c2.get_by_text("€0.29 — Prices move again")).to_be_visible()
    assert wallet(stack, reader)["balance"] == 500 - 19 - 29


def test_cards_appear_while_a_slow_script_still_holds_up_the_page(stack: Stack, reader: Reader) -> None:
    # The page's own ad script has not arrived: DOMContentLoaded is far off, but the reader
    # already sees the price.
    held = []
    page = reader.page()
    page.route(stack.demo + "/ads.js", lambda route: held.append(route))
    page.goto(stack.demo + "/slow-ads.html", wait_until="commit")
    expect(card(page, "article-bridge").get_by_role("button", name="Unlock for €0.19")).to_be_visible()
    assert page.evaluate("document.readyState") == "loading"
    assert page.locator("#after-ads").count() == 0
    held[0].continue_()
    expect(page.locator("#after-ads")).to_be_visible()
    expect(page.locator(".ad")).to_have_text("Advertisement")
    expect(page.locator('[data-coinslot-item="article-bridge"] iframe')).to_have_count(1)  # placed once
    shot(page, "23-before-a-slow-script")
