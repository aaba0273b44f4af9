"""The card's top-up window when Stripe takes the payment: Stripe's network is a local stub (as in
tests/), its hosted checkout page a stand-in, and the reader comes back to /checkout/return."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from conftest import Reader, Stack, card, content, demo_stack, press, shot, wallet
from stripe_stub import SECRET_KEY, WEBHOOK_SECRET, StripeStub, event, sign, start_stub


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, StripeStub]]:
    stub, server = start_stub()
    # Stripe's hosted page is out of reach here: the stub's server stands in for it (what the reader
    # does there is the stub's pay()), so the top-up window really leaves the backend's origin.
    stub.checkout_base = stub.url
    try:
        with demo_stack(
            tmp_path_factory.mktemp("e2e-stripe"),
            COINSLOT_PAYMENTS="stripe",
            COINSLOT_STRIPE_SECRET_KEY=SECRET_KEY,
            COINSLOT_STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            COINSLOT_STRIPE_API_BASE=stub.url,
        ) as stack:
            yield stack, stub
    finally:
        server.shutdown()
        server.server_close()


def _open_checkout(page: Page, stub: StripeStub, item: str) -> tuple[Page, str]:
    c = card(page, item)
    press(c, c.locator("#buy"))
    with page.expect_popup() as popup:
        c.get_by_role("button", name="Add €2.00").click()
    popup.value.wait_for_load_state()
    session_id = popup.value.url.rsplit("/", 1)[1]
    assert popup.value.url.startswith(stub.checkout_base + "/c/pay/cs_test_")  # "Stripe's" hosted page
    return popup.value, session_id


def _back_from_stripe(checkout: Page, stub: StripeStub, session_id: str) -> None:
    # Stripe sends the reader to success_url with the session id filled in.
    checkout.goto(stub.session(session_id)["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id))


def test_a_card_payment_at_stripe_completes_the_unlock_by_itself(
    stripe: tuple[Stack, StripeStub], reader: Reader
) -> None:
    stack, stub = stripe
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    checkout, session_id = _open_checkout(page, stub, "article-heatwave")
    stub.pay(session_id)
    _back_from_stripe(checkout, stub, session_id)  # the return page credits at once (the webhook may be late)
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    c = card(page, "article-heatwave")
    expect(c.locator("#balance")).to_have_text("Wallet balance: €1.81")
    shot(page, "29-stripe-unlocked")
    assert wallet(stack, reader)["balance"] == 181
    assert reader.errors == []


def test_a_bank_debit_at_stripe_is_on_its_way_then_unlocks_when_it_arrives(
    stripe: tuple[Stack, StripeStub], reader: Reader
) -> None:
    stack, stub = stripe
    page = reader.page()
    page.goto(stack.demo + "/article.html")
    checkout, session_id = _open_checkout(page, stub, "article-heatwave")
    stub.pay(session_id, payment_status="unpaid")  # SEPA Direct Debit: complete, money due in days
    _back_from_stripe(checkout, stub, session_id)
    expect(checkout.get_by_role("heading")).to_have_text("Your payment is on its way")
    c = card(page, "article-heatwave")
    expect(c.get_by_role("status")).to_have_text(
        "Your bank payment is on its way. It can take a few business days; this card unlocks once it arrives."
    )
    shot(page, "30-stripe-debit-on-its-way")
    assert wallet(stack, reader)["balance"] == 0

    # Days later Stripe reports the debit paid, by webhook.
    body = event("checkout.session.async_payment_succeeded", stub.settle(session_id, paid=True))
    request = urllib.request.Request(
        stack.backend + "/v1/webhooks/stripe",
        data=body.encode(),
        headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    expect(content(page, "article-heatwave")).to_contain_text("Meteorologists")
    assert wallet(stack, reader)["balance"] == 181
    assert reader.errors == []
