"""Top-ups: the test-mode checkout, money rule 5 (one credit per checkout session), and the
prepared top-up links of a 402 — on standalone Redis and Cluster.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import ledger, topups
from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.store import Store, connect

from api import Api, auth
from conftest import PUBLIC_URL, make_settings, running_app
from servers import Cluster


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def start_topup(client: httpx.AsyncClient, wallet: str, amount: int = 500) -> dict[str, Any]:
    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def session_of(checkout_url: str) -> str:
    return checkout_url.rsplit("/", 1)[-1]


async def pay(client: httpx.AsyncClient, session: str) -> httpx.Response:
    return await client.post(f"/checkout/test/{session}")


async def status_of(client: httpx.AsyncClient, wallet: str, topup_id: str) -> str:
    r = await client.get(f"/v1/topups/{topup_id}", headers=auth(wallet))
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[-1]


async def credits_in_ledger(store: Store) -> int:
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    return report.entries


# Starting a top-up ------------------------------------------------------------------


@pytest.mark.parametrize("amount", [200, 500, 1000])
async def test_allowed_amount_opens_a_pending_checkout(api: Api, client: httpx.AsyncClient, amount: int) -> None:
    wallet = await api.wallet()

    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending"
    assert body["topup_id"].startswith("tu_")
    assert (body["amount"], body["currency"]) == (amount, "EUR")
    assert re.fullmatch(re.escape(PUBLIC_URL) + r"/checkout/test/cs_test_[a-z2-7]+", body["checkout_url"])
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("amount", [50, 300, 999, 100_000])
async def test_amount_not_allowed_is_422_listing_the_allowed(api: Api, client: httpx.AsyncClient, amount: int) -> None:
    wallet = await api.wallet()

    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(wallet))

    assert r.status_code == 422
    assert problem_type(r) == "topup-amount-not-allowed"
    assert r.json()["allowed"] == [200, 500, 1000]


async def test_topup_needs_a_wallet(client: httpx.AsyncClient) -> None:
    missing = await client.post("/v1/topups", json={"amount": 500})
    forged = await client.post("/v1/topups", json={"amount": 500}, headers=auth("forged.token"))

    for r in (missing, forged):
        assert r.status_code == 401
        assert problem_type(r) == "unauthorized"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": "500"}, "amount"),
        ({"amount": 5.0}, "amount"),
        ({}, "amount"),
        ({"amount": 500, "currency": "EUR"}, "currency"),
        ({"amount": 500, "wallet": "w_x"}, "wallet"),
    ],
)
async def test_bad_topup_body_is_422_naming_the_field(
    api: Api, client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    wallet = await api.wallet()

    r = await client.post("/v1/topups", json=body, headers=auth(wallet))

    assert r.status_code == 422
    assert problem_type(r) == "invalid-body"
    assert [e["field"] for e in r.json()["errors"]] == [field]


# Status and the test checkout -------------------------------------------------------


async def test_topup_is_pending_until_the_test_checkout_is_paid(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)
    assert await status_of(client, wallet, topup["topup_id"]) == "pending"

    r = await pay(client, session_of(topup["checkout_url"]))

    assert r.status_code == 200
    assert "€5.00 added to your wallet" in r.text
    assert await status_of(client, wallet, topup["topup_id"]) == "paid"
    assert await api.balance(wallet) == 500
    view = (await client.get("/v1/wallet", headers=auth(wallet))).json()
    assert [(line["kind"], line["amount"]) for line in view["ledger"]] == [("topup", 500)]
    report = await ledger.reconcile(store)
    assert report.accounts["topup:clearing"]["EUR"] == -500


async def test_another_wallets_topup_is_404(api: Api, client: httpx.AsyncClient) -> None:
    owner, other = await api.wallet(), await api.wallet()
    topup = await start_topup(client, owner)

    r = await client.get(f"/v1/topups/{topup['topup_id']}", headers=auth(other))
    unknown = await client.get("/v1/topups/tu_doesnotexist", headers=auth(owner))

    for resp in (r, unknown):
        assert resp.status_code == 404
        assert problem_type(resp) == "not-found"


async def test_topup_status_needs_a_wallet(api: Api, client: httpx.AsyncClient) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet)

    r = await client.get(f"/v1/topups/{topup['topup_id']}")

    assert r.status_code == 401


async def test_topup_expires_when_the_clock_passes_expires_at(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet)
    seconds_left = topup["expires_at"] - clock.now_ms() // 1000

    clock.advance(seconds_left - 1)
    assert await status_of(client, wallet, topup["topup_id"]) == "pending"
    clock.advance(1)

    assert await status_of(client, wallet, topup["topup_id"]) == "expired"


async def test_expired_session_cannot_be_paid(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet)
    session = session_of(topup["checkout_url"])
    clock.advance(topup["expires_at"] - clock.now_ms() // 1000)

    page = await client.get(f"/checkout/test/{session}")
    r = await pay(client, session)

    assert page.status_code == 410
    assert "Pay" not in re.findall(r"<button[^>]*>(.*?)</button>", page.text)
    assert r.status_code == 410
    assert "expired" in r.text
    assert await api.balance(wallet) == 0
    assert await status_of(client, wallet, topup["topup_id"]) == "expired"
    assert await credits_in_ledger(store) == 0


async def test_paid_topup_stays_paid_after_expires_at(api: Api, client: httpx.AsyncClient, clock: FrozenClock) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet)
    await pay(client, session_of(topup["checkout_url"]))

    clock.advance(2 * 24 * 3600)

    assert await status_of(client, wallet, topup["topup_id"]) == "paid"


async def test_test_checkout_page_is_marked_and_has_one_pay_button(api: Api, client: httpx.AsyncClient) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)

    r = await client.get(f"/checkout/test/{session_of(topup['checkout_url'])}")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "TEST MODE" in r.text
    assert re.findall(r"<button[^>]*>(.*?)</button>", r.text, re.S) == ["Pay €5.00"]
    assert r.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]


async def test_test_checkout_button_shows_the_wallets_currency(api: Api, client: httpx.AsyncClient) -> None:
    wallet = await api.wallet("GBP")
    topup = await start_topup(client, wallet, 1000)

    r = await client.get(f"/checkout/test/{session_of(topup['checkout_url'])}")

    assert re.findall(r"<button[^>]*>(.*?)</button>", r.text, re.S) == ["Pay £10.00"]


async def test_unknown_checkout_session_is_404_problem(client: httpx.AsyncClient) -> None:
    page = await client.get("/checkout/test/cs_test_nosuchsession")
    post = await pay(client, "cs_test_nosuchsession")

    for r in (page, post):
        assert r.status_code == 404
        assert problem_type(r) == "not-found"


async def test_test_checkout_refuses_a_form_posted_from_another_origin(api: Api, client: httpx.AsyncClient) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet)

    r = await client.post(
        f"/checkout/test/{session_of(topup['checkout_url'])}", headers={"Origin": "https://evil.example"}
    )

    assert r.status_code == 403
    assert await api.balance(wallet) == 0


# Exactly once (money rule 5) --------------------------------------------------------


async def test_session_completed_20_times_at_once_credits_once(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 1000)
    session = session_of(topup["checkout_url"])

    results = await asyncio.gather(*(pay(client, session) for _ in range(20)))

    assert {r.status_code for r in results} == {200}
    assert await api.balance(wallet) == 1000
    assert await credits_in_ledger(store) == 1
    assert await status_of(client, wallet, topup["topup_id"]) == "paid"


async def test_completing_a_paid_session_again_later_credits_nothing(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 200)
    session = session_of(topup["checkout_url"])
    await pay(client, session)
    clock.advance(3600)

    again = await pay(client, session)

    assert again.status_code == 200
    assert "Payment received" in again.text
    assert await api.balance(wallet) == 200
    assert await credits_in_ledger(store) == 1


async def test_fulfil_called_concurrently_credits_once(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)
    session = session_of(topup["checkout_url"])

    outcomes = await asyncio.gather(
        *(topups.fulfil(store, session, amount=500, currency="EUR", now_ms=clock.now_ms()) for _ in range(30))
    )

    assert outcomes.count(topups.Fulfilment.CREDITED) == 1
    assert outcomes.count(topups.Fulfilment.ALREADY) == 29
    assert await api.balance(wallet) == 500
    assert await credits_in_ledger(store) == 1
    later = await topups.fulfil(store, session, amount=500, currency="EUR", now_ms=clock.now_ms())
    assert later is topups.Fulfilment.ALREADY


async def test_fulfil_of_an_unknown_session_credits_nothing_and_alerts(
    store: Store, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="coinslot.topups"):
        outcome = await topups.fulfil(store, "cs_test_unknown", amount=500, currency="EUR", now_ms=clock.now_ms())

    assert outcome is topups.Fulfilment.UNKNOWN_SESSION
    assert [r.levelno for r in caplog.records if r.name == "coinslot.topups"] == [logging.ERROR]


async def test_fulfil_with_another_amount_credits_nothing_and_alerts(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)
    session = session_of(topup["checkout_url"])

    with caplog.at_level(logging.ERROR, logger="coinslot.topups"):
        outcome = await topups.fulfil(store, session, amount=50, currency="EUR", now_ms=clock.now_ms())

    assert outcome is topups.Fulfilment.MISMATCH
    alerts = [r for r in caplog.records if r.name == "coinslot.topups" and r.levelno == logging.ERROR]
    assert len(alerts) == 1
    assert session in alerts[0].getMessage()
    assert await api.balance(wallet) == 0
    assert await status_of(client, wallet, topup["topup_id"]) == "pending"
    assert await credits_in_ledger(store) == 0


async def test_fulfil_with_another_currency_is_a_mismatch(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)
    session = session_of(topup["checkout_url"])

    with caplog.at_level(logging.ERROR, logger="coinslot.topups"):
        outcome = await topups.fulfil(store, session, amount=500, currency="USD", now_ms=clock.now_ms())

    assert await api.balance(wallet) == 0
    assert [r.levelno for r in caplog.records if r.name == "coinslot.topups"] == [logging.ERROR]
    assert outcome is topups.Fulfilment.MISMATCH


async def test_fulfil_with_another_currency_credits_nothing_and_logs_an_error(
    api: Api, client: httpx.AsyncClient, clock: FrozenClock, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever was reported, no money moves and an ERROR is logged."""
    wallet = await api.wallet()
    topup = await start_topup(client, wallet, 500)
    session = session_of(topup["checkout_url"])

    with caplog.at_level(logging.ERROR, logger="coinslot.topups"):
        outcome = await topups.fulfil(store, session, amount=500, currency="USD", now_ms=clock.now_ms())

    assert outcome is not topups.Fulfilment.CREDITED
    assert [r.levelno for r in caplog.records if r.name == "coinslot.topups"] == [logging.ERROR]
    assert await api.balance(wallet) == 0
    assert await status_of(client, wallet, topup["topup_id"]) == "pending"
    assert await credits_in_ledger(store) == 0


