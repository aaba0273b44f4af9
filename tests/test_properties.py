"""Random traffic through the HTTP API, checked after every step against a model of every wallet.

A Hypothesis state machine creates wallets, vouchers and top-ups (paid in the test checkout,
or credited the way the Stripe webhook credits them, with a PaymentIntent), unlocks with and
without an Idempotency-Key (and retries those keys with the same or another body), changes
prices and moves the clock. It takes money back the way Stripe does: refunds reported under
their own ids (again, failed or cancelled, in any order, some deliveries concurrent) and
disputes (created, won, lost). After each step every balance and frozen flag must equal the
model's, no balance may sit below its tab limit unless a refund or dispute pushed it there
and froze it, and ``reconcile`` must be clean (money rules 3–7, 9, 10; "frozen").

Profiles: ``ci`` (the default, also when ``CI`` is set) fits the suite's time budget;
``HYPOTHESIS_PROFILE=thorough`` runs many more and longer examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from coinslot import catalog, chargebacks, ledger, topups, unlocks
from coinslot.clock import FrozenClock
from coinslot.errors import PaymentNotYetKnown
from coinslot.keyring import KeyRing
from coinslot.payments import REFUND_RETURNED, REFUND_TAKEN, DisputeReport, RefundReport
from coinslot.settings import Settings
from coinslot.store import Store, connect
from coinslot.wallets import RECENT_LEDGER_LINES

from api import Api, auth
from conftest import make_settings, running_app, unique

# On a CI server the ci profile builds on Hypothesis' own (derandomized, no example database,
# failures printed as a reproducible blob); on a workstation it explores and remembers.
ON_CI = "CI" in os.environ
settings.register_profile(
    "ci",
    settings.get_profile("ci" if ON_CI else "default"),
    max_examples=30,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "ci"

# (tab limit in minor units, time zone): the tab quota counts per site day, in the site's zone.
SITES = ((0, "UTC"), (50, "Europe/Berlin"), (200, "Pacific/Auckland"))
ITEMS = ("a", "b", "c")
PRICES = st.integers(min_value=0, max_value=300)  # minor units
TOPUP_AMOUNTS = (200, 500, 1000)  # the default allowed amounts
# What Stripe takes back of a top-up, in percent of it: often all, else a part; now and then (a report that
# contradicts the top-up) more.
TAKEN_BACK = st.sampled_from([100, 100, 100, 10, 25, 50, 75, 99, 101])
REFUND_STATUSES = st.sampled_from(REFUND_TAKEN + REFUND_RETURNED)
# A refund's first event: most refunds go through; some fail or are cancelled before anything else is heard.
FIRST_REFUND_STATUSES = st.sampled_from(REFUND_TAKEN * 3 + REFUND_RETURNED)
MAX_WALLETS = 6
DAY_S = 24 * 60 * 60
IDEMPOTENCY_KEPT_MS = DAY_S * 1000  # rule 4: a key is kept 24 h

T = TypeVar("T")
Summary = tuple[Any, ...]  # what a response says, comparable with what the model predicts
NEW = "(a new purchase id)"  # the model's stand-in until the server names the purchase
SHOWN = st.sampled_from(["none", "current", "stale"])  # the price the request names, if any


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def unlock_summary(r: httpx.Response) -> Summary:
    body = r.json()
    if r.status_code == 200:
        assert body["token"] and body["currency"] == "EUR"
        replayed = r.headers.get("idempotent-replayed") == "true"
        return ("ok", body["purchase_id"], body["charged"], body["balance"], replayed)
    kind = body["type"].rsplit("/", 1)[-1]
    if r.status_code == 402:
        assert body["currency"] == "EUR"
        return (402, kind, body["balance"], body["price"])
    if kind == "price-changed":
        return (409, kind, body["price"])
    return (r.status_code, kind)


@dataclass(frozen=True)
class Outcome:
    purchase_id: str
    charged: int
    balance: int


@dataclass(eq=False)
class Wallet:
    token: str
    id: str
    balance: int = 0  # minor units
    entries: int = 0  # ledger entries
    owned: dict[tuple[str, str], str] = field(default_factory=dict)  # (site, item) → purchase id
    receipts: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # purchase id → (site, item, charged)
    used_sites: set[str] = field(default_factory=set)  # sites it bought from
    tab_sites: set[str] = field(default_factory=set)  # sites that offered it a tab
    frozen: bool = False  # a refund or dispute left it below zero, and no credit has brought it back to >= 0
    recorded: dict[str, tuple[str, Outcome]] = field(default_factory=dict)  # key → (canonical body, outcome)

    def name_purchase(self, purchase_id: str) -> None:
        """Replace the model's stand-in for a new purchase by the id the server gave it."""
        self.receipts[purchase_id] = self.receipts.pop(NEW)
        self.owned = {k: purchase_id if v == NEW else v for k, v in self.owned.items()}
        self.recorded = {
            key: (body, replace(o, purchase_id=purchase_id) if o.purchase_id == NEW else o)
            for key, (body, o) in self.recorded.items()
        }


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


