"""Refunds and disputes of Stripe top-ups: compensating ledger entries keyed by Stripe's own ids,
posted once in any order, and the frozen wallet they may leave — on standalone Redis and Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from coinslot import keyspace as keys
from coinslot import ledger
from coinslot.clock import FrozenClock
from coinslot.ledger import parse_entry
from coinslot.store import Store

from api import Api, auth
from stripe_stub import StripeStub, charge, dispute, event, refund, sign


@pytest.fixture
def api(stripe_client: httpx.AsyncClient, store: Store, real_time_clock: FrozenClock) -> Api:
    return Api(stripe_client, store, real_time_clock)


async def deliver(client: httpx.AsyncClient, kind: str, obj: dict[str, Any], **envelope: str) -> httpx.Response:
    body = event(kind, obj, **envelope)
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


def alerts(kind: str) -> float:
    return REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": kind}) or 0.0


async def test_one_refund_delivered_50_times_concurrently_and_under_every_name_debits_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    created = refund(pi, amount=500, status="pending", refund_id="re_once")

    answers = await asyncio.gather(*(deliver(stripe_client, "refund.created", created) for _ in range(50)))
    later = [
        await deliver(stripe_client, "refund.created", created),
        await deliver(stripe_client, "refund.updated", {**created, "status": "succeeded"}),
        await deliver(stripe_client, "charge.refund.updated", {**created, "status": "succeeded"}),
        await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500, refunds=[created])),
    ]

    assert {r.status_code for r in answers} == {200}
    assert sorted(r.json()["outcome"] for r in answers) == ["duplicate"] * 49 + ["ok"]
    assert [r.json()["outcome"] for r in later] == ["duplicate"] * 4
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500)]
    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (0, False)
    report = await clean(store)
    assert report.accounts["topup:clearing"]["EUR"] == 0


async def test_two_partial_refunds_by_their_ids_post_one_debit_each_in_any_order(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    in_order, reversed_order = await api.wallet(), await api.wallet()
    pi1 = await paid_topup(stripe_client, stripe_stub, in_order, 1000)
    pi2 = await paid_topup(stripe_client, stripe_stub, reversed_order, 1000)

    for pi, ids in ((pi1, ("re_1a", "re_1a", "re_1b")), (pi2, ("re_2b", "re_2a", "re_2b"))):
        for refund_id in ids:
            amount = 200 if refund_id.endswith("a") else 300
            await deliver(
                stripe_client, "refund.created", refund(pi, amount=amount, status="succeeded", refund_id=refund_id)
            )

    assert await lines(stripe_client, in_order) == [("topup", 1000), ("refund", -200), ("refund", -300)]
    assert await lines(stripe_client, reversed_order) == [("topup", 1000), ("refund", -300), ("refund", -200)]
    assert await api.balance(in_order) == await api.balance(reversed_order) == 500
    await clean(store)


async def test_a_refund_that_fails_later_is_given_back_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    failed_wallet, cancelled_wallet = await api.wallet(), await api.wallet()
    failed_pi = await paid_topup(stripe_client, stripe_stub, failed_wallet, 500)
    cancelled_pi = await paid_topup(stripe_client, stripe_stub, cancelled_wallet, 500)
    failing = refund(failed_pi, amount=200, status="pending", refund_id="re_fails")
    cancelled = refund(cancelled_pi, amount=500, status="requires_action", refund_id="re_cancelled")

    outcomes = []
    for kind, obj in [
        ("refund.created", failing),
        ("refund.failed", {**failing, "status": "failed"}),
        ("refund.updated", {**failing, "status": "failed"}),
        ("charge.refund.updated", {**failing, "status": "failed"}),
        ("refund.updated", {**failing, "status": "succeeded"}),  # a stale, late delivery
        ("refund.created", failing),
        ("refund.created", cancelled),
        ("refund.updated", {**cancelled, "status": "canceled"}),
        ("refund.updated", {**cancelled, "status": "canceled"}),
    ]:
        r = await deliver(stripe_client, kind, obj)
        assert r.status_code == 200, r.text
        outcomes.append(r.json()["outcome"])

    assert outcomes == ["ok", "ok", "duplicate", "duplicate", "duplicate", "duplicate", "ok", "ok", "duplicate"]
    assert await lines(stripe_client, failed_wallet) == [("topup", 500), ("refund", -200), ("refund-failed", 200)]
    assert await lines(stripe_client, cancelled_wallet) == [("topup", 500), ("refund", -500), ("refund-failed", 500)]
    assert await api.balance(failed_wallet) == await api.balance(cancelled_wallet) == 500
    report = await clean(store)
    assert report.accounts["topup:clearing"]["EUR"] == -1000  # both top-ups stand: nothing went back to a card


async def test_a_failure_delivered_50_times_concurrently_gives_back_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    failed = refund(pi, amount=500, status="failed", refund_id="re_f50")
    await deliver(stripe_client, "refund.created", {**failed, "status": "pending"})

    answers = await asyncio.gather(
        *(deliver(stripe_client, ("refund.failed", "refund.updated")[n % 2], failed) for n in range(50))
    )

    assert sorted(r.json()["outcome"] for r in answers) == ["duplicate"] * 49 + ["ok"]
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500), ("refund-failed", 500)]
    assert await api.balance(wallet) == 500
    await clean(store)


async def test_a_failure_delivered_before_its_refund_posts_nothing_ever(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    created = refund(pi, amount=300, status="pending", refund_id="re_dead")

    outcomes = []
    for kind, obj in [
        ("refund.failed", {**created, "status": "failed"}),
        ("refund.created", created),  # the stale events of the refund that already failed
        ("refund.updated", {**created, "status": "succeeded"}),
        ("charge.refunded", charge(pi, amount=500, refunded=300, refunds=[created])),
        ("refund.updated", {**created, "status": "failed"}),
    ]:
        outcomes.append((await deliver(stripe_client, kind, obj)).json()["outcome"])

    assert outcomes == ["void"] * 5
    assert await lines(stripe_client, wallet) == [("topup", 500)]
    assert await api.balance(wallet) == 500
    await clean(store)


async def test_refunds_of_one_topup_never_take_back_more_than_it_paid_across_their_ids(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    await paid_topup(stripe_client, stripe_stub, wallet, 1000)  # money of another top-up is not this one's to refund
    before = alerts("refund-mismatch")

    with caplog.at_level(logging.ERROR, logger="coinslot.chargebacks"):
        first = await deliver(
            stripe_client, "refund.created", refund(pi, amount=300, status="succeeded", refund_id="re_x1")
        )
        over = await asyncio.gather(
            *(
                deliver(stripe_client, "refund.created", refund(pi, amount=300, status="pending", refund_id=f"re_o{n}"))
                for n in range(5)
            )
        )
        fits = await deliver(
            stripe_client, "refund.created", refund(pi, amount=200, status="pending", refund_id="re_x2")
        )

    assert first.json()["outcome"] == "ok"
    assert [r.json()["outcome"] for r in over] == ["mismatch"] * 5
    assert fits.json()["outcome"] == "ok"
    assert alerts("refund-mismatch") == before + 5
    assert len([r for r in caplog.records if "ALERT refund re_o" in r.getMessage()]) == 5
    assert "300 of it refunded before" in next(r.getMessage() for r in caplog.records if "ALERT" in r.getMessage())
    assert await lines(stripe_client, wallet) == [("topup", 500), ("topup", 1000), ("refund", -300), ("refund", -200)]

    # A refund that failed gives its share back: the payer can be refunded it again, once.
    await deliver(stripe_client, "refund.failed", refund(pi, amount=300, status="failed", refund_id="re_x1"))
    again = [
        await deliver(stripe_client, "refund.created", refund(pi, amount=300, status="pending", refund_id=f"re_y{n}"))
        for n in range(2)
    ]

    assert [r.json()["outcome"] for r in again] == ["ok", "mismatch"]
    assert await api.balance(wallet) == 1000
    await clean(store)


async def test_refund_in_another_currency_or_above_the_topup_posts_nothing_and_alerts(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    before = alerts("refund-mismatch")

    with caplog.at_level(logging.ERROR, logger="coinslot.chargebacks"):
        usd = await deliver(
            stripe_client, "refund.created", refund(pi, amount=500, status="pending", refund_id="re_u", currency="usd")
        )
        too_much = await deliver(
            stripe_client, "refund.created", refund(pi, amount=900, status="pending", refund_id="re_m")
        )

    assert [r.json()["outcome"] for r in (usd, too_much)] == ["mismatch", "mismatch"]
    assert alerts("refund-mismatch") == before + 2
    assert len([r for r in caplog.records if r.name == "coinslot.chargebacks" and "ALERT" in r.getMessage()]) == 2
    assert await lines(stripe_client, wallet) == [("topup", 500)]
    await clean(store)


async def test_refund_before_the_credit_is_retried_by_stripe_until_it_applies(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    r = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))
    session = stripe_stub.pay(r.json()["checkout_url"].rsplit("/", 1)[-1])
    created = refund(session["payment_intent"], amount=500, status="succeeded", refund_id="re_early")

    early = [
        await deliver(stripe_client, "refund.created", created),
        await deliver(stripe_client, "refund.failed", {**created, "status": "failed"}),
        await deliver(
            stripe_client,
            "charge.refunded",
            charge(session["payment_intent"], amount=500, refunded=500, refunds=[created]),
        ),
    ]
    assert {(e.status_code, problem_type(e)) for e in early} == {(409, "payment-not-yet-known")}
    assert await lines(stripe_client, wallet) == []

    await deliver(stripe_client, "checkout.session.completed", session)
    retried = await deliver(stripe_client, "refund.created", created)

    assert (retried.status_code, retried.json()["outcome"]) == (200, "ok")
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500)]
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
    r = await deliver(stripe_client, "refund.created", refund(pi, amount=1000, status="pending", refund_id="re_w"))

    assert r.json()["outcome"] == "mismatch"
    assert await lines(stripe_client, wallet) == [("topup", 500)]
    await clean(store)


async def test_charge_refunded_posts_the_refunds_it_embeds_as_their_own_events_would(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 1000)
    ok = refund(pi, amount=200, status="succeeded", refund_id="re_e1")
    failed = refund(pi, amount=300, status="failed", refund_id="re_e2")
    third = refund(pi, amount=100, status="pending", refund_id="re_e3")

    answers = [
        await deliver(stripe_client, "charge.refunded", charge(pi, amount=1000, refunded=200, refunds=[ok, failed])),
        await deliver(stripe_client, "charge.refunded", charge(pi, amount=1000, refunded=200, refunds=[ok, failed])),
        await deliver(stripe_client, "refund.created", {**failed, "status": "pending"}),  # stale: it failed
        await deliver(stripe_client, "refund.created", third),
        await deliver(stripe_client, "charge.refunded", charge(pi, amount=1000, refunded=300, refunds=[third, ok])),
        await deliver(
            stripe_client,
            "charge.refunded",
            charge(pi, amount=1000, refunded=300, refunds=[{**third, "status": "canceled"}]),
        ),
    ]

    assert [r.json()["outcome"] for r in answers] == [
        "ok,void",
        "duplicate,void",
        "void",
        "ok",
        "duplicate,duplicate",
        "ok",
    ]
    assert await lines(stripe_client, wallet) == [
        ("topup", 1000),
        ("refund", -200),
        ("refund", -100),
        ("refund-failed", 100),
    ]
    assert await api.balance(wallet) == 800
    await clean(store)


async def test_charge_refunded_without_embedded_refunds_posts_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    before = alerts("refund-unseen")

    with caplog.at_level(logging.ERROR, logger="coinslot.payments.stripe"):
        bare = await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500))
        empty = await deliver(stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500, refunds=[]))
        assert alerts("refund-unseen") == before  # on this API version the refund.* events carry each refund
        carried = await deliver(
            stripe_client, "refund.created", refund(pi, amount=500, status="succeeded", refund_id="re_n")
        )
        # An endpoint on a version that sends neither: the operator must learn that refunds go unseen.
        gap = await deliver(
            stripe_client, "charge.refunded", charge(pi, amount=500, refunded=500), api_version="2023-10-16"
        )

    assert [(r.status_code, r.json()["outcome"]) for r in (bare, empty, carried, gap)] == [
        (200, "no-refunds-embedded"),
        (200, "no-refunds-embedded"),
        (200, "ok"),
        (200, "no-refunds-embedded"),
    ]
    assert alerts("refund-unseen") == before + 1
    assert any("ALERT" in r.getMessage() and "2023-10-16" in r.getMessage() for r in caplog.records)
    assert await lines(stripe_client, wallet) == [("topup", 500), ("refund", -500)]
    await clean(store)


async def test_a_refund_and_its_failure_racing_each_other_net_to_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    """Whichever of the two lands first, the wallet ends where it started, with 0 or 2 entries."""
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 1000)
    events = []
    for n in range(10):
        created = refund(pi, amount=100, status="pending", refund_id=f"re_race{n}")
        events += [("refund.created", created)] * 3 + [("refund.failed", {**created, "status": "failed"})] * 3
    random.Random(7).shuffle(events)

    answers = await asyncio.gather(*(deliver(stripe_client, kind, obj) for kind, obj in events))

    assert {r.status_code for r in answers} == {200}
    assert await api.balance(wallet) == 1000
    entries = await lines(stripe_client, wallet)
    debits, backs = [a for k, a in entries if k == "refund"], [a for k, a in entries if k == "refund-failed"]
    assert len(debits) == len(backs) <= 10 and sum(debits) == -sum(backs)
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

    await deliver(stripe_client, "refund.created", refund(pi, amount=500, status="succeeded", refund_id="re_frz"))

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


async def test_undoing_a_purchase_that_brings_a_frozen_wallet_back_to_zero_thaws_it(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    site = await api.site()
    await api.item(site, "spent", 300)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    bought = (await api.unlock(wallet, site[0], "spent")).json()
    await deliver(stripe_client, "refund.created", refund(pi, amount=500, status="succeeded", refund_id="re_undo"))
    assert (await wallet_view(stripe_client, wallet))["frozen"] is True

    undone = await stripe_client.post(f"/v1/purchases/{bought['purchase_id']}/refund", headers=auth(wallet))

    assert undone.status_code == 200, undone.text
    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (0, False)
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


async def test_a_refund_given_back_thaws_the_wallet_it_froze(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    site = await api.site()
    await api.item(site, "article", 400)
    await api.item(site, "next", 50)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    await api.unlock(wallet, site[0], "article")
    returned = refund(pi, amount=500, status="pending", refund_id="re_thaw")

    await deliver(stripe_client, "refund.created", returned)
    assert problem_type(await api.unlock(wallet, site[0], "next")) == "wallet-frozen"
    await deliver(stripe_client, "refund.failed", {**returned, "status": "failed"})

    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (100, False)
    assert (await api.unlock(wallet, site[0], "next")).status_code == 200
    await clean(store)


@pytest.mark.parametrize("taken_back", ["refund", "dispute"])
async def test_money_given_back_never_freezes_a_wallet_on_its_tab(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, taken_back: str
) -> None:
    """Only a debit freezes: a refund's give-back or a won dispute leaves a wallet on its tab free to unlock."""
    site = await api.site(tab_limit=100)
    await api.item(site, "article", 250)
    await api.item(site, "next", 10)
    wallet = await api.wallet()
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 200)
    if taken_back == "refund":
        taken = refund(pi, amount=20, status="pending", refund_id="re_tab")
        await deliver(stripe_client, "refund.created", taken)
    else:
        taken = dispute(pi, amount=20, status="needs_response", dispute_id="dp_tab")
        await deliver(stripe_client, "charge.dispute.created", taken)
    assert (await api.unlock(wallet, site[0], "article")).json()["balance"] == -70  # on its tab, not frozen

    if taken_back == "refund":
        await deliver(stripe_client, "refund.failed", {**taken, "status": "failed"})
    else:
        await deliver(stripe_client, "charge.dispute.closed", {**taken, "status": "won"})

    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (-50, False)
    unlocked = await api.unlock(wallet, site[0], "next")
    assert (unlocked.status_code, unlocked.json()["balance"]) == (200, -60)
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
    await deliver(stripe_client, "refund.created", refund(pi, amount=100, status="pending", refund_id="re_c"))  # -50

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
        ("refund.created", refund(refunded, amount=100, status="pending", refund_id=f"re_a{seed}")),
        ("refund.updated", refund(refunded, amount=100, status="succeeded", refund_id=f"re_a{seed}")),
        ("refund.created", refund(refunded, amount=200, status="pending", refund_id=f"re_b{seed}")),
        ("refund.failed", refund(refunded, amount=200, status="failed", refund_id=f"re_b{seed}")),
        ("refund.created", refund(refunded, amount=350, status="succeeded", refund_id=f"re_c{seed}")),
        (
            "charge.refunded",
            charge(
                refunded,
                amount=1000,
                refunded=450,
                refunds=[
                    refund(refunded, amount=350, status="succeeded", refund_id=f"re_c{seed}"),
                    refund(refunded, amount=100, status="succeeded", refund_id=f"re_a{seed}"),
                ],
            ),
        ),
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
    # re_b was debited and given back, or (its failure first) never debited: 100 + 350 went back to the card.
    assert sum(a for k, a in entries if k.startswith("refund")) == -450
    assert sorted(a for k, a in entries if k == "refund") in ([-350, -100], [-350, -200, -100])
    assert [(k, a) for k, a in entries if k.startswith("dispute")] == [("dispute", -500), ("dispute-won", 500)]
    view = await wallet_view(stripe_client, wallet)
    assert (view["balance"], view["frozen"]) == (1050, False)
    await clean(store)


