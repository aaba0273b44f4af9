"""What the state machine in test_properties.py found once it modelled undo and recovery (issue 15),
each shrunk to its smallest example — on standalone Redis and Cluster.

All three were fixed where they were found; these keep them fixed.
"""

from __future__ import annotations

import httpx
import pytest

from coinslot import chargebacks, ledger, topups
from coinslot.clock import FrozenClock
from coinslot.payments import RefundReport
from coinslot.store import Store

from api import Api, auth


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def stripe_topup(api: Api, wallet: str, amount: int, payment: str) -> None:
    """A top-up credited as Stripe's webhook credits it: with the PaymentIntent its refunds will name."""
    r = await api.client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))
    assert r.status_code == 201, r.text
    session = httpx.URL(r.json()["checkout_url"]).path.rsplit("/", 1)[-1]
    done = await topups.fulfil(
        api.store, session, amount=amount, currency="EUR", now_ms=api.clock.now_ms(), payment_id=payment
    )
    assert done == topups.Fulfilment.CREDITED


@pytest.mark.parametrize("by", ["reader", "publisher"])
async def test_a_purchase_refund_that_brings_a_frozen_wallet_back_to_zero_thaws_it(api: Api, by: str) -> None:
    # Shrunk from: a wallet topped up with 200 buys a pass for 140, Stripe refunds 150 of the top-up
    # (balance -90, frozen), the publisher refunds the pass (balance 50): the wallet stayed frozen, and
    # reconcile reported "frozen at balance 50 >= 0". A credit and a chargeback's give-back both thaw at >= 0.
    site = await api.site()
    await api.item(site, "a", 140)
    wallet = await api.wallet()
    await stripe_topup(api, wallet, 200, "pi_issue15")
    made = (await api.unlock(wallet, site[0], "a")).json()
    report = RefundReport("re_issue15", "pi_issue15", 150, "EUR", "succeeded")
    assert await chargebacks.refund(api.store, report, now_ms=api.clock.now_ms()) == "ok"
    assert (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["frozen"] is True

    if by == "reader":
        r = await api.client.post(f"/v1/purchases/{made['purchase_id']}/refund", headers=auth(wallet))
    else:
        r = await api.client.post(f"/v1/admin/purchases/{made['purchase_id']}/refund", headers=auth(site[1]))

    assert r.status_code == 200, r.text
    view = (await api.client.get("/v1/wallet", headers=auth(wallet))).json()
    assert (view["balance"], view["frozen"]) == (50, False)
    assert (await ledger.reconcile(api.store)).clean


async def test_a_token_a_recovery_ended_learns_nothing_from_an_undo(api: Api) -> None:
    # Shrunk from: save a code, recover, then undo someone else's purchase with the old token: 404
    # unknown-purchase, while its own purchase answered 401 — so the old token could tell the wallet's
    # purchases from others'. Every call with it must be a 401, as erase and GET /v1/topups/{id} are.
    site = await api.site()
    await api.item(site, "a", 10)
    mine, theirs = await api.wallet(), await api.wallet()
    await api.fund(site, theirs, 100)
    their_purchase = (await api.unlock(theirs, site[0], "a")).json()["purchase_id"]
    code = (await api.client.post("/v1/wallet/recovery-code", headers=auth(mine))).json()["code"]
    assert (await api.client.post("/v1/wallets/recover", json={"code": code})).status_code == 200

    for purchase_id in (their_purchase, "pur_never_made"):
        r = await api.client.post(f"/v1/purchases/{purchase_id}/refund", headers=auth(mine))
        assert (r.status_code, r.json()["type"].rsplit("/", 1)[-1]) == (401, "unknown-wallet")


async def test_a_pass_that_never_served_can_be_undone_after_a_newer_pass_replaced_it(api: Api) -> None:
    # Shrunk from: buy a 1-hour pass, read nothing under it; at its end buy the pass again; undo the first
    # (within the site's 2-day window): 409 refund-pass-used. The card and the wallet view offer no undo either.
    site = await api.site(refund_window=2 * 24 * 3600)
    await api.item(site, "pass", 10, pass_hours=1)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    first = (await api.unlock(wallet, site[0], "pass")).json()
    api.clock.advance(3600)  # the first pass ends, unused
    assert (await api.unlock(wallet, site[0], "pass")).json()["charged"] == 10

    r = await api.client.post(f"/v1/purchases/{first['purchase_id']}/refund", headers=auth(wallet))

    assert r.status_code == 200, r.text
