"""Keyboard, focus, reduced motion and contrast."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from conftest import VOUCHER, Reader, Stack, card, content, press, shot


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
        expect(c.locator("html[data-seen]")).to_have_count(1)  # a key press counts once the card was seen
        page.keyboard.press("Enter")
        expect(c.get_by_role("button", name="Add €2.00")).to_be_focused()
        c.locator("#code").focus()
        page.keyboard.type(VOUCHER)
        page.keyboard.press("Enter")
        expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
        expect(c.locator("#receipt")).to_be_focused()  # focus stays in the card when the button goes
    finally:
        context.close()


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
        press(c, c.locator("#buy"))
        c.locator("#code").fill("WRONG-CODE-1")
        press(c, c.locator("#voucher button"))
        expect(c.get_by_role("status")).to_have_text("That code can't be used. Check it and try again.")
        ratios = c.locator("body").evaluate(CONTRAST)
        assert len(ratios) >= 8
        low = [(name, round(ratio, 2)) for name, ratio in ratios if ratio < 4.5]
        assert low == [], f"{path}: below WCAG AA 4.5:1: {low}"


FITS = """() => [...document.querySelectorAll('button, input, p, label')]
  .filter((el) => el.offsetParent !== null)
  .filter((el) => { const r = el.getBoundingClientRect(); return r.left < 0 || r.right > innerWidth + 0.5; })
  .map((el) => el.id || el.className || el.tagName)"""


def test_the_card_fits_a_phone(stack: Stack, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        for path, item, buy_name in (
            ("/de/artikel.html", "artikel-hitze", "Für 0,19 € freischalten"),
            ("/article.html", "article-heatwave", "Unlock for €0.19"),
        ):
            page.goto(stack.demo + path)
            c = card(page, item)
            expect(c.get_by_role("button", name=buy_name)).to_be_visible()
            press(c, c.locator("#buy"))
            expect(c.locator("#options button").first).to_be_visible()
            frame = page.locator(f'[data-coinslot-item="{item}"] iframe')
            assert c.locator("html").evaluate("(h) => h.scrollWidth <= h.clientWidth")  # no sideways scrolling
            assert c.locator("html").evaluate(FITS) == []
            assert page.evaluate("() => document.documentElement.scrollWidth <= innerWidth")
            box = frame.bounding_box()
            assert box is not None and box["width"] <= 375
            frame.scroll_into_view_if_needed()
            shot(page, f"28-phone-{item}")
    finally:
        context.close()
