"""Client addresses never reach Redis in the clear, and their pseudonyms cannot outlive a few days."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from coinslot.addresses import DAY_MS, SALT_TTL_S, Addresses
from coinslot.clock import FrozenClock
from coinslot.keyspace import address_salt_key
from coinslot.store import Store

from api import Api, auth

CLIENT = "203.0.113.7"  # the address the test app's transport reports (conftest.running_app)


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


async def everything_stored(store: Store) -> list[str]:
    """Every key and every value in the database, as text."""
    r = store.redis
    found: list[str] = []
    async for key in r.scan_iter(count=1000):
        found.append(key)
        kind = await r.type(key)
        value: Any = {
            "string": r.get,
            "hash": r.hgetall,
            "set": r.smembers,
            "list": lambda k: r.lrange(k, 0, -1),
            "zset": lambda k: r.zrange(k, 0, -1),
        }.get(kind, lambda k: r.type(k))(key)
        try:
            found.append(repr(await value))
        except UnicodeDecodeError:
            # Binary: only a HyperLogLog (the dashboard's unique readers), whose registers hold no
            # text; PFCOUNT refuses any other value.
            assert await r.pfcount(key) >= 0
            found.append(f"<HyperLogLog {key}>")
    return found


async def test_no_key_or_value_holds_a_client_address(api: Api) -> None:
    site = await api.site(tab_limit=100)
    await api.item(site, "a", 40)
    wallet = await api.wallet()  # counted per address
    assert (await api.unlock(wallet, site[0], "a")).status_code == 200  # a tab: counted per address and day
    wrong = await api.client.post("/v1/vouchers/redeem", json={"code": "NOPE-NOPE"}, headers=auth(wallet))
    assert wrong.status_code in (404, 409)  # a failed guess: counted per address
    topup = await api.client.post("/v1/topups", json={"amount": 500}, headers=auth(wallet))
    assert topup.status_code == 201  # counted per address

    stored = await everything_stored(api.store)

    assert stored and not [s for s in stored if CLIENT in s]


async def test_an_address_has_one_pseudonym_a_day_in_every_process(standalone_store: Store) -> None:
    one, other = Addresses(standalone_store), Addresses(standalone_store)
    day = 20_000 * DAY_MS  # some UTC day

    today = await one.pseudonym(CLIENT, day + 1)
    assert await other.pseudonym(CLIENT, day + DAY_MS - 1) == today  # another process, same day
    assert await one.pseudonym("198.51.100.1", day) != today
    assert await one.pseudonym(CLIENT, day + DAY_MS) != today  # the next day: unlinkable to today's
    assert len(today) == 20 and CLIENT not in today

    ttl = await standalone_store.redis.ttl(address_salt_key(20_000))
    assert 0 < ttl <= SALT_TTL_S  # then the day's key is gone, and today's pseudonyms with it
