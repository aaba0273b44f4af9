"""The store's connection and its script pipe, against real servers and their failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coinslot import ledger
from coinslot.clock import FrozenClock
from coinslot.errors import ConfigurationError
from coinslot.keyring import KeyRing
from coinslot.pipe import EAGER_WRITE_CALLS, pack
from coinslot.store import Store, connect, parse_sentinel_url

from api import Api
from conftest import make_settings, running_app
from servers import Sentinel, server_version, start_loading, start_sentinel, start_standalone


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


async def funded(api: Api, items: int, balance: int) -> tuple[str, str]:
    site = await api.site()
    for n in range(items):
        await api.item(site, f"i{n}", 1)
    wallet = await api.wallet()
    await api.fund(site, wallet, balance)
    return site[0], wallet


async def test_scripts_flushed_on_the_server_are_loaded_again(api: Api, standalone_store: Store) -> None:
    site, wallet = await funded(api, 20, 100)
    await standalone_store.redis.script_flush()

    results = await asyncio.gather(*(api.unlock(wallet, site, f"i{n}") for n in range(20)))

    assert [r.status_code for r in results] == [200] * 20
    assert await api.balance(wallet) == 80
    assert (await ledger.reconcile(standalone_store)).clean


async def test_an_error_in_one_call_of_a_batch_fails_that_call_only(standalone_store: Store) -> None:
    await standalone_store.redis.set("{w:oops}", "not a hash")
    good = [standalone_store.run("snapshot", ["{w:x" + str(n) + "}", "{w:x" + str(n) + "}:led"], []) for n in range(10)]
    bad = standalone_store.run("snapshot", ["{w:oops}", "{w:oops}:led"], [])

    results = await asyncio.gather(*good, bad, return_exceptions=True)

    assert all(r == [[], []] for r in results[:10])
    assert isinstance(results[10], ResponseError) and "WRONGTYPE" in str(results[10])


async def test_killed_connections_are_reconnected(api: Api, standalone_store: Store, standalone_url: str) -> None:
    site, wallet = await funded(api, 10, 100)
    assert (await api.unlock(wallet, site, "i0")).status_code == 200
    admin = Redis.from_url(standalone_url)
    try:
        await admin.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
        )
    finally:
        await admin.aclose()

    results = await asyncio.gather(*(api.unlock(wallet, site, f"i{n}") for n in range(1, 10)))

    assert [r.status_code for r in results] == [200] * 9
    assert await api.balance(wallet) == 90


async def test_a_cancelled_caller_does_not_disturb_the_others(standalone_store: Store) -> None:
    calls = [
        asyncio.ensure_future(standalone_store.run("snapshot", [f"{{w:c{n}}}", f"{{w:c{n}}}:led"], []))
        for n in range(10)
    ]
    calls[3].cancel()

    results = await asyncio.gather(*calls, return_exceptions=True)

    assert isinstance(results[3], asyncio.CancelledError)
    assert all(r == [[], []] for i, r in enumerate(results) if i != 3)


def test_script_calls_are_packed_as_redis_py_packs_them() -> None:
    command: list[str | int] = ["EVALSHA", "a" * 40, 2, "{w:1}:w", "{w:1}:owned", 1732460000000, "Grüße\t", "", -5]
    assert pack(command) == b"".join(Connection().pack_command(*command))
    with pytest.raises(TypeError, match="not bool"):
        pack(["EVALSHA", "a" * 40, 0, True])


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///coinslot",
        "redis+sentinel://host/coinslot",
        "redis+sentinel://h:1",
        "redis+sentinel://h:1/s/x",
    ],
)
def test_malformed_sentinel_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError, match="sentinel"):
        parse_sentinel_url(url)


def test_sentinel_url_parts() -> None:
    assert parse_sentinel_url("redis+sentinel://:p%40ss@a:26379,b:26380/pay/2") == (
        [("a", 26379), ("b", 26380)],
        "pay",
        2,
        "p@ss",
    )


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sentinel]:
    with start_sentinel(tmp_path_factory.mktemp("sentinel")) as server:
        yield server


@pytest.fixture
async def sentinel_store(sentinel: Sentinel) -> AsyncIterator[Store]:
    store = Store(await connect(sentinel.url))
    await store.redis.flushall()
    try:
        yield store
    finally:
        await store.close()


async def test_money_moves_through_a_sentinel_managed_master(
    sentinel_store: Store, sentinel: Sentinel, tmp_path: Path, clock: FrozenClock, keyring: KeyRing
) -> None:
    async with running_app(make_settings(tmp_path), sentinel_store, clock, keyring) as client:
        api = Api(client, sentinel_store, clock)
        site, wallet = await funded(api, 12, 10)

        results = await asyncio.gather(*(api.unlock(wallet, site, f"i{n}") for n in range(12)))

        assert sorted(r.status_code for r in results) == [200] * 10 + [402] * 2
    direct = Redis(port=sentinel.master_port, decode_responses=True)
    try:
        assert await direct.scard("wallets") == 1
    finally:
        await direct.aclose()
    assert (await ledger.reconcile(sentinel_store)).clean


async def test_every_caller_gets_its_own_reply_among_many_pipelined_calls(standalone_store: Store) -> None:
    wallets = [f"{{w:pipe{n}}}" for n in range(300)]
    for n, key in enumerate(wallets):
        await standalone_store.redis.hset(key, "n", str(n))
    await standalone_store.run("snapshot", [wallets[0], wallets[0] + ":led"], [])  # connected: calls go out as made
    writes_before = standalone_store.pipe.writes if standalone_store.pipe else 0

    async def snapshot(n: int) -> object:
        if n % 7 == 0:
            await asyncio.sleep(0)  # some calls in later ticks, written while earlier ones are on the wire
        return await standalone_store.run("snapshot", [wallets[n], wallets[n] + ":led"], [])

    results = await asyncio.gather(*(snapshot(n) for n in range(300)))

    assert results == [[["n", str(n)], []] for n in range(300)]
    assert standalone_store.pipe is not None
    assert standalone_store.pipe.writes - writes_before >= 300 // EAGER_WRITE_CALLS


async def test_a_reply_owed_too_long_fails_its_call_and_the_next_call_connects_anew(standalone_url: str) -> None:
    store = Store(Redis.from_url(standalone_url, decode_responses=True, protocol=2, socket_timeout=0.3))
    admin = Redis.from_url(standalone_url)
    try:
        assert await store.run("snapshot", ["{w:late}", "{w:late}:led"], []) == [[], []]
        await admin.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "PAUSE", 1000, "ALL"
        )

        with pytest.raises(RedisTimeoutError, match="within 0.3 s"):
            await store.run("snapshot", ["{w:late}", "{w:late}:led"], [])

        await admin.execute_command(  # type: ignore[no-untyped-call]
            "CLIENT", "UNPAUSE"
        )
        assert await store.run("snapshot", ["{w:late}", "{w:late}:led"], []) == [[], []]
    finally:
        await admin.aclose()
        await store.close()


async def test_a_redis_that_stops_answering_is_a_503_after_the_default_timeout(
    tmp_path: Path, clock: FrozenClock, keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no timeout in the URL, neither the script pipe nor redis-py waits for ever on a stalled Redis."""
    from coinslot import store as store_module

    monkeypatch.setitem(store_module._TIMEOUTS, "socket_timeout", 0.3)
    with start_standalone(tmp_path) as server:
        own = Store(await connect(server.url + "?socket_timeout=7"))
        assert own.redis.connection_pool.connection_kwargs["socket_timeout"] == 7  # the URL's own value wins
        await own.close()
        store = Store(await connect(server.url))
        admin = Redis.from_url(server.url)
        try:
            async with running_app(make_settings(tmp_path), store, clock, keyring) as client:
                api = Api(client, store, clock)
                site, wallet = await funded(api, 2, 10)
                assert (await api.unlock(wallet, site, "i0")).status_code == 200
                await client.app.state.services.catalog.item(site, "i1")  # type: ignore[attr-defined]
                await admin.execute_command(  # type: ignore[no-untyped-call]
                    "CLIENT", "PAUSE", 2000, "ALL"
                )
                unlock = await asyncio.wait_for(api.unlock(wallet, site, "i1"), timeout=1.5)  # the script pipe
                read = await asyncio.wait_for(  # redis-py
                    client.get("/v1/wallet", headers={"Authorization": f"Bearer {wallet}"}), timeout=1.5
                )
                health = await asyncio.wait_for(client.get("/healthz"), timeout=1.5)
                await admin.execute_command(  # type: ignore[no-untyped-call]
                    "CLIENT", "UNPAUSE"
                )
        finally:
            await admin.aclose()
            await store.close()
    for response in (unlock, read):
        assert response.json()["type"] == "https://coinslot.dev/problems/store-unavailable"
    assert health.json()["type"] == "https://coinslot.dev/problems/service-unavailable"
    for response in (unlock, read, health):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"  # a load balancer or client knows when to ask again
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_calls_fail_fast_when_redis_refuses_connections_or_the_store_is_closed(tmp_path: Path) -> None:
    with start_standalone(tmp_path) as server:
        store = Store(await connect(server.url))
    try:
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(store.run("snapshot", ["{w:gone}", "{w:gone}:led"], []), timeout=5)
    finally:
        await store.close()
    with pytest.raises(RedisConnectionError, match="closed"):
        await store.run("snapshot", ["{w:gone}", "{w:gone}:led"], [])