class MoneyMachine(RuleBasedStateMachine):
    wallets = Bundle("wallets")
    vouchers = Bundle("vouchers")
    topups = Bundle("topups")
    sent = Bundle("sent")
    refunds = Bundle("refunds")
    disputes = Bundle("disputes")

    def __init__(self, redis_url: str, keyring: KeyRing, tmp_path: Path) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.stack = contextlib.AsyncExitStack()
        self.clock = FrozenClock()
        # A small tab quota, so that random traffic reaches it.
        # Abuse limits are not what this machine models (test_ratelimit.py covers them): out of the way.
        self.settings: Settings = make_settings(
            tmp_path,
            tab_wallets_per_ip=2,
            wallets_per_ip_per_hour=10**6,
            failed_redeems_per_ip_per_hour=10**6,
            topups_per_wallet_per_hour=10**6,
            topups_per_ip_per_hour=10**6,
        )
        self.keys = itertools.count()
        self.sites: list[tuple[str, str, int, str]] = []  # (site id, secret key, tab limit, time zone)
        self.prices: dict[tuple[str, str], int] = {}
        self.all_wallets: list[Wallet] = []
        self.tab_wallets: dict[tuple[str, str], set[str]] = {}  # (site, site day) → wallets that asked for a tab
        self.revenue: Counter[str] = Counter()
        self.promotions: Counter[str] = Counter()
        self.topped_up = 0
        self.entries = 0
        self.all_topups: list[Topup] = []
        self.chargebacks: list[Chargeback] = []
        self.refunded = 0  # live refunds, posted to topup:clearing
        self.disputed = 0  # disputed and not won back, posted to topup:disputes
        self.disputes_posted = False
        self.ids = itertools.count()
        try:
            self.client = self.run(self._start(redis_url, keyring))
        except BaseException:
            self.teardown()
            raise

    async def _start(self, redis_url: str, keyring: KeyRing) -> httpx.AsyncClient:
        self.store = Store(await connect(redis_url))
        self.stack.push_async_callback(self.store.close)
        await self.store.redis.flushall()
        client: httpx.AsyncClient = await self.stack.enter_async_context(
            running_app(self.settings, self.store, self.clock, keyring)
        )
        for tab_limit, timezone in SITES:
            site, secret = await catalog.create_site(
                self.store,
                name="Property site",
                origins=["http://localhost:8001"],
                site_id=unique("site_p"),
                tab_limit=tab_limit,
                timezone=timezone,
                now_ms=self.clock.now_ms(),
            )
            self.sites.append((site.id, secret, tab_limit, timezone))
        return client

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)

    def teardown(self) -> None:
        try:
            self.run(self.stack.aclose())
        finally:
            self.runner.close()

    # HTTP ----------------------------------------------------------------------------

    def call(self, method: str, url: str, token: str | None = None, **kwargs: Any) -> httpx.Response:
        if token is not None:
            kwargs["headers"] = {**kwargs.get("headers", {}), **auth(token)}
        return self.run(self.client.request(method, url, **kwargs))

    def gather(self, requests: list[Coroutine[Any, Any, httpx.Response]]) -> list[httpx.Response]:
        async def together() -> list[httpx.Response]:
            return list(await asyncio.gather(*requests))

        return self.run(together())

    def site_day(self, site: str) -> str:
        zone = next(tz for s, _, _, tz in self.sites if s == site)
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, ZoneInfo(zone)).date().isoformat()

    def tab_limit(self, site: str) -> int:
        return next(limit for s, _, limit, _ in self.sites if s == site)

    # Catalog -------------------------------------------------------------------------

    def put_price(self, site_index: int, item: str, price: int) -> None:
        site, secret, _, _ = self.sites[site_index]
        r = self.call("PUT", f"/v1/admin/items/{item}", secret, json={"title": f"{item} at {site}", "price": price})
        assert r.status_code == 200, r.text
        assert r.json()["price"] == price
        self.prices[(site, item)] = price

    @initialize(prices=st.lists(PRICES, min_size=len(SITES) * len(ITEMS), max_size=len(SITES) * len(ITEMS)))
    def stock_the_sites(self, prices: list[int]) -> None:
        slots = itertools.product(range(len(SITES)), ITEMS)
        for (site_index, item), price in zip(slots, prices, strict=True):
            self.put_price(site_index, item, price)

    @rule(site_index=st.integers(0, len(SITES) - 1), item=st.sampled_from(ITEMS), price=PRICES)
    def change_price(self, site_index: int, item: str, price: int) -> None:
        self.put_price(site_index, item, price)

    @rule(wallet=wallets, site_index=st.integers(0, len(SITES) - 1))
    def read_offers(self, wallet: Wallet, site_index: int) -> None:
        """The card's view: current prices (right after a change) and what this wallet owns."""
        site = self.sites[site_index][0]
        r = self.call("GET", "/v1/offers", wallet.token, params={"site": site, "items": ",".join(ITEMS)})
        assert r.status_code == 200, r.text
        offers = {o["item"]: (o["price"], o["owned"]) for o in r.json()["items"]}
        assert offers == {i: (self.prices[(site, i)], (site, i) in wallet.owned) for i in ITEMS}

    @rule(seconds=st.sampled_from([60, 3600, 6 * 3600, DAY_S + 3600]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # Wallets, vouchers, top-ups ------------------------------------------------------

    @initialize(target=wallets, funds=st.lists(st.sampled_from((0, *TOPUP_AMOUNTS)), min_size=2, max_size=2))
    def first_wallets(self, funds: list[int]) -> Any:
        """Two wallets to start with, topped up or not, so that unlocks have money to move from the first step.

        The first is credited as Stripe's webhook credits, the second in the test checkout.
        """
        first = [self.new_wallet() for _ in funds]
        for n, (wallet, amount) in enumerate(zip(first, funds, strict=True)):
            if amount:
                self.pay_topup(self.open_topup(wallet, amount), burst=False, through_provider=n == 0)
        return multiple(*first)

    @precondition(lambda self: len(self.all_wallets) < MAX_WALLETS)
    @rule(target=wallets)
    def new_wallet(self) -> Wallet:
        r = self.call("POST", "/v1/wallets", json={"currency": "EUR"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["balance"], body["currency"]) == (0, "EUR")
        wallet = Wallet(body["token"], body["wallet_id"])
        self.all_wallets.append(wallet)
        return wallet

    @rule(
        target=vouchers, site_index=st.integers(0, len(SITES) - 1), amount=st.integers(1, 300), uses=st.integers(1, 3)
    )
    def issue_voucher(self, site_index: int, amount: int, uses: int) -> Voucher:
        site, secret, _, _ = self.sites[site_index]
        r = self.call("POST", "/v1/admin/vouchers", secret, json={"amount": amount, "uses": uses})
        assert r.status_code == 201, r.text
        assert (r.json()["amount"], r.json()["uses"], r.json()["site"]) == (amount, uses, site)
        return Voucher(r.json()["code"], site, amount, uses)

    def expect_redeem(self, wallet: Wallet, voucher: Voucher) -> Summary:
        if wallet.id in voucher.redeemed_by:
            return (409, "voucher-already-redeemed")
        if voucher.uses_left == 0:
            return (409, "voucher-unavailable")
        voucher.uses_left -= 1
        voucher.redeemed_by.add(wallet.id)
        self.credit(wallet, voucher.amount)
        self.promotions[voucher.site] += voucher.amount
        return (200, {"credited": voucher.amount, "balance": wallet.balance, "currency": "EUR"})

    def credit(self, wallet: Wallet, amount: int) -> None:
        """A credit (credit.lua) thaws a frozen wallet once it brings the balance back to zero or more."""
        wallet.balance += amount
        wallet.entries += 1
        self.entries += 1
        if wallet.balance >= 0:
            if wallet.frozen:
                event("a credit thawed a wallet")
            wallet.frozen = False

    @rule(wallet=wallets, voucher=vouchers, retyped=st.booleans(), burst=st.booleans())
    def redeem_voucher(self, wallet: Wallet, voucher: Voucher, retyped: bool, burst: bool) -> None:
        """Redeem a code (as typed by a person, or three times at once): each wallet once, within its uses."""
        code = voucher.code.lower().replace("-", " ") if retyped else voucher.code
        copies = 3 if burst else 1
        expected = [self.expect_redeem(wallet, voucher) for _ in range(copies)]
        responses = self.gather(
            [
                self.client.post("/v1/vouchers/redeem", json={"code": code}, headers=auth(wallet.token))
                for _ in range(copies)
            ]
        )
        actual = [
            (200, r.json()) if r.status_code == 200 else (r.status_code, r.json()["type"].rsplit("/", 1)[-1])
            for r in responses
        ]
        assert sorted(map(repr, actual)) == sorted(map(repr, expected))

    @rule(target=topups, wallet=wallets, amount=st.sampled_from(TOPUP_AMOUNTS))
    def open_topup(self, wallet: Wallet, amount: int) -> Topup:
        r = self.call("POST", "/v1/topups", wallet.token, json={"amount": amount})
        assert r.status_code == 201, r.text
        body = r.json()
        assert (body["status"], body["amount"], body["currency"]) == ("pending", amount, "EUR")
        assert body["expires_at"] * 1000 > self.clock.now_ms()
        session = httpx.URL(body["checkout_url"]).path.rsplit("/", 1)[-1]
        topup = Topup(wallet, body["topup_id"], session, amount, body["expires_at"] * 1000, payment=f"pi_{session}")
        self.all_topups.append(topup)
        return topup

    @rule(topup=topups, burst=st.booleans(), through_provider=st.booleans())
    def pay_topup(self, topup: Topup, burst: bool, through_provider: bool) -> None:
        """Pay in the test checkout (or three times at once); paying again, or after expiry, credits nothing.

        Or have the session credited the way Stripe's webhook does it (``through_provider``).
        """
        if through_provider:
            self.credit_through_provider(topup, burst)
            return
        expired = not topup.paid and self.clock.now_ms() >= topup.expires_ms
        responses = self.gather([self.client.post(f"/checkout/test/{topup.session}") for _ in range(3 if burst else 1)])
        assert {r.status_code for r in responses} == {410 if expired else 200}
        if not expired and not topup.paid:
            self.paid(topup)
        status = self.call("GET", f"/v1/topups/{topup.id}", topup.wallet.token)
        assert status.status_code == 200, status.text
        assert status.json()["status"] == ("paid" if topup.paid else "expired" if expired else "pending")

    def paid(self, topup: Topup) -> None:
        topup.paid = True
        self.credit(topup.wallet, topup.amount)
        self.topped_up += topup.amount

    def credit_through_provider(self, topup: Topup, burst: bool) -> None:
        """Credit a session the way Stripe's webhook does (``settle`` → ``fulfil`` with the PaymentIntent).

        Once or three times at once, before or after the test checkout paid it: credited once per session,
        and from then on refunds and disputes find the top-up by its PaymentIntent.
        """
        if not topup.paid and self.clock.now_ms() >= topup.expires_ms:
            return  # Stripe never reports an expired session paid
        copies = 3 if burst else 1
        outcomes = self.gather_any(
            [
                topups.fulfil(
                    self.store,
                    topup.session,
                    amount=topup.amount,
                    currency="EUR",
                    now_ms=self.clock.now_ms(),
                    payment_id=topup.payment,
                )
                for _ in range(copies)
            ]
        )
        expected = [topups.Fulfilment.ALREADY] * copies
        if not topup.paid:
            expected[0] = topups.Fulfilment.CREDITED
            self.paid(topup)
        assert Counter(outcomes) == Counter(expected), outcomes
        topup.indexed = True

    def gather_any(self, work: list[Coroutine[Any, Any, T]]) -> list[T]:
        async def together() -> list[T]:
            return list(await asyncio.gather(*work))

        return self.run(together())

    # Refunds and disputes ------------------------------------------------------------

    def expect_chargeback(self, target: Chargeback, status: str) -> str:
        """The outcome the model predicts for one report of a refund or dispute; the model takes its effect."""
        topup, amount = target.topup, target.amount
        if isinstance(target, Dispute) and status == "inquiry":
            return "inquiry"  # no funds move on an inquiry
        if not topup.indexed:
            return "not-yet-known"  # Stripe retries the event until the credit has run
        if amount > topup.amount:
            return "mismatch"
        moved: list[int] = []
        if isinstance(target, Refund):
            returned = status in REFUND_RETURNED
            if target.state == "dead":
                return "void"
            if target.state == "unseen" and returned:
                target.state = "dead"
                return "void"
            if target.state == "unseen":
                if topup.refunded + amount > topup.amount:
                    return "mismatch"  # nothing recorded: a later report of it may still fit
                target.state = "debited"
                topup.refunded += amount
                self.refunded += amount
                moved.append(-amount)
            elif target.state == "debited" and returned:
                target.state = "given-back"
                topup.refunded -= amount
                self.refunded -= amount
                moved.append(amount)
        else:
            # 'won' or 'lost' may come before 'open': the funds were withdrawn either way.
            if not target.debited:
                target.debited = True
                self.disputed += amount
                moved.append(-amount)
            if status == "won" and not target.won:
                target.won = True
                self.disputed -= amount
                moved.append(amount)
            self.disputes_posted = self.disputes_posted or bool(moved)
        if not moved:
            return "duplicate"
        wallet = topup.wallet
        for delta in moved:
            wallet.balance += delta
            wallet.entries += 1
            self.entries += 1
        # Whatever the wallet's tab, a chargeback that takes money and leaves it below zero freezes it; one that
        # leaves it at zero or more thaws it; money given back that leaves it below zero changes nothing.
        if wallet.balance >= 0:
            wallet.frozen = False
        elif sum(moved) < 0:
            wallet.frozen = True
        return "ok"

    async def report(self, target: Chargeback, status: str) -> str:
        now_ms = self.clock.now_ms()
        try:
            if isinstance(target, Refund):
                refund = RefundReport(target.id, target.topup.payment, target.amount, "EUR", status)
                return await chargebacks.refund(self.store, refund, now_ms=now_ms)
            dispute = DisputeReport(target.id, target.topup.payment, target.amount, "EUR", status)
            return await chargebacks.dispute(self.store, dispute, now_ms=now_ms)
        except PaymentNotYetKnown:
            return "not-yet-known"

    def model_state(self) -> list[dict[str, Any]]:
        """What a chargeback may change in the model (scalar fields only), to try the orders of a burst."""
        counters = {k: getattr(self, k) for k in ("entries", "refunded", "disputed", "disputes_posted")}
        return [counters] + [dict(vars(o)) for o in (*self.all_wallets, *self.all_topups, *self.chargebacks)]

    def restore(self, state: list[dict[str, Any]]) -> None:
        counters, *objects = state
        for name, value in counters.items():
            setattr(self, name, value)
        for o, saved in zip((*self.all_wallets, *self.all_topups, *self.chargebacks), objects, strict=True):
            vars(o).update(saved)

    def deliver(self, reports: list[tuple[Chargeback, str]], together: bool) -> None:
        """Deliver reports one after another, or all at once (as Stripe's retries and parallel events may).

        Redis runs each report's script alone, in some order: the answers must be those the model
        gives for one order of the reports, and the model goes on from the state that order left.
        """
        frozen = {w.id for w in self.all_wallets if w.frozen}
        if together:
            outcomes = self.deliver_together(reports)
        else:
            outcomes = []
            for target, status in reports:
                expected = self.expect_chargeback(target, status)
                outcomes.append(self.run(self.report(target, status)))
                assert outcomes[-1] == expected, (target.id, status, outcomes[-1], expected)
        for (target, _), outcome in zip(reports, outcomes, strict=True):
            event(f"{type(target).__name__.lower()} report: {outcome}")
        if {w.id for w in self.all_wallets if w.frozen} - frozen:
            event("a refund or dispute froze a wallet")

    def deliver_together(self, reports: list[tuple[Chargeback, str]]) -> list[str]:
        actual = self.gather_any([self.report(target, status) for target, status in reports])
        before = self.model_state()
        explained: list[list[dict[str, Any]]] = []
        for order in itertools.permutations(range(len(reports))):
            self.restore(before)
            predicted = [""] * len(reports)
            for i in order:
                predicted[i] = self.expect_chargeback(*reports[i])
            if predicted == actual:
                explained.append(self.model_state())
        assert explained, (actual, [(t.id, s) for t, s in reports])
        event(f"{len(set(actual) - {'duplicate', 'inquiry'})} kinds of outcome in a burst of {len(reports)}")
        assert all(state == explained[0] for state in explained), "the answers leave the model undecided"
        self.restore(explained[0])
        return actual

    def credited_topup(self, data: st.DataObject) -> Topup:
        """Mostly a top-up that Stripe would have credited; now and then one it has not (yet): the event comes early."""
        indexed = [t for t in self.all_topups if t.indexed]
        early = data.draw(st.integers(0, 4), label="early") == 0
        return data.draw(st.sampled_from(self.all_topups if early else indexed), label="topup")

    @precondition(lambda self: any(t.indexed for t in self.all_topups))
    @rule(
        target=refunds,
        data=st.data(),
        share=TAKEN_BACK,
        first=FIRST_REFUND_STATUSES,
        then=st.lists(REFUND_STATUSES, max_size=2),
        together=st.booleans(),
    )
    def new_refund(self, data: st.DataObject, share: int, first: str, then: list[str], together: bool) -> Refund:
        """A refund is created (in the Dashboard, say) and its first events arrive, maybe all at once
        (``refund.created`` racing its own ``refund.failed``)."""
        topup = self.credited_topup(data)
        refund = Refund(topup, f"re_{next(self.ids)}", topup.amount * share // 100)
        self.chargebacks.append(refund)
        self.deliver([(refund, status) for status in (first, *then)], together)
        return refund

    @rule(
        refund=refunds,
        statuses=st.lists(REFUND_STATUSES, min_size=1, max_size=4),
        together=st.booleans(),
    )
    def report_refund(self, refund: Refund, statuses: list[str], together: bool) -> None:
        """More events of one refund: repeats, its success, its failure or cancellation, in any order."""
        self.deliver([(refund, status) for status in statuses], together)

    @precondition(lambda self: any(t.indexed for t in self.all_topups))
    @rule(target=disputes, data=st.data(), share=TAKEN_BACK, fate=st.sampled_from(["won", "lost"]))
    def new_dispute(self, data: st.DataObject, share: int, fate: str) -> Dispute:
        """A reader disputes a top-up's payment; the first event may be the dispute's creation or its close."""
        topup = self.credited_topup(data)
        dispute = Dispute(topup, f"dp_{next(self.ids)}", topup.amount * share // 100, fate)
        self.chargebacks.append(dispute)
        self.deliver([(dispute, data.draw(st.sampled_from(["open", "open", "inquiry", fate])))], together=False)
        return dispute

    @rule(
        dispute=disputes,
        picks=st.lists(st.sampled_from(["open", "closed", "closed", "inquiry"]), min_size=1, max_size=3),
    )
    def report_dispute(self, dispute: Dispute, picks: list[str]) -> None:
        """More events of one dispute (created, closed won or lost), repeated, in any order, all at once."""
        statuses = [dispute.fate if pick == "closed" else pick for pick in picks]
        self.deliver([(dispute, status) for status in statuses], together=True)

    @rule(
        refund=refunds,
        other=refunds,
        dispute=disputes,
        statuses=st.tuples(REFUND_STATUSES, REFUND_STATUSES, st.sampled_from(["open", "won", "lost"])),
    )
    def race_chargebacks(self, refund: Refund, other: Refund, dispute: Dispute, statuses: tuple[str, str, str]) -> None:
        """Events of two refunds and a dispute (of one top-up or several) at once."""
        refund_status, other_status, dispute_status = statuses
        if dispute_status in ("won", "lost"):
            dispute_status = dispute.fate
        self.deliver([(refund, refund_status), (other, other_status), (dispute, dispute_status)], together=True)

    @precondition(lambda self: any(w.frozen for w in self.all_wallets))
    @rule(
        data=st.data(),
        site_index=st.integers(0, len(SITES) - 1),
        item=st.sampled_from(ITEMS),
        amount=st.sampled_from(TOPUP_AMOUNTS),
        burst=st.booleans(),
        through_provider=st.booleans(),
    )
    def use_a_frozen_wallet(
        self, data: st.DataObject, site_index: int, item: str, amount: int, burst: bool, through_provider: bool
    ) -> None:
        """A frozen wallet tries to unlock (refused unless it owns the item), tops up (thawed if that brings it
        to zero or more) and tries again."""
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.frozen]), label="wallet")
        self.unlock(wallet, self.body(site_index, item, "none", 0), None, burst=burst)
        self.pay_topup(self.open_topup(wallet, amount), burst=burst, through_provider=through_provider)
        self.unlock(wallet, self.body(site_index, item, "current", 0), None, burst=burst)

    # Unlocks -------------------------------------------------------------------------

    def path(self, wallet: Wallet, body: dict[str, Any], key: str | None) -> str:
        """Which way the model says an unlock goes, without changing the model."""
        site, item, shown = body["site"], body["item"], body.get("price")
        if key is not None and key in wallet.recorded:
            return "replay" if wallet.recorded[key][0] == canonical(body) else "key-reused"
        if (site, item) in wallet.owned:
            return "owned"
        price = self.prices[(site, item)]
        if shown is not None and shown != price:
            return "price-changed"
        if wallet.frozen:
            return "frozen"
        after = wallet.balance - price
        if after < 0:
            if after < -self.tab_limit(site):
                return "insufficient"
            if site not in wallet.tab_sites:
                return "new-tab"
        return "buy"

    def expect_unlock(self, wallet: Wallet, body: dict[str, Any], key: str | None) -> Summary:
        """The response the model predicts for one unlock; the model takes its effect."""
        site, item = body["site"], body["item"]
        price = self.prices[(site, item)]
        path = self.path(wallet, body, key)
        if path == "key-reused":
            return (409, "idempotency-key-reused")
        if path == "replay":
            assert key is not None
            recorded = wallet.recorded[key][1]
            return ("ok", recorded.purchase_id, recorded.charged, recorded.balance, True)
        if path == "price-changed":
            return (409, "price-changed", price)
        if path == "insufficient":
            return (402, "insufficient-funds", wallet.balance, price)
        if path == "frozen":
            event("unlock refused: wallet-frozen")
            return (402, "wallet-frozen", wallet.balance, price)
        if path == "new-tab":
            # A site offers a tab to at most N new wallets per IP per day (every request here comes
            # from one IP); a wallet refused today stays counted, and stays refused, until the day ends.
            asked = self.tab_wallets.setdefault((site, self.site_day(site)), set())
            asked.add(wallet.id)
            if len(asked) > self.settings.tab_wallets_per_ip:
                return (402, "insufficient-funds", wallet.balance, price)
            wallet.tab_sites.add(site)
        if path == "owned":
            outcome = Outcome(wallet.owned[(site, item)], 0, wallet.balance)
        else:
            wallet.balance -= price
            wallet.owned[(site, item)] = NEW
            wallet.receipts[NEW] = (site, item, price)
            wallet.used_sites.add(site)
            wallet.entries += 1
            self.revenue[site] += price
            self.entries += 1
            outcome = Outcome(NEW, price, wallet.balance)
        if key is not None:
            wallet.recorded[key] = (canonical(body), outcome)
        return ("ok", outcome.purchase_id, outcome.charged, outcome.balance, False)

    def unlock(
        self, wallet: Wallet, body: dict[str, Any], key: str | None, *, burst: bool = False, reorder: bool = False
    ) -> None:
        """Send an unlock (in a burst: the same request three times at once) and check every response.

        The model applies the copies one after another: whatever order Redis runs them in, the
        responses must be the same multiset — one purchase, the other copies owned or replayed.
        """
        copies = 3 if burst else 1
        expected = [self.expect_unlock(wallet, body, key) for _ in range(copies)]
        headers = {"Content-Type": "application/json", **auth(wallet.token)}
        if key is not None:
            headers["Idempotency-Key"] = key
        # A retry may spell the same JSON differently: bodies are compared as canonical JSON.
        raw = json.dumps(dict(reversed(body.items())), indent=1) if reorder else json.dumps(body)
        responses = self.gather(
            [self.client.post("/v1/unlocks", content=raw.encode(), headers=headers) for _ in range(copies)]
        )
        actual = [unlock_summary(r) for r in responses]

        known = {pid for w in self.all_wallets for pid in w.receipts if pid != NEW}
        fresh = {s[1] for s in actual if s[0] == "ok"} - known
        if NEW in wallet.receipts:
            assert len(fresh) == 1, actual
            (purchase_id,) = fresh
            wallet.name_purchase(purchase_id)
            expected = [tuple(purchase_id if v == NEW else v for v in s) for s in expected]
        else:
            assert not fresh, actual
        # What was charged is the price at that moment, or 0 when owned; a replay is the recorded outcome.
        assert Counter(actual) == Counter(expected), (actual, expected)

    def body(self, site_index: int, item: str, shown: str, delta: int) -> dict[str, Any]:
        site = self.sites[site_index][0]
        body: dict[str, Any] = {"site": site, "item": item}
        if shown == "current":
            body["price"] = self.prices[(site, item)]
        elif shown == "stale":
            body["price"] = self.prices[(site, item)] + delta
        return body

    @rule(
        wallet=wallets,
        site_index=st.integers(0, len(SITES) - 1),
        item=st.sampled_from(ITEMS),
        shown=SHOWN,
        delta=st.integers(1, 50),
        burst=st.booleans(),
    )
    def unlock_item(self, wallet: Wallet, site_index: int, item: str, shown: str, delta: int, burst: bool) -> None:
        self.unlock(wallet, self.body(site_index, item, shown, delta), None, burst=burst)

    @rule(
        target=sent,
        wallet=wallets,
        site_index=st.integers(0, len(SITES) - 1),
        item=st.sampled_from(ITEMS),
        shown=SHOWN,
        delta=st.integers(1, 50),
        burst=st.booleans(),
    )
    def unlock_item_with_key(
        self, wallet: Wallet, site_index: int, item: str, shown: str, delta: int, burst: bool
    ) -> Sent:
        body = self.body(site_index, item, shown, delta)
        key = f"key-{next(self.keys)}"
        self.unlock(wallet, body, key, burst=burst)
        return Sent(wallet, key, body, self.clock.now_ms())

    @rule(sent=sent, reorder=st.booleans(), burst=st.booleans())
    def retry_same_body(self, sent: Sent, reorder: bool, burst: bool) -> None:
        if self.clock.now_ms() - sent.at_ms < IDEMPOTENCY_KEPT_MS:
            self.unlock(sent.wallet, sent.body, sent.key, burst=burst, reorder=reorder)

    @rule(sent=sent, change=st.sampled_from(["item", "price"]))
    def retry_other_body(self, sent: Sent, change: str) -> None:
        if self.clock.now_ms() - sent.at_ms >= IDEMPOTENCY_KEPT_MS:
            return  # rule 4 keeps a key 24 h; what happens after is not specified
        body = dict(sent.body)
        if change == "item":
            body["item"] = ITEMS[(ITEMS.index(body["item"]) + 1) % len(ITEMS)]
            body.pop("price", None)
        elif "price" in body:
            del body["price"]
        else:
            body["price"] = self.prices[(body["site"], body["item"])]
        self.unlock(sent.wallet, body, sent.key)

    # Invariants ----------------------------------------------------------------------

    @invariant()
    def wallets_match_the_model(self) -> None:
        for wallet in self.all_wallets:
            r = self.call("GET", "/v1/wallet", wallet.token)
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["wallet_id"] == wallet.id
            assert view["balance"] == wallet.balance, (view["balance"], wallet.balance)
            assert view["frozen"] == wallet.frozen, (view["frozen"], wallet.balance)
            # No balance below the tab limit of the sites it bought from (0 when it never bought), unless a
            # refund or dispute pushed it there, and then it is frozen (and the model said so above).
            floor = -max((self.tab_limit(s) for s in wallet.used_sites), default=0)
            assert view["balance"] >= floor or view["frozen"], (view["balance"], floor)
            receipts = {p["id"]: (p["site"], p["item"], p["charged"]) for p in view["purchases"]}
            assert receipts == wallet.receipts
            assert all(p["price"] == p["charged"] for p in view["purchases"])
            lines = view["ledger"]  # the most recent first
            assert len(lines) == min(wallet.entries, RECENT_LEDGER_LINES)
            assert not lines or lines[0]["balance"] == wallet.balance

    @invariant()
    def ledger_reconciles(self) -> None:
        report = self.run(ledger.reconcile(self.store))
        assert report.clean, report.problems
        assert (report.wallets, report.entries) == (len(self.all_wallets), self.entries)
        accounts = {name: dict(by_currency) for name, by_currency in report.accounts.items()}
        expected: dict[str, dict[str, int]] = {}
        if self.all_wallets and self.entries:
            expected["wallets"] = {"EUR": sum(w.balance for w in self.all_wallets)}
        if self.topped_up:
            expected["topup:clearing"] = {"EUR": -self.topped_up + self.refunded}
        if self.disputes_posted:
            expected["topup:disputes"] = {"EUR": self.disputed}
        for site, amount in self.promotions.items():
            expected[f"site:{site}:promotions"] = {"EUR": -amount}
        for site, amount in self.revenue.items():
            expected[f"site:{site}:revenue"] = {"EUR": amount}
        assert accounts == expected


@pytest.mark.slow
def test_money_rules_hold_under_random_traffic(standalone_url: str, keyring: KeyRing, tmp_path: Path) -> None:
    class OnTheTestServer(MoneyMachine):
        def __init__(self) -> None:
            super().__init__(standalone_url, keyring, tmp_path)

    run_state_machine_as_test(OnTheTestServer, settings=settings.get_profile(PROFILE))


# Concurrent copies of one unlock on a tab, in the orders the state machine's bursts cannot force.

COPIES = 6  # concurrent copies of one unlock; the tab quota is 3 new wallets per IP and day
PATIENCE_S = 5.0  # how long the gate waits for requests that a changed unlock path may never send


class QuotaGate:
    """Holds the first ``hold`` requests that reach the tab quota (``unlocks._take_tab_quota``).

    Each held request waits until the test releases it, so a test can order a race exactly.
    """

    def __init__(self, hold: int) -> None:
        self.hold = hold
        self.arrived = 0
        self.everyone = asyncio.Event()
        self.go = [asyncio.Event() for _ in range(hold)]
        self.done = [asyncio.Event() for _ in range(hold)]

    async def take(self, take: Callable[..., Awaitable[bool]], *args: Any, **kwargs: Any) -> bool:
        n, self.arrived = self.arrived, self.arrived + 1
        if n >= self.hold:
            return await take(*args, **kwargs)
        if self.arrived == self.hold:
            self.everyone.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.go[n].wait(), PATIENCE_S)
        try:
            return await take(*args, **kwargs)
        finally:
            self.done[n].set()

    async def all_arrived(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.everyone.wait(), PATIENCE_S)

    def release_all(self) -> None:
        for go in self.go:
            go.set()

    async def release(self, n: int) -> None:
        """Let held request ``n`` (in order of arrival) take its place in the quota, and wait till it has."""
        self.go[n].set()
        if n < self.arrived:
            await self.done[n].wait()


def gate_tab_quota(monkeypatch: pytest.MonkeyPatch, hold: int) -> QuotaGate:
    gate = QuotaGate(hold)
    take = unlocks._take_tab_quota

    async def gated(*args: Any, **kwargs: Any) -> bool:
        return await gate.take(take, *args, **kwargs)

    monkeypatch.setattr(unlocks, "_take_tab_quota", gated)
    return gate


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def _all_at_once(api: Api, gate: QuotaGate, wallet: str, site: str, key: str | None) -> list[httpx.Response]:
    """``COPIES`` copies of one unlock; all of them ask the script before any takes a place in the quota."""
    requests = [asyncio.create_task(api.unlock(wallet, site, "a", key=key)) for _ in range(COPIES)]
    await gate.all_arrived()
    gate.release_all()
    return list(await asyncio.gather(*requests))


@pytest.mark.parametrize("key", [None, "double-click"])
async def test_concurrent_unlocks_on_a_tab_charge_once_and_refuse_none(
    api: Api, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    gate = gate_tab_quota(monkeypatch, hold=COPIES)
    site = await api.site(tab_limit=100)
    await api.item(site, "a", 40)
    wallet = await api.wallet()

    results = await _all_at_once(api, gate, wallet, site[0], key)

    assert [r.status_code for r in results] == [200] * COPIES
    charged = sorted(r.json()["charged"] for r in results)
    assert charged == ([0] * (COPIES - 1) + [40] if key is None else [40] * COPIES)
    assert len({r.json()["purchase_id"] for r in results}) == 1
    assert await api.balance(wallet) == -40


async def test_concurrent_unlocks_on_a_tab_count_one_wallet_against_the_ip_quota(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = gate_tab_quota(monkeypatch, hold=COPIES)
    site = await api.site(tab_limit=100)
    await api.item(site, "a", 40)
    first = await api.wallet()
    await _all_at_once(api, gate, first, site[0], None)
    others = [await api.wallet() for _ in range(3)]

    statuses = [(await api.unlock(w, site[0], "a")).status_code for w in others]

    assert statuses == [200, 200, 402]


async def test_double_click_on_a_tab_is_not_refused_when_the_quota_fills_in_between(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = await api.site(tab_limit=100)
    await api.item(site, "a", 40)
    for _ in range(2):  # two of the IP's three places for today
        assert (await api.unlock(await api.wallet(), site[0], "a")).status_code == 200
    reader, latecomer = await api.wallet(), await api.wallet()
    gate = gate_tab_quota(monkeypatch, hold=2)
    clicks = [asyncio.create_task(api.unlock(reader, site[0], "a")) for _ in range(2)]
    await gate.all_arrived()

    await gate.release(0)  # the first click takes the last place and buys
    first = await clicks[0]
    assert (await api.unlock(latecomer, site[0], "a")).status_code == 402  # the quota is full now
    await gate.release(1)
    second = await clicks[1]

    assert (first.status_code, first.json()["charged"]) == (200, 40)
    assert second.status_code == 200, second.text
    assert (second.json()["charged"], second.json()["purchase_id"]) == (0, first.json()["purchase_id"])
