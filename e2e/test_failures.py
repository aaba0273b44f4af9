"""Things going wrong, shown calmly: unknown items, network and backend failures, failed top-ups,
price changes, slow pages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import redis
from playwright.sync_api import expect

from coinslot import chargebacks, topups
from coinslot.payments import RefundReport
from coinslot.store import Store, connect

from conftest import Reader, Stack, card, content, press, redeem_in_card, shot, wallet


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
    press(c, c.locator("#buy"))
    expect(c.get_by_role("status")).to_have_text(
        "Can't reach the payment service. Check your connection and try again."
    )
    shot(page, "16-network-error")
    reader.context.unroute("**/v1/unlocks")
    press(c, c.locator("#buy"))  # the same button tries again
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
    press(c, c.locator("#buy"))

    # A window the reader closes without paying.
    with page.expect_popup() as first:
        c.get_by_role("button", name="Add €2.00").click()
    first.value.wait_for_load_state()
    first.value.close()
    expect(c.get_by_role("status")).to_have_text(
        "Waiting for your payment. If you closed the payment window, choose an amount to try again."
    )

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
    press(c, c.locator("#buy"))
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
    press(c, c.locator("#buy"))
    with page.expect_popup() as fourth:
        c.get_by_role("button", name="Add €2.00").click()
    fourth.value.get_by_role("button", name="Pay €2.00").click()
    expect(content(page, "session-keynote")).to_contain_text("Recording: 42 minutes")
    expect(c.locator("#balance")).to_have_text("Wallet balance: €0.50")
    shot(page, "19-dark-theme-unlocked")
    assert wallet(stack, reader)["balance"] == 50
    assert reader.errors == []


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
    press(c2, c2.locator("#buy"))
    expect(c2.get_by_role("status")).to_have_text("The price is now €0.29. Press the button to unlock at this price.")
    expect(c2.get_by_role("button", name="Unlock for €0.29")).to_be_visible()
    shot(page, "22-price-changed")
    assert wallet(stack, reader)["balance"] == 500 - 19  # nothing charged at a price not shown
    press(c2, c2.get_by_role("button", name="Unlock for €0.29"))
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


def _on_the_books(stack: Stack, work: Callable[[Store, int], Awaitable[object]]) -> None:
    # What Stripe's webhooks would do, through the same domain functions the webhook handler calls.
    async def go() -> None:
        store = Store(await connect(stack.redis.url))
        try:
            await work(store, int(time.time() * 1000))
        finally:
            await store.close()

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, go()).result()


def test_a_bank_payment_on_its_way_and_a_frozen_wallet_are_explained(stack: Stack, reader: Reader) -> None:
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    heat, bridge = card(page, "article-heatwave"), card(page, "article-bridge")
    press(heat, heat.locator("#buy"))
    with page.expect_popup() as checkout:
        heat.get_by_role("button", name="Add €2.00").click()
    checkout.value.wait_for_load_state()
    session = checkout.value.url.rsplit("/", 1)[1]

    # SEPA: the checkout completed, the money follows in days. The card says so and keeps listening.
    _on_the_books(stack, lambda store, now: topups.mark(store, session, "awaiting", now_ms=now))
    expect(heat.get_by_role("status")).to_have_text(
        "Your bank payment is on its way. It can take a few business days; this card unlocks once it arrives."
    )
    shot(page, "26-bank-payment-on-its-way")
    payment = "pi_e2e_" + session
    _on_the_books(
        stack,
        lambda store, now: topups.fulfil(
            store, session, amount=200, currency="EUR", now_ms=now, payment_id=payment
        ),  # async_payment_succeeded
    )
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    assert wallet(stack, reader)["balance"] == 181

    # The payment is refunded in full: the wallet is below zero, frozen until a top-up.
    refund = chargebacks.refund
    taken = RefundReport("re_" + session, payment, 200, "EUR", "succeeded")
    _on_the_books(stack, lambda store, now: refund(store, taken, now_ms=now))
    press(bridge, bridge.locator("#buy"))
    expect(bridge.get_by_role("status")).to_have_text(
        "Your wallet is at -€0.19 after a payment was taken back. Add money to unlock again."
    )
    expect(bridge.locator("#balance")).to_have_text("Wallet balance: -€0.19")  # not a tab: nothing was lent
    shot(page, "27-frozen-wallet")
    with page.expect_popup() as again:
        bridge.get_by_role("button", name="Add €2.00").click()
    again.value.get_by_role("button", name="Pay €2.00").click()
    expect(content(page, "article-bridge")).to_be_visible()
    assert wallet(stack, reader)["balance"] == -19 + 200 - 19
    assert reader.errors == []


def test_a_checkout_paid_late_still_completes_the_unlock_by_itself(stack: Stack, reader: Reader) -> None:
    # A checkout lives as long as the backend says (a Stripe session an hour): a reader who takes
    # 25 minutes over it still gets the unlock without a second click.
    reader.context.clock.install()
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    c = card(page, "article-heatwave")
    press(c, c.locator("#buy"))
    with page.expect_popup() as checkout:
        c.get_by_role("button", name="Add €2.00").click()
    checkout.value.wait_for_load_state()
    expect(c.get_by_role("status")).to_contain_text("Finish the payment in the new window")
    page.clock.fast_forward("25:00")
    page.wait_for_timeout(1000)  # the card polls once more, 25 minutes on
    expect(c.get_by_role("status")).to_contain_text("Finish the payment in the new window")
    checkout.value.get_by_role("button", name="Pay €2.00").click()
    page.clock.fast_forward(20_000)  # the card's next poll, however slow it has become
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    assert wallet(stack, reader)["balance"] == 200 - 19
    assert reader.errors == []


def test_a_page_with_a_cross_origin_opener_policy_still_gets_the_unlock(stack: Stack, reader: Reader) -> None:
    # The strict-CSP demo page also sends COOP: same-origin: a window the card opens has no opener,
    # so window.open returns null as if blocked, while the window is there and the reader pays.
    page = reader.page()
    response = page.goto(stack.demo + "/strict-csp.html")
    assert response is not None and response.headers["cross-origin-opener-policy"] == "same-origin"
    c = card(page, "article-datacentre")
    press(c, c.locator("#buy"))
    with reader.context.expect_page() as checkout:
        c.get_by_role("button", name="Add €2.00").click()
    checkout.value.wait_for_load_state()
    # Chromium opens the window but gives the card no handle to it (window.open returns null).
    expect(c.get_by_role("status")).to_have_text("Finish the payment in the new window; this card unlocks by itself.")
    expect(c.get_by_role("status")).not_to_contain_text("blocked")
    checkout.value.get_by_role("button", name="Pay €2.00").click()
    expect(content(page, "article-datacentre")).to_contain_text("pool next door")
    assert wallet(stack, reader)["balance"] == 200 - 19
    assert reader.errors == []