async def _rewrite_ledger(store: Store, wallet_id: str, entries: list[dict[str, Any]]) -> None:
    """Replace a wallet's ledger by ``entries`` with consistent sequence numbers and balances."""
    k = keys.wallet_keys(wallet_id)
    balance, rows = 0, []
    for seq, entry in enumerate(entries, start=1):
        balance += entry["postings"][0]["amount"]
        rows.append(json.dumps({**entry, "seq": seq, "balance": balance}))
    await store.redis.delete(k.ledger)
    await store.redis.rpush(k.ledger, *rows)
    await store.redis.hset(k.wallet, mapping={"balance": balance, "seq": len(rows)})


def _given_back_by(entry: dict[str, Any], amount: int) -> dict[str, Any]:
    wallet_side, counter = entry["postings"]
    postings = [{**wallet_side, "amount": amount}, {**counter, "amount": -amount}]
    return {**entry, "postings": postings}


@pytest.mark.parametrize("tamper", ["debited twice", "given back twice", "given back before its debit", "other amount"])
async def test_reconcile_reports_a_refund_debited_or_given_back_wrongly(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, tamper: str
) -> None:
    wallet = await api.wallet()
    wallet_id = (await wallet_view(stripe_client, wallet))["wallet_id"]
    pi = await paid_topup(stripe_client, stripe_stub, wallet, 500)
    created = refund(pi, amount=200, status="pending", refund_id="re_t")
    await deliver(stripe_client, "refund.created", created)
    await deliver(stripe_client, "refund.failed", {**created, "status": "failed"})
    topup, debit, back = [
        parse_entry(e, wallet_id) or {} for e in await store.redis.lrange(keys.wallet_keys(wallet_id).ledger, 0, -1)
    ]
    await clean(store)

    rewritten = {
        "debited twice": [topup, debit, debit, back],
        "given back twice": [topup, debit, back, back],
        "given back before its debit": [topup, back, debit],
        "other amount": [topup, debit, _given_back_by(back, 150)],
    }[tamper]
    await _rewrite_ledger(store, wallet_id, rewritten)
    report = await ledger.reconcile(store)

    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith(f"wallet:{wallet_id} entry ")
    assert "refund:re_t" in report.problems[0]
