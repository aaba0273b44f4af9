"""What handlers tell the dashboard's counters (coinslot.insights): a note each, queued, never awaited.

Only what the reader did on a known site and item is noted: a request naming an unknown one, or
refused before it was understood (401, 404, 422), tells the publisher nothing.
"""

from __future__ import annotations

from coinslot import insights, keyspace, pricetests, tabs
from coinslot.errors import CoinslotError
from coinslot.insights import Note
from coinslot.refunds import Refunded
from coinslot.services import Services
from coinslot.tokens import WalletRef
from coinslot.unlocks import CAP, PASS, Granted
from coinslot.vouchers import normalize_code

UNDERSTOOD_REFUSALS = (402, 409, 410, 429)  # a press that met the rules: no money, price changed, archived, too fast


def _test_since(svc: Services, site: str, item: str) -> int:
    """When the item's running price test started (0: none). The item was just read, so the catalog has
    it cached; one not cached is not counted in a test."""
    hit = svc.catalog.cached(site, item)
    return hit[1].test_since_ms if hit is not None and hit[1].test_price is not None else 0


def _test(svc: Services, site: str, item: str, wallet_id: str | None) -> tuple[str, int]:
    """The reader's variant of the item's price test and the test's start (("", 0): no test)."""
    if wallet_id is None or not (since := _test_since(svc, site, item)):
        return "", 0
    return pricetests.variant(svc.unlock_tokens.pseudonym(site, wallet_id)), since


def shown(svc: Services, site: str, item: str, wallet: WalletRef | None, now_ms: int, variant: str | None) -> None:
    """The card was shown; ``variant``: with the price of a price test's variant (not to its owner)."""
    since = _test_since(svc, site, item) if variant else 0
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
    pressed = Note(insights.PRESSED, now_ms, site, item, wallet_id=wallet.wallet_id, variant=variant, test=since)
    svc.insights.note(pressed)
    charged, wallet_id = granted.charged, wallet.wallet_id
    svc.insights.note(
        Note(insights.UNLOCKED, now_ms, site, item, charged, access, wallet_id, variant=variant, test=since)
    )
    if lent := tabs.lent(granted.charged, granted.balance):
        svc.insights.note(Note(insights.TAB_LENT, now_ms, site, amount=lent))


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


def refunded(svc: Services, done: Refunded, now_ms: int) -> None:
    """A purchase was refunded (by its reader or its site): counted in the item's price test too."""
    variant, since = _test(svc, done.site, done.item, done.wallet_id or None)
    for note in insights.refund_notes(done, now_ms, variant, since):
        svc.insights.note(note)


def voucher_redeemed(svc: Services, wallet: WalletRef, code: str, credited: int, balance: int, now_ms: int) -> None:
    if balance - credited < 0:  # it repaid some tab
        ref = keyspace.voucher_credit_ref(normalize_code(code))
        svc.insights.note(Note(insights.CREDITED, now_ms, wallet_id=wallet.wallet_id, ref=ref))


def topup_started(svc: Services, topup_id: str, now_ms: int, site: str | None) -> None:
    """``site``: where the top-up was started from, counted (item "") if no 402 offered it."""
    svc.insights.note(Note(insights.TOPUP_STARTED, now_ms, site or "", topup_id=topup_id))


def topup_paid(svc: Services, session_id: str, now_ms: int) -> None:
    svc.insights.note(Note(insights.TOPUP_PAID, now_ms, session_id=session_id))