async def test_a_reset_connection_fails_the_calls_it_owed_as_a_store_failure(tmp_path: Path) -> None:
    """A socket reset (an OSError, as a killed Redis can leave) reaches callers as redis' ConnectionError: a 503."""
    with start_standalone(tmp_path) as server:
        store = Store(await connect(server.url))
        admin = Redis.from_url(server.url)
        try:
            await store.run("snapshot", ["{w:reset}", "{w:reset}:led"], [])  # the pipe is connected
            assert store.pipe is not None and store.pipe._connection is not None
            reader = store.pipe._connection._reader
            await admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")  # type: ignore[no-untyped-call]
            owed = asyncio.ensure_future(store.run("snapshot", ["{w:reset}", "{w:reset}:led"], []))
            await asyncio.sleep(0.05)  # written, its reply held back by the pause
            reader.set_exception(ConnectionResetError(104, "Connection reset by peer"))
            with pytest.raises(RedisConnectionError, match="Connection reset by peer"):
                await asyncio.wait_for(owed, timeout=5)
            await admin.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
            # The next call connects anew.
            assert await store.run("snapshot", ["{w:reset}", "{w:reset}:led"], []) is not None
        finally:
            await admin.aclose()
            await store.close()


async def test_redis_out_of_reach_is_a_503_problem_on_every_path(
    tmp_path: Path, clock: FrozenClock, keyring: KeyRing
) -> None:
    with start_standalone(tmp_path) as server:
        store = Store(await connect(server.url))
        async with running_app(make_settings(tmp_path), store, clock, keyring) as client:
            api = Api(client, store, clock)
            site, wallet = await funded(api, 2, 10)
            assert (await api.unlock(wallet, site, "i0")).status_code == 200
            server.stop()

            unlock = await api.unlock(wallet, site, "i1")  # the script pipe
            read = await client.get("/v1/wallet", headers={"Authorization": f"Bearer {wallet}"})  # redis-py

    await store.close()
    for response in (unlock, read):
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"] == "1"
        assert response.json()["type"] == "https://coinslot.dev/problems/store-unavailable"


