"""Amounts are integer minor units everywhere; this says which currencies exist and turns amounts into text."""

from __future__ import annotations

import datetime
import functools
import re

from babel.core import get_global
from babel.numbers import get_territory_currencies

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
SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CHF": "CHF "}


def minor_digits(currency: str) -> int:
    return MINOR_DIGITS.get(currency, 2)


def format_amount(amount: int, currency: str, lang: str = "en") -> str:
    """``format_amount(19, "EUR")`` → ``€0.19``; in German ``0,19 €`` (as Intl.NumberFormat does)."""
    digits = minor_digits(currency)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**digits)
    number = f"{whole:,}" + (f".{frac:0{digits}d}" if digits else "")
    symbol = SYMBOLS.get(currency)
    if lang.lower().startswith("de"):
        number = number.replace(",", "\x00").replace(".", ",").replace("\x00", ".")
        return f"{sign}{number}\u00a0{(symbol or currency).strip()}"
    if symbol and not symbol.endswith(" "):
        return f"{sign}{symbol}{number}"
    return f"{sign}{(symbol or currency + ' ').strip()}\u00a0{number}"
