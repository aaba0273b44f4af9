"""Random traffic through the HTTP API, checked after every step against a model of every wallet.

A Hypothesis state machine creates wallets, vouchers and top-ups (paid in the test checkout,
or credited the way the Stripe webhook credits them, with a PaymentIntent), unlocks with and
without an Idempotency-Key (and retries those keys with the same or another body), changes
prices and moves the clock (by steps, or to the very millisecond a pass, a site's day, an undo
window or the 30 days of undos end). It takes money back the way Stripe does: refunds reported
under their own ids (again, failed or cancelled, in any order, some deliveries concurrent) and
disputes (created, won, lost). Every site sells a pass and two have a daily cap, in their own
time zones; readers buy passes, read their cards (which opens covered items with no click),
undo purchases (also several times at once), publishers refund as goodwill, and readers save
recovery codes and recover with them, also while an unlock of the token that ends is in flight.
Each answer is predicted from the model (tests/money_model.py). After each step every balance,
frozen flag, receipt (and whether it may still be undone) and what each wallet owns on each site
must equal the model's, no balance may sit below its tab limit unless a refund or dispute pushed
it there and froze it, and ``reconcile`` must be clean (money rules 3–11; "frozen", "pass",
"daily cap"; recovery codes).

Profiles: ``ci`` (the default, also when ``CI`` is set) fits the suite's time budget;
``HYPOTHESIS_PROFILE=thorough`` runs many more and longer examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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

from coinslot import catalog, chargebacks, ledger, recovery, topups, unlocks
from coinslot.clock import FrozenClock
from coinslot.errors import PaymentNotYetKnown
from coinslot.keyring import KeyRing
from coinslot.payments import REFUND_RETURNED, REFUND_TAKEN, DisputeReport, RefundReport
from coinslot.settings import Settings
from coinslot.store import Store, connect
from coinslot.wallets import RECENT_LEDGER_LINES
from money_model import (
    CAP,
    NEW,
    PASS,
    PUBLISHER,
    PURCHASE,
    READER,
    UNDO_PERIOD_MS,
    UTC_DAY_MS,
    Chargeback,
    Dispute,
    Holding,
    Outcome,
    Receipt,
    Refund,
    Sent,
    SitePass,
    SiteRules,
    Topup,
    Voucher,
    Wallet,
    apply_refund,
    pass_ends,
    site_day,
    undo_verdict,
)

from api import Api, auth
from conftest import make_settings, running_app, unique

# On a CI server the ci profile builds on Hypothesis' own (derandomized, no example database,
# failures printed as a reproducible blob); on a workstation it explores and remembers.
ON_CI = "CI" in os.environ
settings.register_profile(
    "ci",
    settings.get_profile("ci" if ON_CI else "default"),
    max_examples=40,
    stateful_step_count=50,
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

# The tab quota and the daily cap count per site day, in the site's zone. The windows make undos
# possible (or not: 0) for the clock's steps to close; Auckland's outlasts a pass.
SITES = (
    SiteRules(tab_limit=0, timezone="UTC", refund_window_s=0),
    SiteRules(tab_limit=50, timezone="Europe/Berlin", daily_cap=100, refund_window_s=600),
    SiteRules(tab_limit=200, timezone="Pacific/Auckland", daily_cap=150, refund_window_s=2 * 24 * 3600),
)
ITEMS = ("a", "b", "c")
PASS_ITEM = "p"  # every site sells a pass beside its items
ALL_ITEMS = (*ITEMS, PASS_ITEM)
PASS_HOURS = st.integers(1, 30)
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
SHOWN = st.sampled_from(["none", "current", "stale"])  # the price the request names, if any


def canonical(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def unlock_summary(r: httpx.Response) -> Summary:
    body = r.json()
    if r.status_code == 200:
        assert body["token"] and body["currency"] == "EUR"
        replayed = r.headers.get("idempotent-replayed") == "true"
        if body["access_until"] is not None:  # rule 11: a token never outlives the access it proves
            assert body["expires_at"] <= body["access_until"] // 1000, body
        return (
            "ok",
            body["purchase_id"],
            body["charged"],
            body["balance"],
            replayed,
            body["access"],
            body["access_until"],
        )
    kind = body["type"].rsplit("/", 1)[-1]
    if kind == "wallet-daily-limit":
        return (402, kind, body["daily_limit"], body["spent_today"], body["price"])
    if r.status_code == 402:
        assert body["currency"] == "EUR"
        return (402, kind, body["balance"], body["price"])
    if kind == "price-changed":
        return (409, kind, body["price"])
    return (r.status_code, kind)


def ok(outcome: Outcome, replayed: bool) -> Summary:
    o = outcome
    return ("ok", o.purchase_id, o.charged, o.balance, replayed, o.access, o.until)


def refund_summary(r: httpx.Response) -> Summary:
    body = r.json()
    if r.status_code == 200:
        assert body["currency"] == "EUR"
        # A publisher is not told its reader's balance: the model's is compared by every later step.
        return (200, body["purchase_id"], body["refunded"], body.get("balance"))
    return (r.status_code, body["type"].rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Site:
    id: str
    secret: str
    rules: SiteRules


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
            failed_recoveries_per_ip_per_hour=10**6,
            failed_recoveries_per_prefix_per_hour=10**6,
        )
        self.keys = itertools.count()
        self.sites: list[Site] = []
        self.prices: dict[tuple[str, str], int] = {}
        self.pass_hours: dict[str, int] = {}  # site → how long its pass lasts
        self.all_wallets: list[Wallet] = []
        # (site, site day, UTC day) → wallets that asked for a tab: the quota counts per site day, under the
        # address's pseudonym of the UTC day (coinslot.addresses), so it also starts over at 00:00 UTC.
        self.tab_wallets: dict[tuple[str, str, int], set[str]] = {}
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
        for rules in SITES:
            site, secret = await catalog.create_site(
                self.store,
                name="Property site",
                origins=["http://localhost:8001"],
                site_id=unique("site_p"),
                tab_limit=rules.tab_limit,
                timezone=rules.timezone,
                daily_cap=rules.daily_cap,
                refund_window=rules.refund_window_s,
                now_ms=self.clock.now_ms(),
            )
            self.sites.append(Site(site.id, secret, rules))
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

    def site_rules(self, site: str) -> SiteRules:
        return next(s.rules for s in self.sites if s.id == site)

    def tab_limit(self, site: str) -> int:
        return self.site_rules(site).tab_limit

    def today(self, site: str) -> tuple[str, int]:
        """The site's day now, and when it ends (ms)."""
        return site_day(self.site_rules(site).timezone, self.clock.now_ms())

    # Catalog -------------------------------------------------------------------------

    def put_price(self, site_index: int, item: str, price: int, hours: int) -> None:
        """Put an item (or, for ``PASS_ITEM``, the site's pass lasting ``hours``) at ``price``."""
        site = self.sites[site_index]
        body: dict[str, Any] = {"title": f"{item} at {site.id}", "price": price}
        if item == PASS_ITEM:
            body["pass_hours"] = hours
        r = self.call("PUT", f"/v1/admin/items/{item}", site.secret, json=body)
        assert r.status_code == 200, r.text
        assert (r.json()["price"], r.json().get("pass_hours")) == (price, body.get("pass_hours"))
        self.prices[(site.id, item)] = price
        if item == PASS_ITEM:
            self.pass_hours[site.id] = hours

    @initialize(
        prices=st.lists(PRICES, min_size=len(SITES) * len(ALL_ITEMS), max_size=len(SITES) * len(ALL_ITEMS)),
        hours=st.lists(PASS_HOURS, min_size=len(SITES), max_size=len(SITES)),
    )
    def stock_the_sites(self, prices: list[int], hours: list[int]) -> None:
        slots = itertools.product(range(len(SITES)), ALL_ITEMS)
        for (site_index, item), price in zip(slots, prices, strict=True):
            self.put_price(site_index, item, price, hours[site_index])

    @rule(site_index=st.integers(0, len(SITES) - 1), item=st.sampled_from(ALL_ITEMS), price=PRICES, hours=PASS_HOURS)
    def change_price(self, site_index: int, item: str, price: int, hours: int) -> None:
        """A new price (and, for the pass, a new length: passes bought before keep theirs)."""
        self.put_price(site_index, item, price, hours)

    @rule(wallet=wallets, site_index=st.integers(0, len(SITES) - 1))
    def read_offers(self, wallet: Wallet, site_index: int) -> None:
        """The card's view: current prices (right after a change) and what this wallet owns."""
        site = self.sites[site_index].id
        r = self.call("GET", "/v1/offers", wallet.token, params={"site": site, "items": ",".join(ALL_ITEMS)})
        assert r.status_code == 200, r.text
        offers = {o["item"]: (o["price"], o["owned"]) for o in r.json()["items"]}
        now = self.clock.now_ms()
        assert offers == {i: (self.prices[(site, i)], wallet.owns(site, i, now)) for i in ALL_ITEMS}

    @rule(wallet=wallets, limit=st.sampled_from([0, 0, 1, 40, 100, 300]))
    def set_daily_limit(self, wallet: Wallet, limit: int) -> None:
        """The wallet's own daily limit (0 removes it, and what it counted); a changed one keeps today's count."""
        r = self.call("PATCH", "/v1/wallet", wallet.token, json={"daily_limit": limit})
        assert r.status_code == 200, r.text
        if not limit:
            wallet.limit_spent.clear()
        wallet.daily_limit = limit
        today = self.clock.now_ms() // UTC_DAY_MS
        assert (r.json()["daily_limit"], r.json()["spent_today"]) == (limit or None, wallet.limit_spent[today])

    @rule(seconds=st.sampled_from([60, 3600, 6 * 3600, DAY_S + 3600, 8 * DAY_S]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    def edges(self) -> set[int]:
        """The instants (ms) at which what the model grants or allows changes by itself."""
        now = self.clock.now_ms()
        found = {self.today(site.id)[1] for site in self.sites}
        for wallet in self.all_wallets:
            found |= {h.until for h in wallet.holdings.values() if h.until is not None}
            found |= {p.ends for p in wallet.passes.values()}
            found |= {at + UNDO_PERIOD_MS for at in wallet.undos}
            for receipt in wallet.receipts.values():
                window = self.site_rules(receipt.site).refund_window_s
                if window and receipt.refunded_by is None:
                    found.add(receipt.at + window * 1000)
        return {edge for edge in found if edge > now + 1}

    @rule(data=st.data(), just_before=st.booleans())
    def advance_to_an_edge(self, data: st.DataObject, just_before: bool) -> None:
        """To the very millisecond a pass, a free grant, a site's day, an undo window or the 30 days of an undo
        end (or the one before): ``now < end`` holds until then, and no longer."""
        edges = sorted(self.edges())[:6]  # the nearest
        if edges:
            self.clock.ms = data.draw(st.sampled_from(edges), label="edge") - just_before

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
        site, secret = self.sites[site_index].id, self.sites[site_index].secret
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

    def path(self, wallet: Wallet, body: dict[str, Any], key: str | None) -> tuple[str, int]:
        """Which way the model says an unlock goes, and what it would charge, without changing the model.

        In this order: a replay is the recorded outcome; what the wallet owns
        (and a running pass, for any item but a pass) is granted again for nothing, at any price
        shown and even to a frozen wallet; then the price shown, frozen, the daily cap (which a pass
        counts toward but never rides free on) and the balance against the tab.
        """
        site, item, shown = body["site"], body["item"], body.get("price")
        now = self.clock.now_ms()
        if key is not None and key in wallet.recorded:
            return ("replay" if wallet.recorded[key][0] == canonical(body) else "key-reused"), 0
        if wallet.holding(site, item, now) is not None:
            return "owned", 0
        if item != PASS_ITEM and wallet.running_pass(site, now) is not None:
            return "pass", 0
        price = self.prices[(site, item)]
        if shown is not None and shown != price:
            return "price-changed", price
        if wallet.frozen:
            return "frozen", price
        rules, charge = self.site_rules(site), price
        if rules.daily_cap and item != PASS_ITEM:
            charge = min(price, max(0, rules.daily_cap - wallet.spent[(site, self.today(site)[0])]))
            if charge == 0 and price > 0:
                return "cap-free", 0
        if wallet.daily_limit and charge > wallet.daily_limit - wallet.limit_spent[now // UTC_DAY_MS]:
            return "daily-limit", charge
        after = wallet.balance - charge
        if after < 0:
            if after < -rules.tab_limit:
                return "insufficient", charge
            if site not in wallet.tab_sites:
                return "new-tab", charge
        return "buy", charge

    def expect_unlock(self, wallet: Wallet, body: dict[str, Any], key: str | None) -> Summary:
        """The response the model predicts for one unlock; the model takes its effect."""
        site, item = body["site"], body["item"]
        price = self.prices[(site, item)]
        path, charge = self.path(wallet, body, key)
        if path == "key-reused":
            return (409, "idempotency-key-reused")
        if path == "replay":
            assert key is not None
            return ok(wallet.recorded[key][1], True)
        if path == "price-changed":
            return (409, "price-changed", price)
        if path == "insufficient":
            return (402, "insufficient-funds", wallet.balance, charge)
        if path == "daily-limit":
            event("unlock refused: wallet-daily-limit")
            spent = wallet.limit_spent[self.clock.now_ms() // UTC_DAY_MS]
            return (402, "wallet-daily-limit", wallet.daily_limit, spent, charge)
        if path == "frozen":
            event("unlock refused: wallet-frozen")
            return (402, "wallet-frozen", wallet.balance, price)
        if path == "new-tab":
            # A site offers a tab to at most N new wallets per IP per day (every request here comes
            # from one IP); a wallet refused today stays counted, and stays refused, until the day ends.
            utc_day = self.clock.now_ms() // (DAY_S * 1000)
            asked = self.tab_wallets.setdefault((site, self.today(site)[0], utc_day), set())
            asked.add(wallet.id)
            if len(asked) > self.settings.tab_wallets_per_ip:
                return (402, "insufficient-funds", wallet.balance, charge)
            wallet.tab_sites.add(site)
        event(f"unlock: {path}")
        if path == "owned":
            held = wallet.holdings[(site, item)]
            outcome = Outcome(held.id, 0, wallet.balance, held.access, held.until)
        elif path == "pass":
            site_pass = wallet.passes[site]
            wallet.served.add(site_pass.id)  # it can no longer be undone
            outcome = Outcome(site_pass.id, 0, wallet.balance, PASS, site_pass.ends)
        elif path == "cap-free":
            day, ends = self.today(site)
            wallet.holdings[(site, item)] = Holding(NEW, ends, CAP)
            wallet.grants.append(NEW)
            wallet.free_days.add((site, day))
            outcome = Outcome(NEW, 0, wallet.balance, CAP, ends)
        else:
            outcome = self.buy(wallet, site, item, charge)
        if key is not None:
            wallet.recorded[key] = (canonical(body), outcome)
        return ok(outcome, False)

    def buy(self, wallet: Wallet, site: str, item: str, charge: int) -> Outcome:
        now, is_pass = self.clock.now_ms(), item == PASS_ITEM
        day = self.today(site)[0] if self.site_rules(site).daily_cap else None
        ends = pass_ends(now, self.pass_hours[site]) if is_pass else None
        wallet.balance -= charge
        wallet.receipts[NEW] = Receipt(site, item, self.prices[(site, item)], charge, now, ends, day)
        wallet.holdings[(site, item)] = Holding(NEW, ends, PURCHASE)
        if ends is not None:
            current = wallet.passes.get(site)
            if current is None or current.ends < ends:  # the wallet's pass is the one that lasts longest
                wallet.passes[site] = SitePass(NEW, ends)
        if day is not None:
            wallet.spent[(site, day)] += charge
        if wallet.daily_limit:
            wallet.limit_spent[now // UTC_DAY_MS] += charge
        wallet.used_sites.add(site)
        wallet.entries += 1
        self.revenue[site] += charge
        self.entries += 1
        if charge < self.prices[(site, item)]:
            event("the daily cap took part of a price")
        return Outcome(NEW, charge, wallet.balance, PURCHASE, ends)

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
        self.check_unlocks(wallet, expected, responses)

    def check_unlocks(self, wallet: Wallet, expected: list[Summary], responses: list[httpx.Response]) -> None:
        """The responses must be the multiset the model predicts, once it knows the id of what is new."""
        actual = [unlock_summary(r) for r in responses]
        known = {pid for w in self.all_wallets for pid in w.ids() if pid != NEW}
        fresh = {s[1] for s in actual if s[0] == "ok"} - known
        if NEW in wallet.ids():
            assert len(fresh) == 1, (actual, expected)
            (new_id,) = fresh
            wallet.name_new(new_id)
            expected = [tuple(new_id if v == NEW else v for v in s) for s in expected]
        else:
            assert not fresh, (actual, expected)
        # What was charged is the price at that moment (up to the cap), or 0 when owned, covered or free;
        # a replay is the recorded outcome.
        assert Counter(actual) == Counter(expected), (actual, expected)

    def body(self, site_index: int, item: str, shown: str, delta: int) -> dict[str, Any]:
        site = self.sites[site_index].id
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
        wallet=wallets,
        site_index=st.integers(0, len(SITES) - 1),
        items=st.lists(st.sampled_from(ITEMS), min_size=2, max_size=len(ITEMS), unique=True),
        undo_last=st.booleans(),
    )
    def read_several(self, wallet: Wallet, site_index: int, items: list[str], undo_last: bool) -> None:
        """A reader reads several items of one site in a row (reaching the daily cap, or under a pass), and maybe
        takes back its latest purchase there (refused if the cap freed items that day)."""
        for item in items:
            self.unlock(wallet, self.body(site_index, item, "current", 0), None)
        site = self.sites[site_index].id
        made = [pid for pid, receipt in wallet.receipts.items() if receipt.site == site]
        if undo_last and made:
            self.send_undo(wallet, made[-1])

    def unlock_and_see(self, wallet: Wallet, site_index: int, item: str) -> str | None:
        """Unlock at the price shown; the purchase it made, if it made one."""
        before = set(wallet.receipts)
        self.unlock(wallet, self.body(site_index, item, "current", 0), None)
        return next((pid for pid in wallet.receipts if pid not in before), None)

    @rule(
        wallet=wallets,
        site_index=st.sampled_from([i for i, rules in enumerate(SITES) if rules.refund_window_s]),
        item=st.sampled_from(ITEMS),
        times=st.integers(1, 4),
    )
    def buy_and_undo(self, wallet: Wallet, site_index: int, item: str, times: int) -> None:
        """A reader who buys and takes it back, again and again: the fourth undo in 30 days is refused."""
        for _ in range(times):
            made = self.unlock_and_see(wallet, site_index, item)
            if made is None:
                break
            self.send_undo(wallet, made)

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

    # Passes and the card -------------------------------------------------------------

    @rule(
        wallet=wallets,
        site_index=st.integers(0, len(SITES) - 1),
        shown=SHOWN,
        delta=st.integers(1, 50),
        burst=st.booleans(),
        then=st.sampled_from(["nothing", "unlock", "card"]),
        item=st.sampled_from(ITEMS),
    )
    def buy_pass(
        self, wallet: Wallet, site_index: int, shown: str, delta: int, burst: bool, then: str, item: str
    ) -> None:
        """Buy the site's pass: charged unless it still runs (then owned, charged 0), never free under the cap.

        Then, maybe, use it at once (an unlock, or the card opening an item): from then on it cannot be undone.
        """
        self.unlock(wallet, self.body(site_index, PASS_ITEM, shown, delta), None, burst=burst)
        if then == "unlock":
            self.unlock(wallet, self.body(site_index, item, "current", 0), None)
        elif then == "card":
            self.read_card(wallet, site_index, item)

    def undo_offer(self, wallet: Wallet, purchase_id: str) -> dict[str, Any] | None:
        """What the card and the wallet view offer to undo: only what an undo now would do, and only money."""
        receipt = wallet.receipts[purchase_id]
        rules = self.site_rules(receipt.site)
        if (
            receipt.charged == 0
            or undo_verdict(wallet, purchase_id, rules, by=READER, now_ms=self.clock.now_ms()) != "ok"
        ):
            return None
        return {
            "purchase_id": purchase_id,
            "price": receipt.charged,
            "until": receipt.at + rules.refund_window_s * 1000,
        }

    @rule(wallet=wallets, site_index=st.integers(0, len(SITES) - 1), item=st.sampled_from(ALL_ITEMS))
    def read_card(self, wallet: Wallet, site_index: int, item: str) -> None:
        """The card's one read: a returning reader sees what it owns, is covered for (the pass serves then) or
        has free today, with no click; where it stands against the cap; and "Undo" only while an undo would work."""
        site = self.sites[site_index].id
        now = self.clock.now_ms()
        r = self.call("GET", f"/v1/card/{site}/{item}", wallet.token)
        assert r.status_code == 200, r.text
        expected: dict[str, Any] = {"owned": False, "balance": wallet.balance, "cap": None, "site_pass": None}
        rules = self.site_rules(site)
        if rules.daily_cap:
            day, ends = self.today(site)
            spent = wallet.spent[(site, day)]
            cap = {"daily_cap": rules.daily_cap, "spent_today": spent, "free_now": spent >= rules.daily_cap}
            expected["cap"] = {**cap, "day_ends": ends}
        if item != PASS_ITEM:
            price, hours = self.prices[(site, PASS_ITEM)], self.pass_hours[site]
            expected["site_pass"] = {"item": PASS_ITEM, "title": f"p at {site}", "price": price, "pass_hours": hours}
        grant = wallet.grant(site, item, is_pass=item == PASS_ITEM, now_ms=now)
        if grant is not None:
            purchase_id, access, until = grant
            if access == PASS:
                wallet.served.add(purchase_id)
            undo = self.undo_offer(wallet, purchase_id) if access == PURCHASE else None
            expected.update(owned=True, purchase_id=purchase_id, access=access, access_until=until, undo=undo)
            event(f"card: {access}")
            if until is not None:
                assert r.json()["expires_at"] <= until // 1000, r.json()
        assert {k: r.json().get(k) for k in expected} == expected

    # Undo and goodwill refunds (money rule 8) ------------------------------------------

    def expect_refund(self, wallet: Wallet, purchase_id: str, by: str) -> Summary:
        """The answer the model predicts for one refund of ``wallet``'s purchase; the model takes its effect."""
        if purchase_id not in wallet.receipts:
            return (404, "unknown-purchase")  # another wallet's, or a free grant: no purchase of this wallet
        receipt = wallet.receipts[purchase_id]
        verdict = undo_verdict(wallet, purchase_id, self.site_rules(receipt.site), by=by, now_ms=self.clock.now_ms())
        event(f"{by} refund: {verdict}")
        event(f"undos in the 30 days before: {wallet.recent_undos(self.clock.now_ms())}")
        if verdict != "ok":
            return (409, verdict)
        amount = apply_refund(wallet, purchase_id, by=by, now_ms=self.clock.now_ms())
        self.revenue[receipt.site] -= amount
        self.entries += 1
        return (200, purchase_id, amount, wallet.balance)

    def pick_purchase(self, data: st.DataObject, wallet: Wallet) -> str:
        """Mostly the wallet's latest purchase (the one a reader undoes), else any of its purchases; now and then
        a free grant of its, or another wallet's purchase."""
        # Ids are random: lists keep the order things happened in, so that the same draws pick the same.
        mine = list(reversed(wallet.receipts))
        theirs = [pid for w in self.all_wallets if w is not wallet for pid in w.receipts]
        kind = data.draw(st.sampled_from(["latest"] * 4 + ["mine"] * 2 + ["a free grant", "theirs"]), label="which")
        pools = {"latest": mine[:1], "mine": mine, "a free grant": wallet.grants, "theirs": theirs}
        return data.draw(st.sampled_from(pools[kind] or mine), label="purchase")

    @precondition(lambda self: any(w.receipts for w in self.all_wallets))
    @rule(data=st.data(), burst=st.booleans())
    def undo(self, data: st.DataObject, burst: bool) -> None:
        """The reader's undo, or the same undo three times at once: exactly one gives the money back."""
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.receipts]), label="wallet")
        purchase_id = self.pick_purchase(data, wallet)
        self.send_undo(wallet, purchase_id, copies=3 if burst else 1)

    def send_undo(self, wallet: Wallet, purchase_id: str, *, copies: int = 1) -> None:
        """Send one undo (``copies`` times at once) and check the answers against the model's."""
        expected = [self.expect_refund(wallet, purchase_id, READER) for _ in range(copies)]
        url = f"/v1/purchases/{purchase_id}/refund"
        responses = self.gather([self.client.post(url, headers=auth(wallet.token)) for _ in range(copies)])
        actual = [refund_summary(r) for r in responses]
        assert Counter(actual) == Counter(expected), (actual, expected)

    @precondition(lambda self: any(w.receipts for w in self.all_wallets))
    @rule(data=st.data(), right_site=st.sampled_from([True, True, True, False]))
    def goodwill_refund(self, data: st.DataObject, right_site: bool) -> None:
        """A publisher refunds a purchase on its site, at any time, uncounted; another site's is not found."""
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.receipts]), label="wallet")
        purchase_id = data.draw(st.sampled_from(list(wallet.receipts)), label="purchase")
        site = wallet.receipts[purchase_id].site
        if right_site:
            publisher = next(s for s in self.sites if s.id == site)
            expected = self.expect_refund(wallet, purchase_id, PUBLISHER)
        else:
            publisher = next(s for s in self.sites if s.id != site)
            expected = (404, "unknown-purchase")
        r = self.call("POST", f"/v1/admin/purchases/{purchase_id}/refund", publisher.secret)
        if expected[0] == 200:
            expected = (*expected[:3], None)
        assert refund_summary(r) == expected, r.text

    # Recovery codes ------------------------------------------------------------------

    @rule(wallet=wallets)
    def save_recovery_code(self, wallet: Wallet) -> None:
        """A new code; the one saved before stops working."""
        r = self.call("POST", "/v1/wallet/recovery-code", wallet.token)
        assert r.status_code == 201, r.text
        assert r.json()["created_at"] == self.clock.now_ms()
        if wallet.code is not None:
            wallet.old_codes.append(wallet.code)
        wallet.code = r.json()["code"]

    def recovered(self, wallet: Wallet, r: httpx.Response) -> None:
        """A recovery answered: the wallet's new token, at a new generation; every token before it is old."""
        assert r.status_code == 200, r.text
        body = r.json()
        assert {k: body[k] for k in ("wallet_id", "balance", "currency")} == {
            "wallet_id": wallet.id,
            "balance": wallet.balance,
            "currency": "EUR",
        }
        assert body["token"] not in (wallet.token, *wallet.old_tokens)
        wallet.old_tokens.append(wallet.token)
        wallet.token = body["token"]
        wallet.generation += 1

    @precondition(lambda self: any(w.code for w in self.all_wallets))
    @rule(data=st.data(), retyped=st.booleans(), replaced=st.booleans())
    def recover(self, data: st.DataObject, retyped: bool, replaced: bool) -> None:
        """Recover with the saved code (as a person types it, or not), or with one a newer code replaced."""
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.code]), label="wallet")
        assert wallet.code is not None
        code = (
            data.draw(st.sampled_from(wallet.old_codes), label="old code")
            if replaced and wallet.old_codes
            else wallet.code
        )
        sent = code.lower().replace("-", " ") if retyped else code
        r = self.call("POST", "/v1/wallets/recover", json={"code": sent})
        if code != wallet.code:
            assert (r.status_code, r.json()["type"].rsplit("/", 1)[-1]) == (400, "bad-recovery-code"), r.text
            return
        self.recovered(wallet, r)

    @precondition(lambda self: any(w.old_tokens for w in self.all_wallets))
    @rule(
        data=st.data(),
        what=st.sampled_from(["unlock", "undo", "undo another's", "card", "wallet", "recovery code"]),
        site_index=st.integers(0, len(SITES) - 1),
        item=st.sampled_from(ALL_ITEMS),
    )
    def use_an_old_token(self, data: st.DataObject, what: str, site_index: int, item: str) -> None:
        """A token that a recovery ended moves no money, reads nothing and learns nothing: 401 to everything."""
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.old_tokens]), label="wallet")
        token = data.draw(st.sampled_from(wallet.old_tokens), label="old token")
        site = self.sites[site_index].id
        if what == "unlock":
            r = self.call("POST", "/v1/unlocks", token, json={"site": site, "item": item})
        elif what.startswith("undo"):
            pool = (
                list(wallet.receipts)
                if what == "undo"
                else [pid for w in self.all_wallets if w is not wallet for pid in w.receipts]
            )
            purchase_id = data.draw(st.sampled_from(pool), label="purchase") if pool else "pur_none"
            r = self.call("POST", f"/v1/purchases/{purchase_id}/refund", token)
        elif what == "card":
            r = self.call("GET", f"/v1/card/{site}/{item}", token)
        elif what == "wallet":
            r = self.call("GET", "/v1/wallet", token)
        else:
            r = self.call("POST", "/v1/wallet/recovery-code", token)
        assert (r.status_code, r.json()["type"].rsplit("/", 1)[-1]) == (401, "unknown-wallet"), (what, r.text)
        event(f"old token: {what}")

    @precondition(lambda self: any(w.code for w in self.all_wallets))
    @rule(
        data=st.data(),
        site_index=st.integers(0, len(SITES) - 1),
        item=st.sampled_from(ALL_ITEMS),
        unlock_first=st.booleans(),
    )
    def recover_during_an_unlock(self, data: st.DataObject, site_index: int, item: str, unlock_first: bool) -> None:
        """A recovery and an unlock of the token it ends, both in flight: the unlock runs whole before the
        recovery's script or not at all (401), nothing is charged twice, and the model follows the unlock's answer.

        Which script reaches Redis first is drawn, not left to chance: the machine must replay the same steps
        to the same model (test_recovery.py races them freely).
        """
        wallet = data.draw(st.sampled_from([w for w in self.all_wallets if w.code]), label="wallet")
        body = self.body(site_index, item, "none", 0)
        before = (wallet.snapshot(), self.revenue.copy(), self.entries, copy.deepcopy(self.tab_wallets))
        expected = [self.expect_unlock(wallet, body, None)]
        old_token, code = wallet.token, wallet.code
        recover_script = recovery.RECOVER

        async def both() -> tuple[httpx.Response, httpx.Response]:
            unlocked_done, recovered_done = asyncio.Event(), asyncio.Event()

            async def recover_after_the_unlock(*args: Any) -> Any:
                await unlocked_done.wait()
                return await recover_script(*args)

            async def recover() -> httpx.Response:
                try:
                    return await self.client.post("/v1/wallets/recover", json={"code": code})
                finally:
                    recovered_done.set()

            async def unlock() -> httpx.Response:
                try:
                    if not unlock_first:
                        await recovered_done.wait()
                    return await self.client.post("/v1/unlocks", json=body, headers=auth(old_token))
                finally:
                    unlocked_done.set()

            if unlock_first:
                setattr(recovery, "RECOVER", recover_after_the_unlock)
            try:
                return await asyncio.gather(recover(), unlock())
            finally:
                setattr(recovery, "RECOVER", recover_script)

        recovered, unlocked = self.run(both())
        event(f"recovery during an unlock: {'unlock' if unlock_first else 'recovery'} first")
        if unlock_first:
            self.check_unlocks(wallet, expected, [unlocked])
        else:
            assert (unlocked.status_code, unlocked.json()["type"].rsplit("/", 1)[-1]) == (401, "unknown-wallet")
            saved, self.revenue, self.entries, self.tab_wallets = before
            wallet.restore(saved)
        self.recovered(wallet, recovered)

    # Invariants ----------------------------------------------------------------------

    @invariant()
    def wallets_match_the_model(self) -> None:
        """Every wallet's view, and what it owns on every site, read all at once."""
        now = self.clock.now_ms()
        views = self.gather([self.client.get("/v1/wallet", headers=auth(w.token)) for w in self.all_wallets])
        # Nothing can grant a wallet an item of a site it never bought from (a pass is bought, and the cap frees
        # items only after purchases that day): those sites' offers say owned: false, as the model does.
        pairs = [(w, s.id) for w in self.all_wallets for s in self.sites if s.id in w.used_sites]
        offers = self.gather(
            [
                self.client.get(
                    "/v1/offers", params={"site": site, "items": ",".join(ALL_ITEMS)}, headers=auth(w.token)
                )
                for w, site in pairs
            ]
        )
        for wallet, r in zip(self.all_wallets, views, strict=True):
            assert r.status_code == 200, r.text
            view = r.json()
            assert view["wallet_id"] == wallet.id
            assert view["balance"] == wallet.balance, (view["balance"], wallet.balance)
            assert view["frozen"] == wallet.frozen, (view["frozen"], wallet.balance)
            # No balance below the tab limit of the sites it bought from (0 when it never bought), unless a
            # refund or dispute pushed it there, and then it is frozen (and the model said so above).
            floor = -max((self.tab_limit(s) for s in wallet.used_sites), default=0)
            assert view["balance"] >= floor or view["frozen"], (view["balance"], floor)
            receipts: dict[str, tuple[Any, ...]] = {
                p["id"]: (p["site"], p["item"], p["price"], p["charged"], p["at"], p.get("expires_at"))
                + (p.get("refunded_by"), p.get("undo_until"))
                for p in view["purchases"]
            }
            expected: dict[str, tuple[Any, ...]] = {}
            for pid, receipt in wallet.receipts.items():
                offer = self.undo_offer(wallet, pid)
                expected[pid] = (receipt.site, receipt.item, receipt.price, receipt.charged, receipt.at, receipt.ends)
                expected[pid] += (receipt.refunded_by, offer and offer["until"])
            differ = {pid: (receipts.get(pid), expected.get(pid)) for pid in {*receipts, *expected}}
            assert receipts == expected, {pid: pair for pid, pair in differ.items() if pair[0] != pair[1]}
            lines = view["ledger"]  # the most recent first
            assert len(lines) == min(wallet.entries, RECENT_LEDGER_LINES)
            assert not lines or lines[0]["balance"] == wallet.balance
        # Owned: bought and not refunded, a pass item until it ends, free under the cap until the site's day
        # ends, and every item of a site while a pass runs there.
        for (wallet, site), r in zip(pairs, offers, strict=True):
            assert r.status_code == 200, r.text
            owned = {o["item"]: o["owned"] for o in r.json()["items"]}
            assert owned == {i: wallet.owns(site, i, now) for i in ALL_ITEMS}, (wallet.id, site, owned)

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