# Prepared links from a 402 ----------------------------------------------------------


async def options_402(api: Api, price: int = 150) -> tuple[str, tuple[str, str], list[dict[str, Any]]]:
    """A wallet that cannot pay for `article` on a new site; returns (wallet, site, topup_options)."""
    site = await api.site()
    await api.item(site, "article", price)
    wallet = await api.wallet()
    r = await api.unlock(wallet, site[0], "article")
    assert r.status_code == 402, r.text
    options: list[dict[str, Any]] = r.json()["topup_options"]
    return wallet, site, options


def link_path(option: dict[str, Any]) -> str:
    url: str = option["url"]
    assert url.startswith(PUBLIC_URL + "/topup/")
    return url.removeprefix(PUBLIC_URL)


async def test_topup_link_redirects_to_a_checkout_for_its_amount(api: Api, client: httpx.AsyncClient) -> None:
    wallet, _site, options = await options_402(api)
    option = options[0]

    r = await client.get(link_path(option))

    assert r.status_code == 303
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["location"].startswith(PUBLIC_URL + "/checkout/test/cs_test_")
    page = await client.get(r.headers["location"])
    assert re.findall(r"<button[^>]*>(.*?)</button>", page.text, re.S) == ["Pay €2.00"]
    status = (await client.get(f"/v1/topups/{option['topup_id']}", headers=auth(wallet))).json()
    assert (status["status"], status["amount"], status["checkout_url"]) == ("pending", 200, r.headers["location"])


