"""The server writes prices (Babel, CLDR) exactly as the card writes them in the browser
(Intl.NumberFormat), in every language the card speaks and every currency a site may sell in:
the placeholder's price and the card's own must never differ by a space or a symbol."""

from __future__ import annotations

from playwright.sync_api import Browser

from coinslot import widget
from coinslot.money import format_amount, legal_tender, minor_digits, shown_digits

AMOUNTS = (0, 5, 19, 150, 123456, -19)
# The Caribbean guilder (2025): Babel's CLDR writes its symbol "Cg.", this Chromium's ICU does not
# know it yet and writes the code. Only the symbol may differ, and only for these.
SYMBOL_NOT_YET_IN_BROWSER = {"XCG": "Cg."}


def test_server_prices_match_intl_number_format_in_every_language_and_currency(browser: Browser) -> None:
    cases = [
        (lang, currency, amount)
        for lang in widget.languages()
        for currency in sorted(legal_tender())
        for amount in AMOUNTS
    ]
    page = browser.new_page()
    try:
        # The card's own formatting (static/card.js): Intl in the card's language, digits as the server says.
        written: list[str] = page.evaluate(
            """(cases) => cases.map(([lang, currency, amount, digits, shown]) => new Intl.NumberFormat(lang,
                 {style: 'currency', currency, minimumFractionDigits: shown, maximumFractionDigits: shown})
                 .format(amount / 10 ** digits))""",
            [[lang, c, amount, minor_digits(c), shown_digits(c)] for lang, c, amount in cases],
        )
    finally:
        page.close()
    differ = []
    for (lang, currency, amount), browser_text in zip(cases, written, strict=True):
        server_text = format_amount(amount, currency, lang)
        symbol = SYMBOL_NOT_YET_IN_BROWSER.get(currency)
        if symbol is not None:
            server_text = server_text.replace(symbol, currency)
        if server_text != browser_text:
            differ.append((lang, currency, amount, server_text, browser_text))
    assert len(cases) > 1000
    assert differ == [], "\n".join(map(repr, differ))
