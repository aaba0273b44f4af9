"""What handlers tell the dashboard's counters (coinslot.insights): a note each, queued, never awaited.

Only what the reader did on a known site and item is noted: a request naming an unknown one, or
refused before it was understood (401, 404, 422), tells the publisher nothing.
"""

from __future__ import annotations

from coinslot import insights, pricetests
from coinslot.errors import CoinslotError
from coinslot.insights import Note
from coinslot.refunds import Refunded
from coinslot.services import Services
from coinslot.tokens import WalletRef
from coinslot.unlocks import CAP, PASS, Granted

UNDERSTOOD_REFUSALS = (402, 409, 410, 429)  # a press that met the rules: no money, price changed, archived, too fast


def _test(svc: Services, site: str, item: str, wallet_id: str | None) -> tuple[str, int]:
    """The reader's variant of the item's price test and the test's start (("", 0): no test). The item was
    just read, so the catalog has it cached; one not cached is not counted in a test."""
    hit = svc.catalog.cached(site, item)
    if hit is None or hit[1].test_price is None or wallet_id is None:
        return "", 0
    return pricetests.variant(svc.unlock_tokens.pseudonym(site, wallet_id)), hit[1].test_since_ms


def shown(svc: Services, site: str, item: str, wallet: WalletRef | None, now_ms: int, variant: str | None) -> None:
    """The card was shown; ``variant``: with the price of a price test's variant (not to its owner)."""
    hit = svc.catalog.cached(site, item) if variant else None
    since = hit[1].test_since_ms if hit is not None and hit[1].test_price is not None else 0
    wallet_id = wallet.wallet_id if wallet else None
    svc.insights.note(Note(insights.SHOWN, now_ms, site, item, wallet_id=wallet_id, variant=variant or "", test=since))


def unlocked(svc: Services, site: str, item: str, wallet: WalletRef, now_ms: int, granted: Granted) -> None:
    if granted.replayed:  # the same press, retried: counted the first time
        return
    if granted.access in (PASS, CAP):
        access = granted.access
    else:
        access = "charged" if granted.charged else "owned"
    variant, since = _test(svc, site, item, wallet.wallet_id) if access == "charged" else ("", 0)
    svc.insights.note(
        Note(insights.PRESSED, now_ms, site, item, wallet_id=wallet.wallet_id, variant=variant, test=since)
    )
    svc.insights.note(
        Note(
            insights.UNLOCKED,
            now_ms,
            site,
            item,
            granted.charged,
            access,
            wallet.wallet_id,
            variant=variant,
            test=since,
        )
    )


def unlock_refused(svc: Services, site: str, item: str, wallet: WalletRef, now_ms: int, exc: CoinslotError) -> None:
    if exc.status not in UNDERSTOOD_REFUSALS:
        return
    variant, since = _test(svc, site, item, wallet.wallet_id)
    svc.insights.note(
        Note(insights.PRESSED, now_ms, site, item, wallet_id=wallet.wallet_id, variant=variant, test=since)
    )
    options = exc.extra.get("topup_options") or []
    if exc.status == 402 and options:
        topups = tuple(str(o["topup_id"]) for o in options)
        svc.insights.note(Note(insights.OFFERED, now_ms, site, item, offered_topups=topups))


def refunded(svc: Services, done: Refunded, now_ms: int, wallet: WalletRef | None = None) -> None:
    """A purchase was refunded; by its reader (``wallet``), it counts in the item's price test too."""
    variant, since = _test(svc, done.site, done.item, wallet.wallet_id if wallet else None)
    svc.insights.note(Note(insights.REFUNDED, now_ms, done.site, done.item, done.refunded, variant=variant, test=since))


def topup_started(svc: Services, topup_id: str, now_ms: int) -> None:
    svc.insights.note(Note(insights.TOPUP_STARTED, now_ms, topup_id=topup_id))


def topup_paid(svc: Services, session_id: str, now_ms: int) -> None:
    svc.insights.note(Note(insights.TOPUP_PAID, now_ms, session_id=session_id))