async def test_requests_while_redis_loads_its_data_are_503s_to_retry(
    tmp_path: Path, clock: FrozenClock, keyring: KeyRing
) -> None:
    """After a restart Redis answers LOADING until its data is in memory: that is "try again", not a 500."""
    if server_version() < (7,):
        pytest.skip("Redis 6 answers clients while loading only every 2 MB read")
    workdir = tmp_path / "redis"
    with start_standalone(workdir) as first:
        port = first.port
        store = Store(await connect(first.url))
        try:
            async with running_app(make_settings(tmp_path), store, clock, keyring) as client:
                api = Api(client, store, clock)
                site, wallet = await funded(api, 2, 10)
                assert (await api.unlock(wallet, site, "i0")).status_code == 200
                await client.app.state.services.catalog.item(site, "i1")  # type: ignore[attr-defined]
                filler = "for i = 1, 2000 do redis.call('SET', 'filler:' .. i, string.rep('x', 64)) end"
                await store.redis.eval(filler, 0)
                await store.redis.save()
                first.stop()
                with start_loading(workdir, port, key_load_delay_us=2000):  # ~4 s of LOADING
                    # The pipe finds its connection gone first, then reconnects to a loading server.
                    unlocks = [await api.unlock(wallet, site, "i1") for _ in range(3)]  # the script pipe
                    read = await client.get("/v1/wallet", headers={"Authorization": f"Bearer {wallet}"})  # redis-py
                    health = await client.get("/healthz")
        finally:
            await store.close()
    for response in (*unlocks, read, health):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
