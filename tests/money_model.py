"""The model that tests/test_properties.py's state machine checks the server against: wallets, and the
vouchers, top-ups, Stripe refunds and disputes, and keyed requests that move their money.

Written from DESIGN.md (money rules 3–8, "Words": pass, daily cap; rule 11), not from the scripts:
what a wallet owns and why (bought, a running pass, free under the daily cap until the site's day
ends), what it spent on each site day, which pass served, its undos, and its token generations.
Pure: no HTTP, no Redis. The machine applies the effects; these functions say which way a request
goes.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# Why a wallet may read an item (the unlock's ``access``).
PURCHASE, PASS, CAP = "purchase", "pass", "cap"
READER, PUBLISHER = "reader", "publisher"
NEW = "(a new id)"  # the model's stand-in until the server names the purchase or the free grant
HOUR_MS = 3600 * 1000
UTC_DAY_MS = 24 * HOUR_MS  # a wallet's day (its daily limit): UTC, as a wallet has no time zone
UNDOS_PER_PERIOD = 3  # rule 8: at most 3 undos per wallet
UNDO_PERIOD_MS = 30 * 24 * HOUR_MS  # per 30 days


@dataclass(frozen=True)
class SiteRules:
    """What the machine sets up a site with."""

    tab_limit: int  # minor units
    timezone: str
    daily_cap: int = 0  # minor units; 0 = none
    refund_window_s: int = 0  # 0 = no undo


def site_day(timezone: str, now_ms: int) -> tuple[str, int]:
    """The site's day (ISO date in its zone) that ``now_ms`` falls in, and when it ends (ms): the next
    local midnight, so a day lasts 23 or 25 hours where the clocks change."""
    zone = ZoneInfo(timezone)
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    return local.date().isoformat(), int(midnight.timestamp() * 1000)


def pass_ends(now_ms: int, hours: int) -> int:
    """When a pass bought now ends (README: the token ends with it, so on a whole second)."""
    return now_ms // 1000 * 1000 + hours * HOUR_MS


@dataclass(frozen=True)
class Outcome:
    """What a granted unlock answers (and what an Idempotency-Key records)."""

    purchase_id: str
    charged: int
    balance: int
    access: str = PURCHASE
    until: int | None = None  # when the access ends (ms); None = for good


@dataclass
class Receipt:
    site: str
    item: str
    price: int  # the item's price then
    charged: int  # what it cost: less than the price where the daily cap took part of it
    at: int  # ms
    ends: int | None  # a pass's end; None for an item
    day: str | None  # the site's day, on a site with a daily cap
    refunded_by: str | None = None  # READER or PUBLISHER

    @property
    def is_pass(self) -> bool:
        return self.ends is not None


@dataclass
class Holding:
    """What grants one item: a purchase (for good, or a pass item until its end) or a free grant until the day ends."""

    id: str
    until: int | None
    access: str  # PURCHASE or CAP

    def runs(self, now_ms: int) -> bool:
        return self.until is None or now_ms < self.until


@dataclass
class SitePass:
    """The wallet's pass on a site: the one that lasts longest."""

    id: str
    ends: int


@dataclass(eq=False)
class Wallet:
    token: str
    id: str
    balance: int = 0  # minor units
    entries: int = 0  # ledger entries
    holdings: dict[tuple[str, str], Holding] = field(default_factory=dict)  # (site, item) →
    receipts: dict[str, Receipt] = field(default_factory=dict)  # purchase id →
    grants: list[str] = field(default_factory=list)  # ids of free unlocks under the cap (no purchase), in order
    passes: dict[str, SitePass] = field(default_factory=dict)  # site →
    served: set[str] = field(default_factory=set)  # passes under which an item was unlocked or opened
    spent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (site, site day) → paid that day, net of refunds
    free_days: set[tuple[str, str]] = field(default_factory=set)  # (site, site day) with free unlocks under the cap
    undos: list[int] = field(default_factory=list)  # when the reader undid purchases (ms)
    # Its own daily limit (README "Agents"): what unlocks may charge per UTC day, 0 = none; and what
    # they charged each UTC day since it was set, net of undos (never below 0).
    daily_limit: int = 0
    limit_spent: Counter[int] = field(default_factory=Counter)
    used_sites: set[str] = field(default_factory=set)  # sites it bought from
    tab_sites: set[str] = field(default_factory=set)  # sites that offered it a tab
    frozen: bool = False  # a refund or dispute left it below zero, and no credit has brought it back to >= 0
    recorded: dict[str, tuple[str, Outcome]] = field(default_factory=dict)  # key → (canonical body, outcome)
    generation: int = 1  # each recovery starts a new one: every older token stops working
    old_tokens: list[str] = field(default_factory=list)
    code: str | None = None  # its current recovery code
    old_codes: list[str] = field(default_factory=list)  # codes a newer one replaced

    def name_new(self, real_id: str) -> None:
        """Replace the model's stand-in for a new purchase or grant by the id the server gave it."""
        if NEW in self.receipts:
            self.receipts[real_id] = self.receipts.pop(NEW)
        self.grants = [real_id if g == NEW else g for g in self.grants]
        if NEW in self.served:
            self.served = (self.served - {NEW}) | {real_id}
        for holding in self.holdings.values():
            if holding.id == NEW:
                holding.id = real_id
        for site_pass in self.passes.values():
            if site_pass.id == NEW:
                site_pass.id = real_id
        self.recorded = {
            key: (body, replace(o, purchase_id=real_id) if o.purchase_id == NEW else o)
            for key, (body, o) in self.recorded.items()
        }

    def ids(self) -> set[str]:
        return {*self.receipts, *self.grants}

    def running_pass(self, site: str, now_ms: int) -> SitePass | None:
        site_pass = self.passes.get(site)
        return site_pass if site_pass is not None and now_ms < site_pass.ends else None

    def holding(self, site: str, item: str, now_ms: int) -> Holding | None:
        holding = self.holdings.get((site, item))
        return holding if holding is not None and holding.runs(now_ms) else None

    def owns(self, site: str, item: str, now_ms: int) -> bool:
        """``owned`` in the offers: held, or covered by a running pass (the pass item too)."""
        return self.holding(site, item, now_ms) is not None or self.running_pass(site, now_ms) is not None

    def grant(self, site: str, item: str, *, is_pass: bool, now_ms: int) -> tuple[str, str, int | None] | None:
        """What lets the card open the item now: (purchase or grant id, access, until), or None.

        What the item holds comes first; a pass covers other items only."""
        holding = self.holding(site, item, now_ms)
        if holding is not None:
            return holding.id, holding.access, holding.until
        site_pass = self.running_pass(site, now_ms)
        if site_pass is not None and not is_pass:
            return site_pass.id, PASS, site_pass.ends
        return None

    def cap_free(self, site: str, day: str) -> bool:
        return (site, day) in self.free_days

    def recent_undos(self, now_ms: int) -> int:
        return sum(1 for at in self.undos if at > now_ms - UNDO_PERIOD_MS)

    def snapshot(self) -> dict[str, Any]:
        """Everything an unlock may change, to take it back when the server says the unlock never ran."""
        return copy.deepcopy(vars(self))

    def restore(self, saved: dict[str, Any]) -> None:
        vars(self).update(saved)


