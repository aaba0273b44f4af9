"""A site's settings and their bounds: checked alike when a site is created and when it is changed.

Currency is not among them: it is fixed once a site exists, since wallets, prices and the ledger
are in it.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Sequence
from typing import Any

from coinslot.errors import BadRequest, InvalidSetting
from coinslot.origins import parse_origin

DEFAULT_REFUND_WINDOW_S = 10 * 60
MAX_REFUND_WINDOW_S = 7 * 24 * 60 * 60  # the unlock script remembers the last 8 days with free unlocks
MAX_AMOUNT = 1_000_000  # minor units; a tab or a daily cap beyond this is a typo, not a micropayment
MAX_ORIGINS = 50
# What may change after creation, in the order the admin API documents them.
CHANGEABLE = ("origins", "timezone", "tab_limit", "daily_cap", "refund_window")


def check_timezone(timezone: str) -> str:
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSetting(f"timezone {timezone!r} is not an IANA zone like Europe/Berlin", "timezone") from exc
    return timezone


def check_amount(field: str, value: int) -> int:
    """A tab limit or daily cap, in minor units (0 = none)."""
    if not 0 <= value <= MAX_AMOUNT:
        raise InvalidSetting(f"{field} {value} must be between 0 and {MAX_AMOUNT} minor units", field)
    return value


def check_refund_window(seconds: int) -> int:
    if not 0 <= seconds <= MAX_REFUND_WINDOW_S:
        raise InvalidSetting(
            f"refund window {seconds} s must be >= 0 and at most {MAX_REFUND_WINDOW_S} s (7 days)", "refund_window"
        )
    return seconds


def check_origins(origins: Sequence[str], *, required: bool = True) -> tuple[str, ...]:
    """The origins as browsers send them, each once; at least one when ``required`` (a site may be
    created without any, and then frames nowhere until it is given one)."""
    try:
        parsed = tuple(dict.fromkeys(parse_origin(o) for o in origins))
    except BadRequest as exc:
        raise InvalidSetting(exc.detail, "origins") from exc
    if required and not parsed:
        raise InvalidSetting("a site needs at least one origin", "origins")
    if len(parsed) > MAX_ORIGINS:
        raise InvalidSetting(f"{len(parsed)} origins, at most {MAX_ORIGINS}", "origins")
    return parsed


def checked(changes: dict[str, Any]) -> dict[str, Any]:
    """``changes`` (a subset of ``CHANGEABLE``) checked and normalized; raises ``InvalidSetting``."""
    out: dict[str, Any] = {}
    for field, value in changes.items():
        if field == "origins":
            out[field] = check_origins(value)
        elif field == "timezone":
            out[field] = check_timezone(value)
        elif field in ("tab_limit", "daily_cap"):
            out[field] = check_amount(field, value)
        elif field == "refund_window":
            out[field] = check_refund_window(value)
        else:
            raise InvalidSetting(
                f"{field!r} is not a setting that can change; these can: {', '.join(CHANGEABLE)}", field
            )
    return out


def stored(changes: dict[str, Any]) -> dict[str, str | int]:
    """Checked settings as the site's hash keeps them."""
    return {f: json.dumps(list(v)) if f == "origins" else v for f, v in changes.items()}
