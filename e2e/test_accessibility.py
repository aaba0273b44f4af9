"""Keyboard, focus, reduced motion and contrast."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from conftest import VOUCHER, Reader, Stack, card, content, shot


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