def undo_verdict(wallet: Wallet, purchase_id: str, rules: SiteRules, *, by: str, now_ms: int) -> str:
    """Money rule 8 for one refund of a purchase the wallet made: 'ok' or the problem type of the 409.

    The reader's undo: within the site's window, at most 3 in 30 days, never a pass under which
    anything was unlocked, nor a purchase of a site day on which the wallet had items free under
    the cap there. The publisher's goodwill: any time, uncounted.
    """
    receipt = wallet.receipts[purchase_id]
    if receipt.refunded_by is not None:
        return "already-refunded"
    if by == PUBLISHER:
        return "ok"
    if now_ms >= receipt.at + rules.refund_window_s * 1000:
        return "refund-window-closed"
    if wallet.recent_undos(now_ms) >= UNDOS_PER_PERIOD:
        return "refund-limit-reached"
    if receipt.is_pass:
        if purchase_id in wallet.served:
            return "refund-pass-used"
    if receipt.day is not None and wallet.cap_free(receipt.site, receipt.day):
        return "refund-cap-day"
    return "ok"


def apply_refund(wallet: Wallet, purchase_id: str, *, by: str, now_ms: int) -> int:
    """Take a refund's effect on the wallet (its verdict was 'ok'); returns what it gave back."""
    receipt = wallet.receipts[purchase_id]
    receipt.refunded_by = by
    wallet.balance += receipt.charged
    wallet.entries += 1
    if wallet.balance >= 0:
        wallet.frozen = False  # money that brings a frozen wallet back to zero thaws it, whatever its source
    if by == READER:
        wallet.undos.append(now_ms)
    if receipt.day is not None:
        # Money given back is no longer spent that day: it makes room under the cap again.
        wallet.spent[(receipt.site, receipt.day)] -= receipt.charged
    if wallet.daily_limit:  # nor under the wallet's daily limit, on the UTC day of the purchase
        day = receipt.at // UTC_DAY_MS
        wallet.limit_spent[day] = max(0, wallet.limit_spent[day] - receipt.charged)
    holding = wallet.holdings.get((receipt.site, receipt.item))
    if holding is not None and holding.id == purchase_id:
        del wallet.holdings[(receipt.site, receipt.item)]
    site_pass = wallet.passes.get(receipt.site)
    if site_pass is not None and site_pass.id == purchase_id:
        del wallet.passes[receipt.site]
    return receipt.charged


# What moves money from outside: vouchers, top-ups and what Stripe takes back of them; keyed unlocks.


@dataclass(eq=False)
class Voucher:
    code: str
    site: str
    amount: int
    uses_left: int
    redeemed_by: set[str] = field(default_factory=set)


@dataclass(eq=False)
class Topup:
    wallet: Wallet
    id: str
    session: str
    amount: int
    expires_ms: int
    paid: bool = False
    # The PaymentIntent Stripe would name; refunds and disputes find the top-up by it once a
    # credit that carried it has run (``indexed``).
    payment: str = ""
    indexed: bool = False
    refunded: int = 0  # what its live refunds took (those given back excluded)


@dataclass(eq=False)
class Refund:
    topup: Topup
    id: str
    amount: int
    state: str = "unseen"  # unseen | debited | given-back | dead (failed or cancelled before any debit)


@dataclass(eq=False)
class Dispute:
    topup: Topup
    id: str
    amount: int
    fate: str  # how it will close: 'won' or 'lost'
    debited: bool = False
    won: bool = False


Chargeback = Refund | Dispute


@dataclass(eq=False)
class Sent:
    """An unlock request that carried an Idempotency-Key, to retry later."""

    wallet: Wallet
    key: str
    body: dict[str, Any]
    at_ms: int