async def test_opening_a_topup_link_twice_opens_the_same_checkout(api: Api, client: httpx.AsyncClient) -> None:
    wallet, _site, options = await options_402(api)
    path = link_path(options[1])

    first = await client.get(path)
    second = await client.get(path)
    racing = await asyncio.gather(*(client.get(path) for _ in range(10)))

    assert {r.headers["location"] for r in (first, second, *racing)} == {first.headers["location"]}
    status = (await client.get(f"/v1/topups/{options[1]['topup_id']}", headers=auth(wallet))).json()
    assert status["checkout_url"] == first.headers["location"]


async def test_paying_through_a_topup_link_lets_the_wallet_unlock(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    wallet, site, options = await options_402(api, price=150)
    option = options[0]
    checkout = (await client.get(link_path(option))).headers["location"]

    await pay(client, session_of(checkout))

    assert await status_of(client, wallet, option["topup_id"]) == "paid"
    r = await api.unlock(wallet, site[0], "article")
    assert r.status_code == 200, r.text
    assert (r.json()["charged"], r.json()["balance"]) == (150, 50)
    assert await credits_in_ledger(store) == 2


async def test_reopening_a_paid_topup_link_credits_nothing_more(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    wallet, _site, options = await options_402(api)
    path = link_path(options[0])
    checkout = (await client.get(path)).headers["location"]
    await pay(client, session_of(checkout))

    again = await client.get(path)
    await pay(client, session_of(again.headers["location"]))

    assert again.headers["location"] == checkout
    assert await api.balance(wallet) == 200
    assert await credits_in_ledger(store) == 1


@pytest.mark.parametrize(
    "tamper",
    [
        # Not the last character: its low bits are base64 padding, so some changes decode alike.
        lambda link: link[:-5] + ("A" if link[-5] != "A" else "B") + link[-4:],
        lambda link: "x" + link,
        lambda link: link.split(".")[0],
        lambda link: "not-a-link",
    ],
    ids=["signature-char", "prefix", "no-signature", "garbage"],
)
async def test_tampered_topup_link_is_a_400_page(
    api: Api, client: httpx.AsyncClient, tamper: Callable[[str], str]
) -> None:
    wallet, _site, options = await options_402(api)
    link = link_path(options[0]).removeprefix("/topup/")

    r = await client.get("/topup/" + tamper(link))

    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert "not valid" in r.text
    assert (await client.get(f"/v1/topups/{options[0]['topup_id']}", headers=auth(wallet))).status_code == 404


async def test_topup_link_older_than_15_minutes_is_410(api: Api, client: httpx.AsyncClient, clock: FrozenClock) -> None:
    wallet, _site, options = await options_402(api)
    clock.advance(15 * 60 + 1)

    r = await client.get(link_path(options[0]))

    assert r.status_code == 410
    assert "expired" in r.text
    assert (await client.get(f"/v1/topups/{options[0]['topup_id']}", headers=auth(wallet))).status_code == 404


async def test_topup_link_works_for_15_minutes(api: Api, client: httpx.AsyncClient, clock: FrozenClock) -> None:
    _wallet, _site, options = await options_402(api)
    clock.advance(15 * 60)

    r = await client.get(link_path(options[0]))

    assert r.status_code == 303


async def test_an_opened_topup_link_expires_too(api: Api, client: httpx.AsyncClient, clock: FrozenClock) -> None:
    _wallet, _site, options = await options_402(api)
    path = link_path(options[0])
    assert (await client.get(path)).status_code == 303
    clock.advance(15 * 60 + 1)

    r = await client.get(path)

    assert r.status_code == 410


# Shutdown (found while testing top-ups) ---------------------------------------------


@pytest.mark.cluster
async def test_app_shuts_down_right_after_start(
    cluster: Cluster, tmp_path: Path, clock: FrozenClock, keyring: KeyRing
) -> None:
    store = Store(await connect(cluster.url))
    try:
        # The follower is cancelled at some moment of its subscription; sweep that moment.
        # A shutdown that swallowed the cancel hung for good: the deadline only catches that hang.
        for attempt in range(100):
            async with asyncio.timeout(20):
                async with running_app(make_settings(tmp_path), store, clock, keyring):
                    await asyncio.sleep((attempt % 50) / 10_000)
    finally:
        await store.close()
