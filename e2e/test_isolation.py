"""What the publisher's page (or a stranger's) cannot do: read the wallet, make the card pay, frame it."""

from __future__ import annotations

from playwright.sync_api import expect

from conftest import Reader, Stack, card, content, redeem_in_card, shot, unlocks, wallet


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
