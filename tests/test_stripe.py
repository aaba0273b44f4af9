"""Stripe Checkout top-ups: sessions as Stripe is asked for them, webhooks credited exactly once
(money rule 5), the return page, ``reconcile --stripe`` and the card-testing limits.

The real ``stripe`` library talks to a local stub of Stripe's API; events are signed as
Stripe signs them. Where money moves, tests run on standalone Redis and on Cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from starlette.datastructures import Secret

from coinslot import ledger, topups
from coinslot.clock import FrozenClock
from coinslot.errors import BadWebhook
from coinslot.payments import PaymentEvent
from coinslot.payments import stripe as stripe_payments
from coinslot.payments.stripe import StripeCheckout
from coinslot.store import Store

from api import Api, auth
from conftest import PUBLIC_URL, make_settings, running_app, stripe_settings
from stripe_stub import WEBHOOK_SECRET, StripeStub, event, sign


@pytest.fixture
def api(stripe_client: httpx.AsyncClient, store: Store, real_time_clock: FrozenClock) -> Api:
    return Api(stripe_client, store, real_time_clock)


async def start_topup(client: httpx.AsyncClient, wallet: str, amount: int = 500) -> dict[str, Any]:
    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def session_of(stub: StripeStub, topup: dict[str, Any]) -> str:
    session_id: str = topup["checkout_url"].rsplit("/", 1)[-1]
    assert session_id in stub.sessions
    return session_id


async def deliver(
    client: httpx.AsyncClient,
    kind: str,
    obj: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    body = event(kind, obj)
    signature = sign(body, secret=secret, timestamp=timestamp)
    return await client.post(
        "/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": signature, "Content-Type": "application/json"}
    )


async def status_of(client: httpx.AsyncClient, wallet: str, topup_id: str) -> dict[str, Any]:
    r = await client.get(f"/v1/topups/{topup_id}", headers=auth(wallet))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[-1]


async def clean_entries(store: Store) -> int:
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    return report.entries


def alerts(kind: str) -> float:
    return REGISTRY.get_sample_value("coinslot_alerts_total", {"kind": kind}) or 0.0


# Creating the Checkout Session --------------------------------------------------------


async def test_topup_opens_a_stripe_checkout_session_as_specified(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, real_time_clock: FrozenClock
) -> None:
    wallet = await api.wallet()
    wallet_id = (await stripe_client.get("/v1/wallet", headers=auth(wallet))).json()["wallet_id"]

    topup = await start_topup(stripe_client, wallet, 1000)

    [created] = stripe_stub.created()
    form = created.form
    session = stripe_stub.session(session_of(stripe_stub, topup))
    assert topup["checkout_url"] == session["url"]
    assert (topup["status"], topup["awaiting_payment"]) == ("pending", False)
    assert created.headers["idempotency-key"] == topup["topup_id"]
    assert created.headers["authorization"] == "Bearer sk_test_coinslot_stub"
    assert form["mode"] == "payment"
    assert form["line_items[0][quantity]"] == "1"
    assert form["line_items[0][price_data][currency]"] == "eur"
    assert form["line_items[0][price_data][unit_amount]"] == "1000"
    assert form["line_items[0][price_data][product_data][name]"] == "Coinslot wallet top-up"
    assert not any(k.startswith(("line_items[0][price]", "payment_method_types")) for k in form)
    assert form["client_reference_id"] == wallet_id
    for prefix in ("metadata", "payment_intent_data[metadata]"):
        assert form[f"{prefix}[topup_id]"] == topup["topup_id"]
        assert form[f"{prefix}[wallet_id]"] == wallet_id
    assert int(form["expires_at"]) == real_time_clock.now_ms() // 1000 + 3600 == topup["expires_at"]
    assert form["success_url"] == f"{PUBLIC_URL}/checkout/return?session_id={{CHECKOUT_SESSION_ID}}"
    assert form["cancel_url"] == f"{PUBLIC_URL}/checkout/return?cancelled=1"


async def test_racing_opens_of_one_topup_link_make_one_stripe_session(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    site = await api.site()
    await api.item(site, "article", 150)
    wallet = await api.wallet()
    option = (await api.unlock(wallet, site[0], "article")).json()["topup_options"][0]
    path = option["url"].removeprefix(PUBLIC_URL)

    racing = await asyncio.gather(*(stripe_client.get(path) for _ in range(10)))
    later = await stripe_client.get(path)

    assert {r.status_code for r in (*racing, later)} == {303}
    assert {r.headers["location"] for r in (*racing, later)} == {racing[0].headers["location"]}
    assert len(stripe_stub.sessions) == 1
    assert {r.headers["idempotency-key"] for r in stripe_stub.created()} == {option["topup_id"]}
    [session_id] = stripe_stub.sessions
    paid = await deliver(stripe_client, "checkout.session.completed", stripe_stub.pay(session_id))
    assert paid.json()["outcome"] == "credited"  # the losers of the race left the session known
    assert await api.balance(wallet) == 200


async def test_topup_link_retried_after_a_lost_answer_gets_the_session_stripe_made(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, real_time_clock: FrozenClock
) -> None:
    """Stripe replays an Idempotency-Key only with the same parameters: the retry must ask alike."""
    site = await api.site()
    await api.item(site, "article", 150)
    wallet = await api.wallet()
    option = (await api.unlock(wallet, site[0], "article")).json()["topup_options"][0]
    path = option["url"].removeprefix(PUBLIC_URL)
    stripe_stub.lost_creates = 3  # Stripe makes the session, but no answer reaches us, nor the library's retries

    lost = await stripe_client.get(path)
    real_time_clock.advance(5 * 60)  # the reader tries again minutes later
    retried = await stripe_client.get(path)

    assert lost.status_code == 503
    assert retried.status_code == 303, retried.text
    [session] = stripe_stub.sessions.values()
    assert retried.headers["location"] == session["url"]
    assert len(stripe_stub.created()) == 4
    assert {r.headers["idempotency-key"] for r in stripe_stub.created()} == {option["topup_id"]}


async def test_a_topup_retried_with_its_idempotency_key_opens_one_checkout(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    headers = {**auth(wallet), "Idempotency-Key": "topup-1"}

    first, again = [await stripe_client.post("/v1/topups", json={"amount": 500}, headers=headers) for _ in range(2)]
    racing = await asyncio.gather(
        *(stripe_client.post("/v1/topups", json={"amount": 500}, headers=headers) for _ in range(10))
    )

    assert first.status_code == again.status_code == 201
    assert {r.json()["topup_id"] for r in (first, again, *racing)} == {first.json()["topup_id"]}
    assert {r.json()["checkout_url"] for r in (first, again, *racing)} == {first.json()["checkout_url"]}
    assert len(stripe_stub.sessions) == 1
    other = await stripe_client.post("/v1/topups", json={"amount": 1000}, headers=headers)
    assert other.status_code == 409 and problem_type(other) == "idempotency-key-reused"
    another_key = await stripe_client.post(
        "/v1/topups", json={"amount": 500}, headers={**auth(wallet), "Idempotency-Key": "topup-2"}
    )
    assert another_key.json()["topup_id"] != first.json()["topup_id"] and len(stripe_stub.sessions) == 2


async def test_a_topup_whose_checkout_failed_is_retried_under_the_same_key_as_one(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    headers = {**auth(wallet), "Idempotency-Key": "topup-after-outage"}
    for _ in range(3):  # the first try and the library's two retries
        stripe_stub.fail_next(500, "api_error")
    failed = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=headers)
    assert failed.status_code == 503

    retried = [await stripe_client.post("/v1/topups", json={"amount": 500}, headers=headers) for _ in range(2)]

    assert [r.status_code for r in retried] == [201, 201]
    assert retried[0].json()["topup_id"] == retried[1].json()["topup_id"]
    assert len(stripe_stub.sessions) == 1
    # Every create asked Stripe under the same key with the same parameters, as its idempotency requires.
    assert len({(r.headers["idempotency-key"], tuple(sorted(r.form.items()))) for r in stripe_stub.created()}) == 1


@pytest.mark.parametrize(
    ("status", "error", "answer", "kind"),
    [
        (500, "api_error", 503, "payments-unavailable"),
        (429, "rate_limit_error", 503, "payments-unavailable"),
        (401, "authentication_error", 502, "payments-refused"),
        (400, "invalid_request_error", 502, "payments-refused"),
    ],
)
async def test_stripe_errors_are_problems_and_open_no_topup(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, status: int, error: str, answer: int, kind: str
) -> None:
    wallet = await api.wallet()
    for _ in range(3):  # enough for the first try and the library's two retries (of 5xx answers only)
        stripe_stub.fail_next(status, error)

    r = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))

    assert r.status_code == answer
    assert problem_type(r) == kind
    assert "sk_test" not in r.text
    assert stripe_stub.sessions == {}
    view = (await stripe_client.get("/v1/wallet", headers=auth(wallet))).json()
    assert (view["balance"], view["ledger"]) == (0, [])


@pytest.mark.parametrize(
    "changes",
    [{"expires_at": None}, {"url": None}, {"id": None}, {"expires_at": "tomorrow"}, {"url": 42}, {"url": "/c/pay"}],
    ids=["no-expires_at", "no-url", "no-id", "expires_at-not-a-number", "url-not-a-string", "url-relative"],
)
async def test_a_checkout_session_stripe_answers_without_what_we_need_is_a_502(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, changes: dict[str, Any]
) -> None:
    wallet = await api.wallet()
    stripe_stub.garbled_creates.append(changes)

    r = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))

    assert r.status_code == 502, r.text
    assert problem_type(r) == "payments-refused"
    view = (await stripe_client.get("/v1/wallet", headers=auth(wallet))).json()
    assert (view["balance"], view["ledger"]) == (0, [])
    # Nothing half-made stands in the way of the reader's next try.
    again = await stripe_client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))
    assert again.status_code == 201, again.text


async def test_stripe_down_on_a_topup_link_is_a_503_page(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    site = await api.site()
    await api.item(site, "article", 150)
    wallet = await api.wallet()
    option = (await api.unlock(wallet, site[0], "article")).json()["topup_options"][0]
    for _ in range(3):
        stripe_stub.fail_next(503, "api_error")

    r = await stripe_client.get(option["url"].removeprefix(PUBLIC_URL))
    retried = await stripe_client.get(option["url"].removeprefix(PUBLIC_URL))

    assert r.status_code == 503
    assert r.headers["content-type"].startswith("text/html")
    assert "No money was taken" in r.text
    assert retried.status_code == 303  # the same link works once Stripe answers again


# Webhooks: exactly once (money rule 5) -------------------------------------------------


async def test_completed_50_times_at_once_plus_async_succeeded_plus_return_page_credit_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    paid = stripe_stub.pay(session_id)

    answers = await asyncio.gather(
        *(deliver(stripe_client, "checkout.session.completed", paid) for _ in range(50)),
        deliver(stripe_client, "checkout.session.async_payment_succeeded", paid),
        stripe_client.get(f"/checkout/return?session_id={session_id}"),
    )

    assert {r.status_code for r in answers} == {200}
    outcomes = [r.json()["outcome"] for r in answers[:51]]
    assert outcomes.count("credited") <= 1
    assert set(outcomes) <= {"credited", "already-credited"}
    assert "Payment received" in answers[-1].text
    assert await api.balance(wallet) == 500
    assert await clean_entries(store) == 1
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "paid"


async def test_events_out_of_order_credit_once_and_paid_stays_paid(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 200)
    session_id = session_of(stripe_stub, topup)
    unpaid = stripe_stub.pay(session_id, payment_status="unpaid")
    paid = stripe_stub.settle(session_id, paid=True)

    # Stripe does not promise order: the success first, then the older "completed, unpaid".
    first = await deliver(stripe_client, "checkout.session.async_payment_succeeded", paid)
    later = await deliver(stripe_client, "checkout.session.completed", unpaid)
    stale_expiry = await deliver(stripe_client, "checkout.session.expired", {**unpaid, "status": "expired"})

    assert [r.json()["outcome"] for r in (first, later, stale_expiry)] == ["credited", "paid", "paid"]
    status = await status_of(stripe_client, wallet, topup["topup_id"])
    assert (status["status"], status["awaiting_payment"]) == ("paid", False)
    assert await api.balance(wallet) == 200
    assert await clean_entries(store) == 1


async def test_unpaid_completion_stays_pending_until_async_payment_succeeds(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, real_time_clock: FrozenClock
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 1000)
    session_id = session_of(stripe_stub, topup)
    unpaid = stripe_stub.pay(session_id, payment_status="unpaid")

    r = await deliver(stripe_client, "checkout.session.completed", unpaid)
    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")

    assert r.json()["outcome"] == "pending"
    assert "on its way" in page.text
    real_time_clock.advance(3 * 24 * 3600)  # SEPA takes days, well past the session's expiry
    status = await status_of(stripe_client, wallet, topup["topup_id"])
    assert (status["status"], status["awaiting_payment"]) == ("pending", True)
    assert await api.balance(wallet) == 0

    succeeded = await deliver(
        stripe_client, "checkout.session.async_payment_succeeded", stripe_stub.settle(session_id, paid=True)
    )

    assert succeeded.json()["outcome"] == "credited"
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "paid"
    assert await api.balance(wallet) == 1000
    assert await clean_entries(store) == 1


async def test_async_payment_failed_is_failed_and_credits_nothing_ever(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    unpaid = stripe_stub.pay(session_id, payment_status="unpaid")
    await deliver(stripe_client, "checkout.session.completed", unpaid)

    failed = await deliver(stripe_client, "checkout.session.async_payment_failed", unpaid)
    replayed = await deliver(stripe_client, "checkout.session.completed", unpaid)
    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")  # Stripe still says unpaid

    assert [r.json()["outcome"] for r in (failed, replayed)] == ["failed", "failed"]
    assert "No payment was taken" in page.text
    status = await status_of(stripe_client, wallet, topup["topup_id"])
    assert (status["status"], status["awaiting_payment"]) == ("failed", False)
    assert await api.balance(wallet) == 0
    assert await clean_entries(store) == 0


async def test_a_failed_session_that_stripe_later_reports_paid_is_credited_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    """Only Stripe's word that money arrived credits; when it says so (signed), the money is the reader's."""
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    unpaid = stripe_stub.pay(session_id, payment_status="unpaid")
    await deliver(stripe_client, "checkout.session.async_payment_failed", unpaid)

    paid = stripe_stub.settle(session_id, paid=True)
    answers = [await deliver(stripe_client, "checkout.session.async_payment_succeeded", paid) for _ in range(2)]

    assert [r.json()["outcome"] for r in answers] == ["credited", "already-credited"]
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "paid"
    assert await clean_entries(store) == 1


async def test_return_page_for_a_paid_amount_that_differs_says_it_is_under_review(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    stripe_stub.pay(session_id)
    stripe_stub.sessions[session_id]["amount_total"] = 499

    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")

    assert "under review" in page.text
    assert await api.balance(wallet) == 0
    assert await clean_entries(store) == 0


async def test_expired_session_is_expired_and_credits_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    expired = stripe_stub.expire(session_id)

    r = await deliver(stripe_client, "checkout.session.expired", expired)
    again = await deliver(stripe_client, "checkout.session.expired", expired)
    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")

    assert [x.json()["outcome"] for x in (r, again)] == ["expired", "expired"]
    assert "expired" in page.text
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "expired"
    assert await api.balance(wallet) == 0
    assert await clean_entries(store) == 0


async def test_a_paid_session_reported_late_still_credits(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, real_time_clock: FrozenClock
) -> None:
    """Paid at the last second, reported after expires_at: Stripe took the money, so it is credited."""
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    paid = stripe_stub.pay(session_id)
    real_time_clock.advance(3601)
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "expired"

    r = await deliver(stripe_client, "checkout.session.completed", paid)

    assert r.json()["outcome"] == "credited"
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "paid"
    assert await api.balance(wallet) == 500


def _tampered(body: str) -> str:
    return body.replace('"amount_total": 500', '"amount_total": 5000')


@pytest.mark.parametrize(
    "attack",
    ["tampered-body", "wrong-secret", "301-seconds-old", "no-signature", "garbage-signature", "v0-only"],
)
async def test_bad_or_stale_signature_is_400_and_nothing_changes(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, attack: str
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    paid = stripe_stub.pay(session_of(stripe_stub, topup))
    body = event("checkout.session.completed", paid)
    header = sign(body)
    if attack == "tampered-body":
        body = _tampered(body)
        assert '"amount_total": 5000' in body
    elif attack == "wrong-secret":
        header = sign(body, secret="whsec_someone_else")
    elif attack == "301-seconds-old":
        header = sign(body, timestamp=int(time.time()) - 301)
    elif attack == "garbage-signature":
        header = "not a signature"
    elif attack == "v0-only":
        header = header.replace("v1=", "v0=")
    headers = {"Content-Type": "application/json"}
    if attack != "no-signature":
        headers["Stripe-Signature"] = header

    r = await stripe_client.post("/v1/webhooks/stripe", content=body, headers=headers)

    assert r.status_code == 400
    assert problem_type(r) == "bad-webhook"
    assert WEBHOOK_SECRET not in r.text
    assert await api.balance(wallet) == 0
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "pending"
    assert await clean_entries(store) == 0


async def test_signature_within_300_seconds_is_accepted(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    paid = stripe_stub.pay(session_of(stripe_stub, topup))

    r = await deliver(stripe_client, "checkout.session.completed", paid, timestamp=int(time.time()) - 280)

    assert (r.status_code, r.json()["outcome"]) == (200, "credited")


async def test_a_rolled_webhook_secret_accepts_old_and_new_signatures(
    tmp_path: Path, store: Store, real_time_clock: FrozenClock, keyring: Any, stripe_stub: StripeStub
) -> None:
    settings = stripe_settings(tmp_path, stripe_stub)
    rolled = dataclasses.replace(settings, stripe_webhook_secret=Secret(f"whsec_new, {WEBHOOK_SECRET}"))
    async with running_app(rolled, store, real_time_clock, keyring) as client:
        old = await deliver(client, "customer.created", {"id": "cus_1"})
        new = await deliver(client, "customer.created", {"id": "cus_2"}, secret="whsec_new")
        other = await deliver(client, "customer.created", {"id": "cus_3"}, secret="whsec_other")

    assert [r.status_code for r in (old, new, other)] == [200, 200, 400]


async def test_signed_body_that_is_not_an_event_is_400(stripe_client: httpx.AsyncClient) -> None:
    body = "this is not json"

    r = await stripe_client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})

    assert r.status_code == 400
    assert problem_type(r) == "bad-webhook"


def _envelope(kind: str, obj: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(event(kind, {}))
    body["data"]["object"] = obj
    return body


def _malformed(case: str, paid: dict[str, Any]) -> str:
    """A correctly signed body, shaped wrong in one way, about a credited session and its charge."""
    pi = paid["payment_intent"]
    re = {"id": "re_x", "object": "refund", "amount": 100, "currency": "eur", "payment_intent": pi, "status": "pending"}
    ch = {"id": "ch_x", "object": "charge", "amount": 500, "currency": "eur", "payment_intent": pi}
    dp = {"id": "dp_x", "object": "dispute", "amount": 500, "currency": "eur", "payment_intent": pi, "status": "lost"}
    done = "checkout.session.completed"
    whole = {
        "json-list": "[]",
        "json-null": "null",
        "json-number": "5",
        "json-string": '"event"',
        "empty-object": "{}",
        "deeply-nested": "[" * 100_000 + "]" * 100_000,
    }
    if case in whole:
        return whole[case]
    envelope = _envelope(done, paid)
    changed: dict[str, Any] = {
        "no-type": {k: v for k, v in envelope.items() if k != "type"},
        "no-data": {k: v for k, v in envelope.items() if k != "data"},
        "data-null": {**envelope, "data": None},
        "data-list": {**envelope, "data": [paid]},
        "object-null": _envelope(done, None),
        "object-list": _envelope(done, [paid]),
        "object-string": _envelope(done, "cs_x"),
        "refund-object-number": _envelope("charge.refunded", 5),
        "session-without-id": _envelope(done, {k: v for k, v in paid.items() if k != "id"}),
        "metadata-string": _envelope(done, {**paid, "metadata": "topup"}),
        "metadata-list": _envelope(done, {**paid, "metadata": [paid["metadata"]]}),
        "payment-intent-number": _envelope(done, {**paid, "payment_intent": 5}),
        "payment-intent-list": _envelope(done, {**paid, "payment_intent": [pi]}),
        "amount-string": _envelope(done, {**paid, "amount_total": "500"}),
        "amount-float": _envelope(done, {**paid, "amount_total": 500.0}),
        "amount-bool": _envelope(done, {**paid, "amount_total": True}),
        "amount-huge": _envelope(done, {**paid, "amount_total": 10**40}),
        "amount-negative": _envelope(done, {**paid, "amount_total": -500}),
        "currency-number": _envelope(done, {**paid, "currency": 978}),
        "currency-with-space": _envelope(done, {**paid, "currency": "e r"}),
        "status-list": _envelope(done, {**paid, "status": ["complete"]}),
        "refund-without-amount": _envelope("refund.created", {k: v for k, v in re.items() if k != "amount"}),
        "refund-amount-null": _envelope("refund.created", {**re, "amount": None}),
        "refund-amount-float": _envelope("refund.updated", {**re, "amount": 100.7}),
        "refund-amount-string": _envelope("refund.failed", {**re, "amount": "100"}),
        "refund-amount-huge": _envelope("charge.refund.updated", {**re, "amount": 10**40}),
        "refund-currency-list": _envelope("refund.created", {**re, "currency": ["eur"]}),
        "refund-id-null": _envelope("refund.created", {**re, "id": None}),
        "refund-status-list": _envelope("refund.updated", {**re, "status": ["failed"]}),
        "embedded-refunds-list": _envelope("charge.refunded", {**ch, "refunds": [re]}),
        "embedded-refunds-without-data": _envelope("charge.refunded", {**ch, "refunds": {"object": "list"}}),
        "embedded-refund-amount-string": _envelope(
            "charge.refunded", {**ch, "refunds": {"object": "list", "data": [re, {**re, "amount": "100"}]}}
        ),
        "embedded-refund-id-null": _envelope("charge.refunded", {**ch, "refunds": {"data": [{**re, "id": None}]}}),
        "dispute-amount-string": _envelope("charge.dispute.created", {**dp, "amount": "500"}),
        "dispute-status-null": _envelope("charge.dispute.closed", {**dp, "status": None}),
        "dispute-without-fields": _envelope("charge.dispute.closed", {"payment_intent": pi}),
    }
    return json.dumps(changed[case])


MALFORMED = [
    *("json-list", "json-null", "json-number", "json-string", "empty-object", "deeply-nested"),
    *("no-type", "no-data", "data-null", "data-list", "object-null", "object-list", "object-string"),
    *("refund-object-number", "session-without-id", "metadata-string", "metadata-list", "payment-intent-number"),
    *("payment-intent-list", "amount-string", "amount-float", "amount-bool", "amount-huge", "amount-negative"),
    *("currency-number", "currency-with-space", "status-list", "refund-without-amount", "refund-amount-null"),
    *("refund-amount-float", "refund-amount-string", "refund-amount-huge", "refund-currency-list", "refund-id-null"),
    *("refund-status-list", "embedded-refunds-list", "embedded-refunds-without-data", "embedded-refund-amount-string"),
    *("embedded-refund-id-null", "dispute-amount-string", "dispute-status-null", "dispute-without-fields"),
]


@pytest.mark.parametrize("case", MALFORMED)
async def test_signed_but_malformed_events_are_400_and_move_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store, case: str
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    paid = stripe_stub.pay(session_of(stripe_stub, topup))
    assert (await deliver(stripe_client, "checkout.session.completed", paid)).json()["outcome"] == "credited"
    asked = len(stripe_stub.requests)
    body = _malformed(case, paid)

    r = await stripe_client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})

    assert r.status_code == 400, r.text
    assert problem_type(r) == "bad-webhook"
    assert await api.balance(wallet) == 500
    assert await clean_entries(store) == 1
    assert len(stripe_stub.requests) == asked  # the webhook never calls Stripe back


@pytest.mark.parametrize(("field", "value"), [("amount_total", 50), ("currency", "usd")])
async def test_amount_or_currency_differing_from_the_stored_session_credits_nothing_and_alerts(
    api: Api,
    stripe_client: httpx.AsyncClient,
    stripe_stub: StripeStub,
    store: Store,
    caplog: pytest.LogCaptureFixture,
    field: str,
    value: object,
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    paid = {**stripe_stub.pay(session_of(stripe_stub, topup)), field: value}
    before = alerts("amount-mismatch")

    with caplog.at_level(logging.ERROR, logger="coinslot.topups"):
        r = await deliver(stripe_client, "checkout.session.completed", paid)

    assert (r.status_code, r.json()["outcome"]) == (200, "amount-mismatch")
    assert alerts("amount-mismatch") == before + 1
    assert any("ALERT" in rec.getMessage() for rec in caplog.records if rec.name == "coinslot.topups")
    assert await api.balance(wallet) == 0
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "pending"
    assert await clean_entries(store) == 0


async def test_unknown_events_and_other_integrations_sessions_are_200_ignored(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    before = alerts("unknown-session")
    foreign = {"id": "cs_test_foreign", "object": "checkout.session", "status": "complete", "payment_status": "paid"}

    answers = [
        await deliver(stripe_client, "customer.created", {"id": "cus_1", "object": "customer"}),
        await deliver(stripe_client, "checkout.session.completed", {**foreign, "amount_total": 900, "currency": "eur"}),
        await deliver(stripe_client, "charge.refunded", {"id": "ch_1", "object": "charge", "amount_refunded": 5}),
        # A refund without a PaymentIntent is not of a Checkout Session; a status Stripe may add later moves nothing.
        await deliver(
            stripe_client, "refund.created", {"id": "re_1", "amount": 5, "currency": "eur", "status": "pending"}
        ),
        await deliver(
            stripe_client,
            "refund.updated",
            {"id": "re_2", "amount": 5, "currency": "eur", "status": None, "payment_intent": "pi_1"},
        ),
    ]

    assert [(r.status_code, r.json()["outcome"]) for r in answers] == [(200, "ignored")] * 5
    assert alerts("unknown-session") == before
    assert await clean_entries(store) == 0


async def test_webhook_is_404_when_stripe_is_not_configured(standalone_client: httpx.AsyncClient) -> None:
    body = event("checkout.session.completed", {"id": "cs_x"})

    r = await standalone_client.post("/v1/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body)})

    assert r.status_code == 404
    assert problem_type(r) == "not-found"


# The return page ----------------------------------------------------------------------


async def test_return_page_credits_a_paid_session_before_the_webhook(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    stripe_stub.pay(session_id)

    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")
    late_webhook = await deliver(stripe_client, "checkout.session.completed", stripe_stub.session(session_id))

    assert page.status_code == 200
    assert "€5.00 added to your wallet" in page.text
    assert "TEST MODE" in page.text  # a Stripe test key moves no real money either
    assert page.headers["cache-control"] == "no-store"
    assert late_webhook.json()["outcome"] == "already-credited"
    assert await api.balance(wallet) == 500
    assert await clean_entries(store) == 1


async def test_return_page_after_cancel_or_for_unknown_sessions_asks_stripe_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    asked = len(stripe_stub.requests)

    # Stripe may or may not fill in the session id on the cancel URL; either way nothing is asked.
    cancelled = await stripe_client.get(f"/checkout/return?cancelled=1&session_id={session_id}")
    unknown = await stripe_client.get("/checkout/return?session_id=cs_test_not_ours")
    missing = await stripe_client.get("/checkout/return")

    assert cancelled.status_code == 200
    assert "Top-up cancelled" in cancelled.text
    assert (unknown.status_code, missing.status_code) == (404, 404)
    assert len(stripe_stub.requests) == asked
    assert (await status_of(stripe_client, wallet, topup["topup_id"]))["status"] == "pending"


async def test_return_page_for_an_open_session_credits_nothing(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)

    page = await stripe_client.get(f"/checkout/return?session_id={session_of(stripe_stub, topup)}")

    assert page.status_code == 200
    assert "not finished" in page.text
    assert await api.balance(wallet) == 0


async def test_return_page_reloads_ask_stripe_once_per_session_and_still_settle(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    stripe_stub.pay(session_id, payment_status="unpaid")  # SEPA: pending for days, the page keeps asking
    asked = len(stripe_stub.requests)

    pages = await asyncio.gather(*(stripe_client.get(f"/checkout/return?session_id={session_id}") for _ in range(20)))
    pages += [await stripe_client.get(f"/checkout/return?session_id={session_id}") for _ in range(5)]
    paid = stripe_stub.settle(session_id, paid=True)
    webhook = await deliver(stripe_client, "checkout.session.async_payment_succeeded", paid)
    after = await stripe_client.get(f"/checkout/return?session_id={session_id}")

    reads = [r for r in stripe_stub.requests[asked:] if r.method == "GET" and session_id in r.path]
    assert len(reads) == 1
    assert {p.status_code for p in pages} == {200}
    assert sum("on its way" in p.text for p in pages) == 1
    assert all("Checking your payment" in p.text for p in pages if "on its way" not in p.text)
    assert webhook.json()["outcome"] == "credited"
    assert "€5.00 added to your wallet" in after.text
    assert len([r for r in stripe_stub.requests[asked:] if session_id in r.path]) == 1  # paid: nothing to ask
    assert await api.balance(wallet) == 500
    assert await clean_entries(store) == 1


async def test_return_page_for_a_session_stripe_answers_unreadably_is_a_503_page(
    api: Api, stripe_client: httpx.AsyncClient, stripe_stub: StripeStub
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(stripe_client, wallet, 500)
    session_id = session_of(stripe_stub, topup)
    stripe_stub.pay(session_id)
    with stripe_stub.lock:
        stripe_stub.sessions[session_id]["amount_total"] = "500"  # not an amount

    page = await stripe_client.get(f"/checkout/return?session_id={session_id}")

    assert page.status_code == 503
    assert "Checking your payment" in page.text
    assert await api.balance(wallet) == 0


# reconcile --stripe ---------------------------------------------------------------------


async def test_reconcile_stripe_repairs_a_dropped_webhook_and_a_second_run_changes_nothing(
    api: Api,
    stripe_client: httpx.AsyncClient,
    stripe_stub: StripeStub,
    store: Store,
    real_time_clock: FrozenClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stripe_payments, "LIST_PAGE", 2)  # several pages from a handful of sessions
    wallet = await api.wallet()
    delivered = await start_topup(stripe_client, wallet, 200)
    dropped = await start_topup(stripe_client, wallet, 500)
    unpaid = await start_topup(stripe_client, wallet, 1000)
    await start_topup(stripe_client, wallet, 1000)  # never paid
    stripe_stub.pay(session_of(stripe_stub, unpaid), payment_status="unpaid")
    await deliver(stripe_client, "checkout.session.completed", stripe_stub.pay(session_of(stripe_stub, delivered)))
    stripe_stub.pay(session_of(stripe_stub, dropped))  # its webhook never arrives
    provider = StripeCheckout.from_settings(stripe_settings(tmp_path, stripe_stub), PUBLIC_URL)
    try:
        first = await topups.repair_from_provider(store, provider, now_ms=real_time_clock.now_ms())
        second = await topups.repair_from_provider(store, provider, now_ms=real_time_clock.now_ms())
    finally:
        await provider.aclose()

    assert first["sessions_checked"] == second["sessions_checked"] == 4
    assert first["credited"] == [
        {"session": session_of(stripe_stub, dropped), "topup_id": dropped["topup_id"], "amount": 500, "currency": "EUR"}
    ]
    assert (first["problems"], second["credited"], second["problems"]) == ([], [], [])
    lists = [r.query for r in stripe_stub.requests if r.method == "GET" and r.path == "/v1/checkout/sessions"]
    assert len(lists) == 2 * 2  # two pages per run
    assert {q["created[gte]"] for q in lists} == {str(real_time_clock.now_ms() // 1000 - 30 * 24 * 3600)}
    assert [q.get("starting_after") is not None for q in lists] == [False, True, False, True]
    assert await api.balance(wallet) == 700
    assert (await status_of(stripe_client, wallet, dropped["topup_id"]))["status"] == "paid"
    assert await clean_entries(store) == 2


def test_coinslot_reconcile_stripe_command(
    tmp_path: Path,
    standalone_url: str,
    stripe_stub: StripeStub,
    keyring: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from coinslot.cli import main
    from coinslot.store import connect

    clock = FrozenClock(time.time_ns() // 1_000_000)

    async def pay_and_drop_the_webhook() -> str:
        store = Store(await connect(standalone_url))
        await store.redis.flushall()
        try:
            async with running_app(stripe_settings(tmp_path, stripe_stub), store, clock, keyring) as client:
                wallet = await Api(client, store, clock).wallet()
                stripe_stub.pay(session_of(stripe_stub, await start_topup(client, wallet, 1000)))
                return wallet
        finally:
            await store.close()

    async def balance(wallet: str) -> int:
        store = Store(await connect(standalone_url))
        try:
            async with running_app(make_settings(tmp_path), store, clock, keyring) as client:
                return await Api(client, store, clock).balance(wallet)
        finally:
            await store.close()

    wallet = asyncio.run(pay_and_drop_the_webhook())
    for name, value in {
        "REDIS_URL": standalone_url,
        "STRIPE_SECRET_KEY": "sk_test_coinslot_stub",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_stub.url,
        "DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv("COINSLOT_" + name, value)
    monkeypatch.delenv("COINSLOT_PAYMENTS", raising=False)  # Stripe is the default once a key is set

    codes, outputs = [], []
    for _ in range(2):
        codes.append(main(["reconcile", "--stripe"]))
        outputs.append(json.loads(capsys.readouterr().out))

    assert codes == [0, 0]
    assert [len(o["stripe"]["credited"]) for o in outputs] == [1, 0]
    assert outputs[0]["stripe"]["credited"][0]["amount"] == 1000
    assert all(o["clean"] for o in outputs)
    assert asyncio.run(balance(wallet)) == 1000


def test_reconcile_stripe_without_stripe_configured_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], standalone_url: str
) -> None:
    from coinslot.cli import main

    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "PAYMENTS"):
        monkeypatch.delenv("COINSLOT_" + name, raising=False)
    monkeypatch.setenv("COINSLOT_REDIS_URL", standalone_url)

    assert main(["reconcile", "--stripe"]) == 2
    assert "needs Stripe" in capsys.readouterr().err


# Hypothesis: whatever arrives at the webhook, parse_event answers an event or BadWebhook -------------

FUZZ_PROVIDER = StripeCheckout("sk_test_fuzz", WEBHOOK_SECRET, public_url=PUBLIC_URL)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(
    payload=st.one_of(
        st.binary(max_size=300),
        JSON.map(lambda v: json.dumps(v).encode()),
        # A real event's shape with any object inside.
        st.tuples(
            st.sampled_from(["checkout.session.completed", "refund.created", "charge.dispute.created"]), JSON
        ).map(lambda t: json.dumps({"id": "evt_1", "type": t[0], "data": {"object": t[1]}}).encode()),
    ),
    header=st.one_of(st.none(), st.text(max_size=120), st.just("signed")),
)
@settings(max_examples=400, deadline=None)
def test_any_webhook_body_and_signature_gives_an_event_or_bad_webhook(payload: bytes, header: str | None) -> None:
    if header == "signed":  # correctly signed, so the parse goes past the signature into the body
        header = sign(payload.decode("utf-8", "replace"))
        payload = payload.decode("utf-8", "replace").encode()
    try:
        parsed = FUZZ_PROVIDER.parse_event(payload, header)
    except BadWebhook:
        return
    assert isinstance(parsed, PaymentEvent)
