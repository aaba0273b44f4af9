"""Amounts are integer minor units everywhere; this says which currencies exist and turns amounts into text."""

from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from decimal import Decimal

from babel.core import Locale, UnknownLocaleError, get_global
from babel.numbers import format_currency, get_currency_precision, get_currency_symbol, get_territory_currencies

from coinslot.errors import BadRequest

CURRENCY_CODE = re.compile(r"^[A-Z]{3}\Z")


@functools.cache
def legal_tender() -> frozenset[str]:
    """ISO 4217 codes that some country's money is in today, from CLDR (through Babel).

    Not the codes for no currency (XXX), tests (XTS), metals (XAU) or currencies gone (DEM).
    """
    today = datetime.date.today()
    return frozenset(
        code
        for territory in get_global("territory_currencies")
        for code in get_territory_currencies(territory, today, tender=True)
    )


def check_currency(code: str) -> str:
    """``code`` upper-cased if it is legal tender somewhere; else ``BadRequest``."""
    upper = code.upper()
    if not CURRENCY_CODE.match(upper) or upper not in legal_tender():
        raise BadRequest(f"currency {code!r} is not the ISO 4217 code of a currency in use, like EUR")
    return upper


# ISO 4217 currencies whose minor unit is not 1/100.
MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3}


def minor_digits(currency: str) -> int:
    return MINOR_DIGITS.get(currency, 2)


def shown_digits(currency: str) -> int:
    """Fraction digits a price is written with (CLDR's, through Babel): 0 for HUF, whose minor unit is still 1/100.

    The card is told them rather than left to its browser's CLDR, which may be another release's.
    """
    digits: int = get_currency_precision(currency)
    return digits


@functools.cache
def _locale(lang: str) -> Locale:
    try:
        return Locale.parse(lang.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


def _stands_apart(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("S")


@functools.lru_cache(maxsize=4096)  # Babel takes ~14 µs a price; a site has a handful of them
def format_amount(amount: int, currency: str, lang: str = "en") -> str:
    """``format_amount(19, "EUR")`` → ``€0.19``; in German ``0,19 €``: CLDR's pattern for the
    language (through Babel), written as ``Intl.NumberFormat`` writes it in the card.

    Babel leaves out CLDR's currency spacing, which browsers apply: a symbol that ends (or
    starts) with a letter, such as ``CHF``, is kept from the digits by a no-break space.
    """
    locale = _locale(lang)
    text: str = format_currency(Decimal(amount).scaleb(-minor_digits(currency)), currency, locale=locale)
    symbol = get_currency_symbol(currency, locale)
    at = text.find(symbol)
    if at < 0:
        return text
    end = at + len(symbol)
    if end < len(text) and text[end].isdigit() and not _stands_apart(symbol[-1]):
        text = text[:end] + "\u00a0" + text[end:]
    if at > 0 and text[at - 1].isdigit() and not _stands_apart(symbol[0]):
        text = text[:at] + "\u00a0" + text[at:]
    return text
