"""Recovery codes: issued once and kept only as an HMAC, exchanged for a new generation of the
wallet, guessed only slowly, gone with an erased wallet; and a recovery racing an unlock."""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import keyspace, ledger, recovery
from coinslot.clock import FrozenClock
from coinslot.errors import BadRecoveryCode, ConfigurationError, UnknownWallet
from coinslot.keyring import KeyRing
from coinslot.recovery import RecoveryCodes
from coinslot.settings import Settings
from coinslot.store import Store
from coinslot.tokens import WalletRef
from coinslot.wallets import create_wallet

from api import Api, auth
from conftest import PUBLIC_URL, SECRET, make_settings, running_app
from test_addresses import everything_stored

CARD = {"Sec-Fetch-Site": "same-origin", "Origin": PUBLIC_URL}  # what the card's iframe sends
GROUPED = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){5}")
HOUR_S = 60 * 60


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


@pytest.fixture
async def limited(tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing) -> AsyncIterator[Api]:
    """An app with small limits, that trusts one proxy hop so a test can speak from several addresses."""
    settings = make_settings(
        tmp_path, trusted_proxy_hops=1, failed_recoveries_per_ip_per_hour=3, failed_recoveries_per_prefix_per_hour=2
    )
    async with running_app(settings, store, clock, keyring) as client:
        yield Api(client, store, clock)


async def issue(api: Api, token: str) -> str:
    r = await api.client.post("/v1/wallet/recovery-code", headers=auth(token))
    assert r.status_code == 201, r.text
    assert r.json()["created_at"] == api.clock.now_ms()
    code: str = r.json()["code"]
    return code


async def recover(api: Api, code: str, *, address: str | None = None, **headers: str) -> httpx.Response:
    if address is not None:
        headers["X-Forwarded-For"] = address
    return await api.client.post("/v1/wallets/recover", json={"code": code}, headers=headers)


def another_code(code: str, *, first_group: str | None = None) -> str:
    """A well-formed code that is not ``code`` (with ``first_group`` in front, if given)."""
    groups = recovery.generate_code().split("-")
    if first_group is not None:
        groups[0] = first_group
    other = "-".join(groups)
    assert other != code
    return other


async def after_turns(turns: int, call: Awaitable[httpx.Response]) -> httpx.Response:
    for _ in range(turns):
        await asyncio.sleep(0)
    return await call


def problem_type(r: httpx.Response) -> str:
    kind: str = r.json()["type"]
    return kind.rsplit("/", 1)[-1]


# The code ---------------------------------------------------------------------------------


def test_a_code_is_120_random_bits_in_groups_of_four() -> None:
    assert len(set(recovery.ALPHABET)) == 32 and not set("ILOU") & set(recovery.ALPHABET)
    assert recovery.CODE_CHARS * math.log2(len(recovery.ALPHABET)) >= 100
    codes = [recovery.generate_code() for _ in range(2000)]

    assert all(GROUPED.fullmatch(c) for c in codes)
    assert len(set(codes)) == len(codes)
    # Every character turns up at every position: nothing about a code is fixed or skewed away.
    for position in range(recovery.CODE_CHARS):
        seen = Counter(c.replace("-", "")[position] for c in codes)
        assert set(seen) == set(recovery.ALPHABET), position


def test_a_code_is_read_back_whatever_its_case_spacing_and_confusable_letters() -> None:
    assert recovery.normalize_code("ABCD-EFGH-JKMN-PQRS-TVWX-YZ01") == "ABCDEFGHJKMNPQRSTVWXYZ01"
    assert recovery.normalize_code(" abcd efgh\tjkmn–pqrs  tvwx-yzol ") == "ABCDEFGHJKMNPQRSTVWXYZ01"
    assert recovery.normalize_code("IIII-LLLL-OOOO-iiii-llll-oooo") == "111111110000111111110000"
    for wrong in ("", "ABCD-EFGH", "ABCD-EFGH-JKMN-PQRS-TVWX-YZ01-2", "UBCD-EFGH-JKMN-PQRS-TVWX-YZ01", "ABCD_EFGH"):
        assert recovery.normalize_code(wrong) is None, wrong


# Issuing and recovering -------------------------------------------------------------------


