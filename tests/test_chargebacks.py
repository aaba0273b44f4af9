"""Refunds and disputes of Stripe top-ups: compensating ledger entries keyed by Stripe's own ids,
posted once in any order, and the frozen wallet they may leave — on standalone Redis and Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from coinslot import ledger
from coinslot.clock import FrozenClock
from coinslot.store import Store

from api import Api, auth
from stripe_stub import StripeStub, charge, dispute, event, sign


@pytest.fixture
def api(stripe_client: httpx.AsyncClient, store: Store, real_time_clock: FrozenClock) -> Api:
    return Api(stripe_client, store, real_time_clock)


async def deliver(client: httpx.AsyncClient, kind: str, obj: dict[str, Any]) -> httpx.Response:
    body = event(kind, obj)
    return await client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})


async def paid_topup(client: httpx.AsyncClient, stub: StripeStub, wallet: str, amount: int) -> str:
    """A Stripe top-up, paid and credited through its webhook; returns its PaymentIntent id."""
    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))
    assert r.status_code == 201, r.text
    session = stub.pay(r.json()["checkout_url"].rsplit("/", 1)[-1])
    credited = await deliver(client, "checkout.session.completed", session)
    assert credited.json()["outcome"] == "credited", credited.text
    pi: str = session["payment_intent"]
    return pi


async def wallet_view(client: httpx.AsyncClient, wallet: str) -> dict[str, Any]:
    r = await client.get("/v1/wallet", headers=auth(wallet))
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def lines(client: httpx.AsyncClient, wallet: str) -> list[tuple[str, int]]:
    view = await wallet_view(client, wallet)
    return [(line["kind"], line["amount"]) for line in reversed(view["ledger"])]


async def clean(store: Store) -> ledger.Report:
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    return report


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[-1]


# Refunds ----------------------------------------------------------------------------


async def test_refund_posts_a_compensating_entry_once_however_often_it_arrives(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    refunded = charge(pi, amount=500, refunded=500)

    answers = await asyncio.gather(*(deliver(stripe_client, "charge.refunded", refunded) for _ in range(20)))
    again = await deliver(stripe_client, "charge.refunded", refunded)

    assert {r.status_code for r in answers} == {200}
    assert sorted(r.json()["outcome"] for r in answers) == ["duplicate"] * 19 + ["ok"]
    assert again.json()["outcome"] == "duplicate"
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500)]
    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (0, False)
    report = await clean(store)
    assert report.accounts["topup:clearing"]["EUR"] == 0


async def test_two_partial_refunds_post_their_deltas_in_any_order(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    in_order, reversed_order = await api.wallet(), await api.wallet()
    pi1 = await paid_topup(stripe_client, stripe_stub, in_order, 1000)
    pi2 = await paid_topup(stripe_client, stripe_stub, reversed_order, 1000)

    for refunded in (200, 200, 500):  # the first refund's event delivered twice, then the second refund's
        await deliver(stripe_client, "charge.refunded", charge(pi1, amount=1000, refunded=refunded))
    for refunded in (500, 200):  # the newer event first: the older one has nothing left to post
        await deliver(stripe_client, "charge.refunded", charge(pi2, amount=1000, refunded=refunded))

    assert await lines(stripe_client, in_order) == [("topup", 1000), ("refund", -200), ("refund", -300)]
    assert await lines(stripe_client, reversed_order) == [("topup", 1000), ("refund", -500)]
    assert await api.balance(in_order) == await api.balance(reversed_order) == 500
    await clean(store)


async def test_refund_before_the_credit_is_retried_by_stripe_until_it_applies(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    r = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))
    session = stripe_stub.pay(r.json()["checkout_url"].rsplit("/", 1)[-1])
    refunded = charge(session["payment_intent"], amount=500, refunded=500)

    early = await deliver(stripe_client, "charge.refunded", refunded)
    assert early.status_code == 409
    assert problem_type(early) == "payment-not-yet-known"
    assert await lines(stripe_client, wallet) == []

    await deliver(stripe_client, "checkout.session.completed", session)
    retried = await deliver(stripe_client, "charge.refunded", refunded)

    assert (retried.status_code, retried.json()["outcome"]) == (200, "ok")
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500)]
    await clean(store)


async def test_refund_in_another_currency_or_above_the_topup_posts_nothing_and_alerts(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    before = REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "refund-mismatch"}) or 0.0

    with caplog.at_level(logging.ERROR, logger="coinslot.chargebacks"):
        usd = await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500, currency="usd"))
        too_much = await deliver(stripe_client, "charge.refunded", charge(pi, amount=900, refunded=900))

    assert [r.json()["outcome"] for r in (usd, too_much)] == ["mismatch", "mismatch"]
    assert REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "refund-mismatch"}) == before + 2
    assert len([r for r in caplog.records if r.name == "coinslot.chargebacks" and "ALERT" in r.getMessage()]) == 2
    assert await lines(stripe_client, wallet) == [("topup", 500)]
    await clean(store)


async def test_a_later_report_of_another_amount_does_not_widen_what_a_refund_may_take(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    session = next(s for s in stripe_stub.sessions.values() if s["payment_intent"] == pi)
    # The same session reported again with another amount: not credited again ...
    other = await deliver(stripe_client, "checkout.session.async_payment_succeeded", {**session, "amount_total": 5000})
    assert other.json()["outcome"] == "already-credited"

    # ... and a refund of more than the 500 top-up is still refused against the stored amount.
    refund = await deliver(stripe_client, "charge.refunded", charge(pi, amount=5000, refunded=1000))

    assert refund.json()["outcome"] == "mismatch"
    assert await lines(stripe_client, wallet) == [("topup", 500)]
    await clean(store)


async def test_a_refund_that_fails_later_alerts_once_and_moves_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=200))
    before = REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "refund-failed"}) or 0.0
    refund = {"id": "re_late", "object": "refund", "amount": 200, "currency": "eur", "payment_intent": pi}

    with caplog.at_level(logging.ERROR, logger="coinslot.chargebacks"):
        answers = [
            await deliver(stripe_client, "charge.refund.updated", {**refund, "status": "succeeded"}),
            await deliver(stripe_client, "charge.refund.updated", {**refund, "status": "failed"}),
            await deliver(stripe_client, "charge.refund.updated", {**refund, "status": "failed"}),
            await deliver(
                stripe_client, "charge.refund.updated", {**refund, "status": "failed", "payment_intent": "pi_x"}
            ),
        ]

    assert [(r.status_code, r.json()["outcome"]) for r in answers] == [
        (200, "ignored"),
        (200, "alerted"),
        (200, "duplicate"),
        (200, "ignored"),
    ]
    assert REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": "refund-failed"}) == before + 1
    alert = [r.getMessage() for r in caplog.records if "ALERT refund re_late" in r.getMessage()]
    assert len(alert) == 1 and pi in alert[0] and "debited" in alert[0]
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -200)]
    await clean(store)


# Disputes ---------------------------------------------------------------------------


async def test_dispute_lost_and_dispute_won_post_the_right_entries(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    lost_wallet, won_wallet = await api.wallet(), await api.wallet()
    lost_pi = await paid_topup(stripe_client, stripe_stub, lost_wallet, 500)
    won_pi = await paid_topup(stripe_client, stripe_stub, won_wallet, 1000)

    outcomes = []
    for kind, status in [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.closed", "lost"),
        ("charge.dispute.closed", "lost"),
    ]:
        r = await deliver(stripe_client, kind, dispute(lost_pi, amount=500, status=status, dispute_id="dp_lost"))
        outcomes.append(r.json()["outcome"])
    for kind, status in [
        ("charge.dispute.created", "needs_response"),
        ("charge.dispute.closed", "won"),
        ("charge.dispute.closed", "won"),
        ("charge.dispute.created", "needs_response"),  # a late retry of the first event
    ]:
        r = await deliver(stripe_client, kind, dispute(won_pi, amount=1000, status=status, dispute_id="dp_won"))
        outcomes.append(r.json()["outcome"])

    assert outcomes == ["ok", "duplicate", "duplicate", "duplicate", "ok", "ok", "duplicate", "duplicate"]
    assert await lines(stripe_client, lost_wallet) == [("topup", 500), ("dispute", -500)]
    assert await lines(stripe_client, won_wallet) == [("topup", 1000), ("dispute", -1000), ("dispute-won", 1000)]
    assert (await api.balance(lost_wallet), await api.balance(won_wallet)) == (0, 1000)
    report = await clean(store)
    assert report.accounts["topup:disputes"]["EUR"] == 500


async def test_dispute_closed_before_created_still_posts_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    won_wallet, lost_wallet = await api.wallet(), await api.wallet()
    won_pi = await paid_topup(stripe_client, stripe_stub, won_wallet, 500)
    lost_pi = await paid_topup(stripe_client, stripe_stub, lost_wallet, 500)

    for pi, wallet_status in ((won_pi, "won"), (lost_pi, "lost")):
        dp = "dp_" + wallet_status
        await deliver(
            stripe_client, "charge.dispute.closed", dispute(pi, amount=300, status=wallet_status, dispute_id=dp)
        )
        await deliver(
            stripe_client, "charge.dispute.created", dispute(pi, amount=300, status="needs_response", dispute_id=dp)
        )

    assert await lines(stripe_client, won_wallet) == [("topup", 500), ("dispute", -300), ("dispute-won", 300)]
    assert await lines(stripe_client, lost_wallet) == [("topup", 500), ("dispute", -300)]
    await clean(store)


async def test_an_inquiry_moves_no_money(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)

    opened = await deliver(
        stripe_client,
        "charge.dispute.created",
        dispute(pi, amount=500, status="warning_needs_response", dispute_id="dp_i"),
    )
    closed = await deliver(
        stripe_client, "charge.dispute.closed", dispute(pi, amount=500, status="warning_closed", dispute_id="dp_i")
    )

    assert [r.json()["outcome"] for r in (opened, closed)] == ["inquiry", "inquiry"]
    assert await lines(stripe_client, wallet) == [("topup", 500)]


# Frozen wallets -----------------------------------------------------------------------


async def test_refund_of_spent_money_freezes_the_wallet_until_a_topup_covers_it(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    site = await api.site()
    await api.item(site, "spent", 300)
    await api.item(site, "next", 50)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    assert (await api.unlock(wallet, site[0], "spent")).status_code == 200

    await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500))

    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (-300, True)
    refused = await api.unlock(wallet, site[0], "next")
    assert refused.status_code == 402
    assert problem_type(refused) == "wallet-frozen"
    assert (refused.json()["balance"], refused.json()["price"]) == (-300, 50)
    assert "-300" in refused.json()["detail"]
    assert refused.json()["topup_options"][0]["amount"] >= 350
    owned = await api.unlock(wallet, site[0], "spent")  # what was bought stays readable
    assert (owned.status_code, owned.json()["charged"]) == (200, 0)
    await clean(store)

    await paid_topup(stripe_client, stripe_stub, wallet, 200)  # -100: still below zero
    assert (await wallet_view(stripe_client, wallet))["frozen"] is True
    assert problem_type(await api.unlock(wallet, site[0], "next")) == "wallet-frozen"
    await paid_topup(stripe_client, stripe_stub, wallet, 500)  # 400: thawed

    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (400, False)
    unlocked = await api.unlock(wallet, site[0], "next")
    assert (unlocked.status_code, unlocked.json()["balance"]) == (200, 350)
    await clean(store)


async def test_a_won_dispute_thaws_the_wallet_it_froze(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    site = await api.site()
    await api.item(site, "article", 400)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    await api.unlock(wallet, site[0], "article")

    await deliver(
        stripe_client, "charge.dispute.created", dispute(pi, amount=500, status="needs_response", dispute_id="dp_f")
    )
    assert (await wallet_view(stripe_client, wallet))["frozen"] is True
    await deliver(stripe_client, "charge.dispute.closed", dispute(pi, amount=500, status="won", dispute_id="dp_f"))

    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (100, False)
    await clean(store)


async def test_frozen_wallet_unlocks_concurrently_all_refused_and_nothing_moves(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    site = await api.site(tab_limit=1000)  # even a generous tab does not let a frozen wallet buy
    for n in range(10):
        await api.item(site, f"a{n}", 10)
    await api.item(site, "big", 450)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    await api.unlock(wallet, site[0], "big")
    await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=100))  # balance -50

    answers = await asyncio.gather(*(api.unlock(wallet, site[0], f"a{n}") for n in range(10)))

    assert {(r.status_code, problem_type(r)) for r in answers} == {(402, "wallet-frozen")}
    assert await api.balance(wallet) == -50
    await clean(store)


async def test_reconcile_reports_a_frozen_wallet_at_or_above_zero(
    api: Api, stripe_client: httpx.AsyncClient, store: Store
) -> None:
    wallet = await api.wallet()
    wallet_id = (await wallet_view(stripe_client, wallet))["wallet_id"]
    await store.redis.hset("{w:" + wallet_id + "}", "frozen", "1")

    report = await ledger.reconcile(store)

    assert not report.clean
    assert report.problems == [f"wallet:{wallet_id}: frozen at balance 0 >= 0"]


@pytest.mark.parametrize("seed", range(5))
async def test_any_order_of_payment_refund_and_dispute_events_settles_the_same(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, seed: int
) -> None:
    """Stripe delivers at least once, in any order, concurrently; it retries what is not answered 2xx."""
    wallet = await api.wallet()
    sessions = []
    for amount in (1000, 500):
        r = await stripe_client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))
        sessions.append(stripe_stub.pay(r.json()["checkout_url"].rsplit("/", 1)[-1]))
    refunded, disputed = sessions[0]["payment_intent"], sessions[1]["payment_intent"]
    events = [
        *[("checkout.session.completed", s) for s in sessions for _ in range(2)],
        *[("charge.refunded", charge(refunded, amount=1000, refunded=total)) for total in (100, 300, 300, 450)],
        ("charge.dispute.created", dispute(disputed, amount=500, status="needs_response", dispute_id=f"dp_{seed}")),
        ("charge.dispute.closed", dispute(disputed, amount=500, status="won", dispute_id=f"dp_{seed}")),
        ("charge.dispute.closed", dispute(disputed, amount=500, status="won", dispute_id=f"dp_{seed}")),
    ]
    random.Random(seed).shuffle(events)

    pending, rounds = events, 0
    while pending:
        rounds += 1
        answers = await asyncio.gather(*(deliver(stripe_client, kind, obj) for kind, obj in pending))
        assert {r.status_code for r in answers} <= {200, 409}
        pending = [e for e, r in zip(pending, answers, strict=True) if r.status_code == 409]
        assert rounds <= 3

    entries = await lines(stripe_client, wallet)
    assert sorted(a for k, a in entries if k == "topup") == [500, 1000]
    assert sum(a for k, a in entries if k == "refund") == -450
    assert [(k, a) for k, a in entries if k.startswith("dispute")] == [("dispute", -500), ("dispute-won", 500)]
    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (1050, False)
    await clean(store)
