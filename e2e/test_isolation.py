"""What the publisher's page (or a stranger's) cannot do: read the wallet, make the card pay, frame it."""

from __future__ import annotations

from playwright.sync_api import expect

from conftest import Reader, Stack, card, content, press, redeem_in_card, shot, unlocks, wallet


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


def test_a_card_the_page_fades_or_covers_ignores_presses(stack: Stack, reader: Reader) -> None:
    # Clickjacking: the page makes the card nearly transparent, or lays a decoy over it that lets
    # clicks through, so that the reader presses "pay" without seeing it. The wallet is funded,
    # so a press that counted would pay at once.
    page = reader.page()
    page.goto(stack.demo + "/two-items.html")
    redeem_in_card(page, "article-heatwave")
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    bridge = card(page, "article-bridge")
    frame = page.locator('[data-coinslot-item="article-bridge"] iframe')
    frame.scroll_into_view_if_needed()
    expect(bridge.locator("html[data-seen]")).to_have_count(1)

    frame.evaluate("(f) => { f.style.opacity = '0.05'; }")
    expect(bridge.locator("html[data-seen]")).to_have_count(0)
    bridge.locator("#buy").click()
    expect(bridge.get_by_role("status")).to_have_text(
        "This box must be fully visible to pay. Check that nothing covers it, then press again."
    )

    frame.evaluate(
        """(f) => { f.style.opacity = '1'; const r = f.getBoundingClientRect(); const d = document.createElement('div');
        d.id = 'decoy'; d.textContent = 'Close this ad';
        d.style.cssText = `position:fixed;left:${r.left}px;top:${r.top}px;width:${r.width}px;height:${r.height}px;` +
          'background:#fff;pointer-events:none;z-index:9';
        document.body.append(d); }"""
    )
    expect(bridge.locator("html[data-seen]")).to_have_count(0)
    bridge.locator("#buy").click()
    shot(page, "25-covered-card-refuses")
    page.wait_for_timeout(500)  # give a (wrongly) accepted press time to pay
    assert wallet(stack, reader)["balance"] == 481
    assert content(page, "article-bridge").count() == 0
    assert any("[coinslot]" in m and "not fully visible" in m for m in reader.console)

    # Uncovered and seen, the same press pays: the guard is not simply broken.
    page.locator("#decoy").evaluate("(d) => d.remove()")
    press(bridge, bridge.locator("#buy"))
    expect(content(page, "article-bridge")).to_be_visible()
    assert wallet(stack, reader)["balance"] == 462
    assert reader.errors == []


def test_the_page_cannot_take_over_the_top_up_window(stack: Stack, reader: Reader) -> None:
    # The page opens a window with the name a card might use, hoping the card's checkout loads in a
    # window the page can still steer (e.g. to a look-alike payment page).
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    c = card(page, "article-heatwave")
    # The card first: on a loaded machine, a window opened while the card's frame was still
    # loading has cost that frame its messages to the page (the loader then gave up after 15 s).
    expect(c.locator("#buy")).to_be_visible()
    with page.expect_popup():
        page.evaluate("() => { window.__mine = window.open('about:blank', 'coinslot-topup', 'popup'); }")
    press(c, c.locator("#buy"))
    with page.expect_popup() as checkout:
        c.get_by_role("button", name="Add €2.00").click()
    checkout.value.wait_for_load_state()
    assert "/checkout/test/" in checkout.value.url
    # The page's own window is untouched (still its about:blank, readable by the page).
    assert page.evaluate("() => window.__mine.location.href") == "about:blank"
    checkout.value.get_by_role("button", name="Pay €2.00").click()
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    assert reader.errors == []
