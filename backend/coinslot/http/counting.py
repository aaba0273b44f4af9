"""What handlers tell the dashboard's counters (coinslot.insights): a note each, queued, never awaited.

Only what the reader did on a known site and item is noted: a request naming an unknown one, or
refused before it was understood (401, 404, 422), tells the publisher nothing.
"""

from __future__ import annotations

from coinslot import insights, keyspace, tabs
from coinslot.errors import CoinslotError
from coinslot.insights import Note
from coinslot.refunds import Refunded
from coinslot.services import Services
from coinslot.tokens import WalletRef
from coinslot.unlocks import CAP, PASS, Granted
from coinslot.vouchers import normalize_code

UNDERSTOOD_REFUSALS = (402, 409, 410, 429)  # a press that met the rules: no money, price changed, archived, too fast


def shown(svc: Services, site: str, item: str, wallet: WalletRef | None, now_ms: int) -> None:
    svc.insights.note(Note(insights.SHOWN, now_ms, site, item, wallet_id=wallet.wallet_id if wallet else None))


def unlocked(svc: Services, site: str, item: str, wallet: WalletRef, now_ms: int, granted: Granted) -> None:
    if granted.replayed:  # the same press, retried: counted the first time
        return
    if granted.access in (PASS, CAP):
        access = granted.access
    else:
        access = "charged" if granted.charged else "owned"
    svc.insights.note(Note(insights.PRESSED, now_ms, site, item, wallet_id=wallet.wallet_id))
    svc.insights.note(Note(insights.UNLOCKED, now_ms, site, item, granted.charged, access, wallet.wallet_id))
    if lent := tabs.lent(granted.charged, granted.balance):
        svc.insights.note(Note(insights.TAB_LENT, now_ms, site, amount=lent))


def unlock_refused(svc: Services, site: str, item: str, wallet: WalletRef, now_ms: int, exc: CoinslotError) -> None:
    if exc.status not in UNDERSTOOD_REFUSALS:
        return
    svc.insights.note(Note(insights.PRESSED, now_ms, site, item, wallet_id=wallet.wallet_id))
    options = exc.extra.get("topup_options") or []
    if exc.status == 402 and options:
        topups = tuple(str(o["topup_id"]) for o in options)
        svc.insights.note(Note(insights.OFFERED, now_ms, site, item, offered_topups=topups))


def refunded(svc: Services, done: Refunded, now_ms: int) -> None:
    for note in insights.refund_notes(done, now_ms):
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
