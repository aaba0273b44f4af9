"""Vouchers: issuing (admin API and CLI), redeeming, and money rule 9 under concurrency.

Every test runs on standalone Redis and on the 3-master Cluster.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import pytest

from coinslot import cli, ledger, vouchers
from coinslot import keyspace as keys
from coinslot.clock import FrozenClock
from coinslot.store import Store

from api import Api, auth

GENERATED_CODE = re.compile(r"^[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4}$")  # 16 base32 chars = 80 bits


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def create(client: httpx.AsyncClient, site: tuple[str, str], **body: object) -> httpx.Response:
    return await client.post("/v1/admin/vouchers", json=body, headers=auth(site[1]))


async def uses_left(store: Store, code: str) -> int:
    voucher_key, _ = keys.voucher_keys(vouchers.normalize_code(code))
    return int(await store.redis.hget(voucher_key, "uses_left"))


def problem_type(r: httpx.Response) -> str:
    assert r.headers["content-type"] == "application/problem+json", r.text
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[-1]


# Issuing ----------------------------------------------------------------------------


async def test_admin_creates_a_generated_code_with_80_random_bits(api: Api, client: httpx.AsyncClient) -> None:
    site = await api.site()

    r = await create(client, site, amount=500, uses=3)

    assert r.status_code == 201, r.text
    body = r.json()
    assert GENERATED_CODE.match(body["code"]), body["code"]
    assert (body["site"], body["amount"], body["currency"], body["uses"]) == (site[0], 500, "EUR", 3)
    assert r.headers["cache-control"] == "no-store"


async def test_generated_codes_do_not_repeat(api: Api, client: httpx.AsyncClient) -> None:
    site = await api.site()

    codes = [(await create(client, site, amount=1)).json()["code"] for _ in range(50)]

    assert len(set(codes)) == 50
    assert all(GENERATED_CODE.match(c) for c in codes)


async def test_admin_creates_a_custom_code(api: Api, client: httpx.AsyncClient) -> None:
    site = await api.site(currency="GBP")

    r = await create(client, site, amount=250, code="SPRING-2026")

    assert r.status_code == 201, r.text
    assert (r.json()["code"], r.json()["amount"], r.json()["currency"], r.json()["uses"]) == (
        "SPRING-2026",
        250,
        "GBP",
        1,
    )


async def test_duplicate_code_is_409_even_spelt_differently_or_from_another_site(
    api: Api, client: httpx.AsyncClient
) -> None:
    first, second = await api.site(), await api.site()
    assert (await create(client, first, amount=100, code="SUMMER-SALE")).status_code == 201

    same = await create(client, first, amount=100, code="SUMMER-SALE")
    respelt = await create(client, first, amount=100, code="summer sale")
    other_site = await create(client, second, amount=300, code="SummerSale")

    for r in (same, respelt, other_site):
        assert r.status_code == 409, r.text
        assert problem_type(r) == "duplicate-code"


async def test_a_duplicate_code_does_not_change_the_existing_voucher(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    first, second = await api.site(), await api.site(currency="GBP")
    await create(client, first, amount=100, uses=1, code="KEEP-ME-1")

    await create(client, second, amount=9999, uses=50, code="KEEP-ME-1")

    wallet = await api.wallet()
    r = await api.redeem(wallet, "KEEP-ME-1")
    assert r.json() == {"credited": 100, "balance": 100, "currency": "EUR"}
    assert await uses_left(store, "KEEP-ME-1") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": "500"}, "amount"),
        ({"amount": 1.5}, "amount"),
        ({}, "amount"),
        ({"amount": 100, "uses": 0}, "uses"),
        ({"amount": 100, "uses": 1_000_001}, "uses"),
        ({"amount": 100, "uses": "2"}, "uses"),
        ({"amount": 100, "code": "ABC"}, "code"),
        ({"amount": 100, "value": 3}, "value"),
    ],
)
async def test_bad_voucher_body_is_422_naming_the_field(
    api: Api, client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    site = await api.site()

    r = await create(client, site, **body)

    assert r.status_code == 422, r.text
    assert problem_type(r) == "invalid-body"
    assert field in [e["field"] for e in r.json()["errors"]]


@pytest.mark.parametrize(
    ("body", "field"), [({"amount": 10_000_001}, "amount"), ({"amount": 100, "code": "NO$$$$$"}, "code")]
)
async def test_out_of_range_voucher_values_are_422_like_the_rest(
    api: Api, client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    site = await api.site()

    r = await create(client, site, **body)

    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]


async def test_creating_a_voucher_needs_the_site_secret_key(api: Api, client: httpx.AsyncClient) -> None:
    await api.site()
    wallet = await api.wallet()

    missing = await client.post("/v1/admin/vouchers", json={"amount": 100})
    wrong = await client.post("/v1/admin/vouchers", json={"amount": 100}, headers=auth("sk_not-a-real-key"))
    a_wallet = await client.post("/v1/admin/vouchers", json={"amount": 100}, headers=auth(wallet))

    for r in (missing, wrong, a_wallet):
        assert r.status_code == 401, r.text
        assert problem_type(r) == "unauthorized"


async def test_cli_voucher_create_prints_json_with_the_code(
    api: Api,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    site = await api.site()
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("COINSLOT_REDIS_URL", redis_url)

    # The CLI runs its own event loop (asyncio.run), so it runs beside this one.
    status = await asyncio.to_thread(cli.main, ["voucher", "create", site[0], "--amount", "300", "--uses", "2"])

    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert GENERATED_CODE.match(printed["code"])
    assert (printed["site"], printed["amount"], printed["currency"], printed["uses"]) == (site[0], 300, "EUR", 2)
    wallet = await api.wallet()
    assert (await api.redeem(wallet, printed["code"])).json()["credited"] == 300


async def test_cli_voucher_create_with_a_custom_code(
    api: Api,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    site = await api.site()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COINSLOT_REDIS_URL", redis_url)

    status = await asyncio.to_thread(
        cli.main, ["voucher", "create", site[0], "--amount", "100", "--code", "CLI-CODE-1"]
    )
    again = await asyncio.to_thread(cli.main, ["voucher", "create", site[0], "--amount", "100", "--code", "cli code 1"])

    assert status == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["code"] == "CLI-CODE-1"
    assert again == 2
    assert "already exists" in err


# Redeeming --------------------------------------------------------------------------


async def test_redeem_credits_balance_and_ledger(api: Api, client: httpx.AsyncClient, store: Store) -> None:
    site = await api.site()
    code = await api.voucher(site, 500)
    wallet = await api.wallet()

    r = await api.redeem(wallet, code)

    assert r.status_code == 200, r.text
    assert r.json() == {"credited": 500, "balance": 500, "currency": "EUR"}
    assert r.headers["cache-control"] == "no-store"
    view = (await client.get("/v1/wallet", headers=auth(wallet))).json()
    assert view["balance"] == 500
    [line] = view["ledger"]
    assert (line["kind"], line["amount"], line["balance"], line["site"]) == ("voucher", 500, 500, site[0])
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    assert report.accounts[f"site:{site[0]}:promotions"]["EUR"] == -500  # the issuing site pays (rule 9)


async def test_voucher_money_is_ordinary_money_in_the_wallet(api: Api) -> None:
    issuer, shop = await api.site(), await api.site()
    await api.item(shop, "article-1", 120)
    wallet = await api.wallet()
    await api.fund(issuer, wallet, 200)

    r = await api.unlock(wallet, shop[0], "article-1")

    assert r.status_code == 200, r.text
    assert r.json()["balance"] == 80


@pytest.mark.parametrize("spelling", ["lower", "no dashes", "spaces", "mixed"])
async def test_codes_are_case_dash_and_space_insensitive(api: Api, spelling: str) -> None:
    site = await api.site()
    code = await api.voucher(site, 100)
    typed = {
        "lower": code.lower(),
        "no dashes": code.replace("-", ""),
        "spaces": " " + code.replace("-", " ") + " ",
        "mixed": code[:7].lower() + code[7:].replace("-", " - "),
    }[spelling]
    wallet = await api.wallet()

    r = await api.redeem(wallet, typed)

    assert r.status_code == 200, r.text
    assert r.json()["credited"] == 100


async def test_same_wallet_redeeming_twice_is_409_and_credits_once(api: Api, store: Store) -> None:
    site = await api.site()
    code = await api.voucher(site, 300, uses=5)
    wallet = await api.wallet()
    assert (await api.redeem(wallet, code)).status_code == 200

    r = await api.redeem(wallet, code.lower())

    assert r.status_code == 409
    assert problem_type(r) == "voucher-already-redeemed"
    assert await api.balance(wallet) == 300
    assert await uses_left(store, code) == 4


async def test_used_up_voucher_is_409_unavailable(api: Api) -> None:
    site = await api.site()
    code = await api.voucher(site, 100, uses=2)
    first, second, third = await api.wallet(), await api.wallet(), await api.wallet()
    await api.redeem(first, code)
    await api.redeem(second, code)

    r = await api.redeem(third, code)

    assert r.status_code == 409
    assert problem_type(r) == "voucher-unavailable"
    assert await api.balance(third) == 0


@pytest.mark.parametrize("code", ["NOPE-NOPE-NOPE-NOPE", "x", "$$$$$$$$$", "{v:}"])
async def test_unknown_code_is_409_unavailable(api: Api, store: Store, code: str) -> None:
    wallet = await api.wallet()

    r = await api.redeem(wallet, code)

    assert r.status_code == 409, r.text
    assert problem_type(r) == "voucher-unavailable"
    assert await api.balance(wallet) == 0


async def test_redeem_needs_a_wallet(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/vouchers/redeem", json={"code": "ABCD-EFGH-IJKL-MNOP"})

    assert r.status_code == 401
    assert problem_type(r) == "unauthorized"


async def test_voucher_in_another_currency_is_409_and_the_use_is_given_back(api: Api, store: Store) -> None:
    site = await api.site(currency="GBP")
    code = await api.voucher(site, 500, uses=1)
    eur, gbp = await api.wallet("EUR"), await api.wallet("GBP")

    refused = await api.redeem(eur, code)

    assert refused.status_code == 409
    assert problem_type(refused) == "currency-mismatch"
    assert await api.balance(eur) == 0
    assert await uses_left(store, code) == 1
    taken = await api.redeem(gbp, code)
    assert taken.status_code == 200, taken.text
    assert taken.json() == {"credited": 500, "balance": 500, "currency": "GBP"}
    assert (await ledger.reconcile(store)).clean


# Concurrency ------------------------------------------------------------------------


async def test_one_use_voucher_redeemed_by_20_wallets_at_once_credits_once(api: Api, store: Store) -> None:
    site = await api.site()
    code = await api.voucher(site, 700, uses=1)
    wallets = [await api.wallet() for _ in range(20)]

    results = await asyncio.gather(*(api.redeem(w, code) for w in wallets))

    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 1
    assert statuses.count(409) == 19
    assert {problem_type(r) for r in results if r.status_code == 409} == {"voucher-unavailable"}
    assert sum([await api.balance(w) for w in wallets]) == 700
    assert await uses_left(store, code) == 0
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    assert report.entries == 1


async def test_three_use_voucher_redeemed_by_20_wallets_at_once_credits_three(api: Api, store: Store) -> None:
    site = await api.site()
    code = await api.voucher(site, 150, uses=3)
    wallets = [await api.wallet() for _ in range(20)]

    results = await asyncio.gather(*(api.redeem(w, code) for w in wallets))

    assert [r.status_code for r in results].count(200) == 3
    balances = [await api.balance(w) for w in wallets]
    assert sorted(balances, reverse=True)[:4] == [150, 150, 150, 0]
    assert sum(balances) == 450
    assert await uses_left(store, code) == 0
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    assert report.accounts[f"site:{site[0]}:promotions"]["EUR"] == -450


async def test_one_wallet_redeeming_20_times_at_once_credits_once(api: Api, store: Store) -> None:
    site = await api.site()
    code = await api.voucher(site, 400, uses=10)
    wallet = await api.wallet()

    results = await asyncio.gather(*(api.redeem(wallet, code) for _ in range(20)))

    statuses = [r.status_code for r in results]
    assert statuses.count(200) == 1
    assert {problem_type(r) for r in results if r.status_code != 200} == {"voucher-already-redeemed"}
    assert await api.balance(wallet) == 400
    assert await uses_left(store, code) == 9
    report = await ledger.reconcile(store)
    assert report.clean, report.problems
    assert report.entries == 1


async def test_concurrent_wrong_currency_redeems_give_every_use_back(api: Api, store: Store) -> None:
    site = await api.site(currency="GBP")
    code = await api.voucher(site, 100, uses=2)
    eur_wallets = [await api.wallet("EUR") for _ in range(10)]

    results = await asyncio.gather(*(api.redeem(w, code) for w in eur_wallets))

    assert {r.status_code for r in results} == {409}
    assert await uses_left(store, code) == 2
    for w in [await api.wallet("GBP"), await api.wallet("GBP")]:
        assert (await api.redeem(w, code)).status_code == 200


async def test_a_take_whose_reply_was_lost_still_credits_on_retry(api: Api, store: Store) -> None:
    """A connection lost after voucher_take ran: the retried call finds its use taken, and credits it once."""
    site = await api.site()
    code = await api.voucher(site, 300, uses=2)
    wallet = await api.wallet()
    wallet_id = (await api.client.get("/v1/wallet", headers=auth(wallet))).json()["wallet_id"]
    voucher_key, redeemed_by = keys.voucher_keys(vouchers.normalize_code(code))
    await store.run("voucher_take", [voucher_key, redeemed_by], [wallet_id])  # the run whose reply was lost

    first = await api.redeem(wallet, code)
    second = await api.redeem(wallet, code)

    assert first.status_code == 200
    assert problem_type(second) == "voucher-already-redeemed"
    assert await api.balance(wallet) == 300
    assert await uses_left(store, code) == 1