async def test_the_code_is_kept_only_as_an_hmac(api: Api) -> None:
    token = await api.wallet()
    code = await issue(api, token)

    stored = await everything_stored(api.store)

    plain = code.replace("-", "")
    assert stored and not [s for s in stored if plain in s or code in s or plain[:8] in s]
    index = [s for s in stored if s.startswith(keyspace.recovery_index_key(""))]
    assert len(index) == 1 and len(index[0]) == len(keyspace.recovery_index_key("")) + 64  # HMAC-SHA256, hex
    view = (await api.client.get("/v1/wallet", headers=auth(token))).json()
    assert view["recovery_code"] is True


async def test_recovering_gives_a_token_of_the_same_wallet_and_ends_every_older_token(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    await api.item(site, "b", 30)
    old = await api.wallet()
    assert (await api.client.get("/v1/wallet", headers=auth(old))).json()["recovery_code"] is False
    await api.fund(site, old, 100)
    assert (await api.unlock(old, site[0], "a")).json()["charged"] == 19
    topup = await api.client.post("/v1/topups", json={"amount": 500}, headers=auth(old))
    code = await issue(api, old)
    wallet_id = await api.wallet_id(old)

    r = await recover(api, code.lower().replace("-", " "))

    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store" and "set-cookie" not in r.headers
    body = r.json()
    new = body.pop("token")
    assert body == {"wallet_id": wallet_id, "balance": 81, "currency": "EUR"}
    assert await api.wallet_id(new) == wallet_id
    again = await api.unlock(new, site[0], "a")
    assert again.status_code == 200 and again.json()["charged"] == 0  # still owned: nothing is charged twice
    card = await api.client.get(f"/v1/card/{site[0]}/a", headers=auth(new))
    assert card.json()["owned"] is True
    voucher = await api.voucher(site, 10)
    calls: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
        "read": lambda: api.client.get("/v1/wallet", headers=auth(old)),
        "export": lambda: api.client.get("/v1/wallet/export", headers=auth(old)),
        "unlock": lambda: api.unlock(old, site[0], "b"),
        "owned unlock": lambda: api.unlock(old, site[0], "a"),
        "card": lambda: api.client.get(f"/v1/card/{site[0]}/a", headers=auth(old)),
        "top-up": lambda: api.client.post("/v1/topups", json={"amount": 500}, headers=auth(old)),
        "top-up status": lambda: api.client.get(f"/v1/topups/{topup.json()['topup_id']}", headers=auth(old)),
        "voucher": lambda: api.redeem(old, voucher),
        "new code": lambda: api.client.post("/v1/wallet/recovery-code", headers=auth(old)),
        "erase": lambda: api.client.delete("/v1/wallet", headers=auth(old)),
    }
    for name, call in calls.items():
        refused = await call()
        assert refused.status_code == 401 and problem_type(refused) == "unknown-wallet", name
    assert await api.balance(new) == 81
    # The code stays the wallet's: used again (another device), it moves the wallet once more.
    newest = (await recover(api, code)).json()["token"]
    assert (await api.client.get("/v1/wallet", headers=auth(new))).status_code == 401
    assert await api.balance(newest) == 81
    assert (await ledger.reconcile(api.store)).clean


async def test_a_new_code_replaces_the_old_one(api: Api) -> None:
    token = await api.wallet()
    first = await issue(api, token)
    second = await issue(api, token)

    assert first != second
    # The old index entry went with the replacement itself, not only once someone tried the old code.
    assert len([k async for k in api.store.redis.scan_iter(match=keyspace.recovery_index_key("*"))]) == 1
    assert problem_type(await recover(api, first)) == "bad-recovery-code"
    assert (await recover(api, second)).status_code == 200


async def test_every_wrong_code_gets_the_same_answer(api: Api) -> None:
    token = await api.wallet()
    replaced = await issue(api, token)
    code = await issue(api, token)
    erased_token = await api.wallet()
    erased = await issue(api, erased_token)
    assert (await api.client.delete("/v1/wallet", headers=auth(erased_token))).status_code == 200

    answers = [
        await recover(api, wrong)
        for wrong in (
            another_code(code),
            replaced,
            erased,
            "not a code",
            code[:-1],
            another_code(code, first_group=code[:4]),
        )
    ]

    assert {r.status_code for r in answers} == {400}
    assert {r.content for r in answers} == {answers[0].content}
    assert problem_type(answers[0]) == "bad-recovery-code"
    assert all(r.headers["content-type"] == "application/problem+json" for r in answers)


async def test_the_card_gets_the_new_token_as_its_cookie_never_in_the_body(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    token = await api.wallet()
    await api.fund(site, token, 50)
    assert (await api.unlock(token, site[0], "a")).status_code == 200
    code = await issue(api, token)

    r = await recover(api, code, **CARD)

    assert r.status_code == 200, r.text
    assert "token" not in r.json() and r.json()["balance"] == 31
    cookie = r.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=None", "Partitioned", "Path=/"):
        assert attribute in cookie
    api.client.cookies.clear()
    new_cookie = {"Cookie": cookie.split(";", 1)[0], "Sec-Fetch-Site": "same-origin"}
    card = await api.client.get(f"/v1/card/{site[0]}/a", headers=new_cookie)
    assert card.json()["owned"] is True and card.json()["balance"] == 31
    assert (await api.client.get("/v1/wallet", headers=auth(token))).status_code == 401


async def test_the_card_saves_a_code_with_its_cookie(api: Api) -> None:
    token = await api.wallet()
    card = {**CARD, "Cookie": f"coinslot_wallet={token}"}

    r = await api.client.post("/v1/wallet/recovery-code", headers=card)

    assert r.status_code == 201 and r.headers["cache-control"] == "no-store"
    assert GROUPED.fullmatch(r.json()["code"])
    cross_site = {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost:8001", "Cookie": card["Cookie"]}
    assert (await api.client.post("/v1/wallet/recovery-code", headers=cross_site)).status_code == 401


# Guessing ---------------------------------------------------------------------------------


async def test_guesses_are_limited_per_client_address(limited: Api) -> None:
    api = limited
    code = await issue(api, await api.wallet())
    for _ in range(3):
        assert (await recover(api, another_code(code), address="198.51.100.1")).status_code == 400

    refused = await recover(api, code, address="198.51.100.1")  # counted before it is checked: even the right one

    assert refused.status_code == 429 and problem_type(refused) == "rate-limited"
    assert 0 < int(refused.headers["retry-after"]) <= HOUR_S
    assert (await recover(api, code, address="198.51.100.2")).status_code == 200  # another address
    api.clock.advance(int(refused.headers["retry-after"]))
    assert (await recover(api, code, address="198.51.100.1")).status_code == 200


async def test_guesses_are_limited_per_code_prefix_whatever_the_address(limited: Api) -> None:
    api = limited
    code = await issue(api, await api.wallet())
    prefix = code[:4]
    for n in range(2):
        wrong = another_code(code, first_group=prefix)
        assert (await recover(api, wrong, address=f"198.51.100.{n}")).status_code == 400

    refused = await recover(api, code, address="198.51.100.9")

    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    other_prefix = "0000" if prefix != "0000" else "1111"
    assert (await recover(api, another_code(code, first_group=other_prefix), address="198.51.100.9")).status_code == 400
    # The prefix buckets are named by a keyed hash: no part of a code is kept, not even its first group.
    buckets = [
        k async for k in api.store.redis.scan_iter(match=keyspace.rate_limit_key("recover-prefix:*", 0)[:-1] + "*")
    ]
    assert len(buckets) == 2
    assert all(re.fullmatch(r"rl:recover-prefix:[0-9a-f]{16}:[0-9]+", k) for k in buckets), buckets


async def test_a_recovery_that_works_is_not_counted_as_a_guess(limited: Api) -> None:
    api = limited
    code = await issue(api, await api.wallet())

    for _ in range(5):  # more than either limit (3 per address, 2 per prefix)
        assert (await recover(api, code, address="198.51.100.1")).status_code == 200


def test_the_limits_come_from_the_environment_and_refuse_zero() -> None:
    env = {"COINSLOT_FAILED_RECOVERIES_PER_IP_PER_HOUR": "7", "COINSLOT_FAILED_RECOVERIES_PER_PREFIX_PER_HOUR": "2"}
    s = Settings.from_env(env, env_file=None)
    assert (s.failed_recoveries_per_ip_per_hour, s.failed_recoveries_per_prefix_per_hour) == (7, 2)
    d = Settings.from_env({}, env_file=None)
    assert (d.failed_recoveries_per_ip_per_hour, d.failed_recoveries_per_prefix_per_hour) == (10, 5)
    for name in env:
        with pytest.raises(ConfigurationError, match=name):
            Settings.from_env({name: "0"}, env_file=None)


# Erasure, export and secrets ----------------------------------------------------------------


async def test_erasing_the_wallet_removes_its_code_and_the_export_says_one_was_saved(api: Api) -> None:
    token = await api.wallet()
    code = await issue(api, token)
    exported = (await api.client.get("/v1/wallet/export", headers=auth(token))).json()["wallet"]
    assert exported["recovery_code"] is True and exported["recovery_code_created_at"] == api.clock.now_ms()
    assert code not in str(exported) and code.replace("-", "") not in str(exported)

    assert (await api.client.delete("/v1/wallet", headers=auth(token))).status_code == 200

    assert [k async for k in api.store.redis.scan_iter(match=keyspace.recovery_index_key("*"))] == []
    assert problem_type(await recover(api, code)) == "bad-recovery-code"


async def test_a_wallet_without_a_code_exports_none(api: Api) -> None:
    token = await api.wallet()
    exported = (await api.client.get("/v1/wallet/export", headers=auth(token))).json()["wallet"]
    assert exported["recovery_code"] is False and exported["recovery_code_created_at"] is None


async def test_codes_survive_a_new_secret_and_end_with_the_secret_they_were_saved_under(
    store: Store, clock: FrozenClock
) -> None:
    old, new = SECRET.encode(), b"another-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
    wallet = await create_wallet(store, currency="EUR", now_ms=clock.now_ms())
    code = (await RecoveryCodes(store, [old]).issue(wallet, now_ms=clock.now_ms())).code

    rotated = await RecoveryCodes(store, [old, new]).recover(code, now_ms=clock.now_ms())
    assert rotated.ref == WalletRef(wallet.wallet_id, 2)
    newer = (await RecoveryCodes(store, [old, new]).issue(rotated.ref, now_ms=clock.now_ms())).code
    with pytest.raises(BadRecoveryCode):
        await RecoveryCodes(store, [new]).recover(code, now_ms=clock.now_ms())
    assert (await RecoveryCodes(store, [new]).recover(newer, now_ms=clock.now_ms())).ref.generation == 3


async def test_an_index_entry_the_wallet_does_not_name_opens_nothing_and_goes(store: Store, clock: FrozenClock) -> None:
    """What a failure between issuing's two steps leaves behind: an index entry the wallet names no more."""
    codes = RecoveryCodes(store, [SECRET.encode()])
    wallet = await create_wallet(store, currency="EUR", now_ms=clock.now_ms())
    code = (await codes.issue(wallet, now_ms=clock.now_ms())).code
    [index] = [k async for k in store.redis.scan_iter(match=keyspace.recovery_index_key("*"))]
    await store.redis.hset(keyspace.wallet_key(wallet.wallet_id), keyspace.RECOVERY_FIELD, "another code's HMAC")

    with pytest.raises(BadRecoveryCode):
        await codes.recover(code, now_ms=clock.now_ms())

    assert not await store.redis.exists(index)
    with pytest.raises(UnknownWallet):  # and a stale token saves no code
        await codes.issue(WalletRef(wallet.wallet_id, 7), now_ms=clock.now_ms())
    assert [k async for k in store.redis.scan_iter(match=keyspace.recovery_index_key("*"))] == []


# A recovery racing an unlock ------------------------------------------------------------------


async def test_a_recovery_racing_unlocks_of_the_old_token_ends_it_and_charges_nothing_twice(api: Api) -> None:
    rounds = 20
    site = await api.site()
    for n in range(rounds):
        await api.item(site, f"i{n}", 7)
    token = await api.wallet()
    await api.fund(site, token, 1000)
    code = await issue(api, token)
    charged: list[int] = []

    for n in range(rounds):
        # The unlock starts 2n turns of the event loop after the recovery: each round meets the
        # recovery at another of its steps, from before its first Redis call to after its last.
        unlocked, recovered = await asyncio.gather(
            after_turns(2 * n, api.unlock(token, site[0], f"i{n}")), recover(api, code)
        )
        assert recovered.status_code == 200, recovered.text
        assert unlocked.status_code in (200, 401), unlocked.text
        late = await api.unlock(token, site[0], f"i{n}")  # the old token, after the recovery returned
        assert late.status_code == 401
        if unlocked.status_code == 200:
            charged.append(unlocked.json()["charged"])
        token = recovered.json()["token"]
        again = await api.unlock(token, site[0], f"i{n}")  # the new token: owned, or bought now, never twice
        assert again.status_code == 200
        if unlocked.status_code == 200:
            assert again.json()["charged"] == 0
        else:
            charged.append(again.json()["charged"])

    assert charged == [7] * rounds
    view: dict[str, Any] = (await api.client.get("/v1/wallet", headers=auth(token))).json()
    assert view["balance"] == 1000 - 7 * rounds
    assert len(view["purchases"]) == rounds
    assert (await ledger.reconcile(api.store)).clean
