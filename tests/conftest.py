"""Fixtures: real redis-server processes (standalone and a 3-master cluster) and the app.

The servers start once per session; every test starts from empty databases. Tests that
take the ``redis_url`` fixture run twice, once on each kind of server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import RedisCluster
from starlette.datastructures import Secret

from coinslot.app import create_app
from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.settings import Settings
from coinslot.store import Store, connect

from servers import Cluster, Standalone, start_cluster, start_standalone
from stripe_stub import SECRET_KEY as STRIPE_SECRET_KEY
from stripe_stub import WEBHOOK_SECRET, StripeStub, start_stub

PUBLIC_URL = "http://127.0.0.1:8000"
SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="session")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standalone]:
    with start_standalone(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster")) as server:
        yield server


@pytest.fixture(params=["standalone", pytest.param("cluster", marks=pytest.mark.cluster)])
def redis_url(request: pytest.FixtureRequest) -> str:
    server = request.getfixturevalue(request.param)
    url: str = server.url
    return url


@pytest.fixture
def standalone_url(standalone: Standalone) -> str:
    return standalone.url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    async with _store(redis_url) as s:
        yield s


@pytest.fixture
async def standalone_store(standalone_url: str) -> AsyncIterator[Store]:
    async with _store(standalone_url) as s:
        yield s


@contextlib.asynccontextmanager
async def _store(url: str) -> AsyncIterator[Store]:
    store = Store(await connect(url))
    if isinstance(store.redis, RedisCluster):
        await store.redis.flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        await store.redis.flushall()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="session")
def keyring() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


def make_settings(tmp_path: Path, **changes: object) -> Settings:
    # Tests drive one wallet far faster than any reader, on a clock that stands still (one rate
    # window); the tests of the per-wallet unlock limit set their own.
    base = Settings(
        public_url=PUBLIC_URL,
        data_dir=tmp_path / "data",
        secret_keys=(Secret(SECRET),),
        unlocks_per_wallet_per_minute=100_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, redis=store.redis, clock=clock, keyring=keyring)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def client(
    tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(tmp_path), store, clock, keyring) as c:
        yield c


@pytest.fixture
async def standalone_client(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the standalone server only, for tests that are not about storage."""
    async with running_app(make_settings(tmp_path), standalone_store, clock, keyring) as c:
        yield c


_ids = itertools.count()


def unique(prefix: str) -> str:
    """An id that no other test in this run uses."""
    return f"{prefix}{next(_ids)}"


# Stripe: the real library against a local stub of its API ---------------------------


@pytest.fixture
def stripe_stub() -> Iterator[StripeStub]:
    """A fresh stub per test, so listing sessions sees only this test's."""
    stub, server = start_stub()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def real_time_clock() -> FrozenClock:
    """A frozen clock at the real time: Stripe (and its signature tolerance) lives in real time."""
    return FrozenClock(time.time_ns() // 1_000_000)


def stripe_settings(tmp_path: Path, stub: StripeStub, **changes: object) -> Settings:
    return make_settings(
        tmp_path,
        payments="stripe",
        payments_explicit=True,
        stripe_secret_key=Secret(STRIPE_SECRET_KEY),
        stripe_webhook_secret=Secret(WEBHOOK_SECRET),
        stripe_api_base=stub.url,
        **changes,
    )


@pytest.fixture
async def stripe_client(
    tmp_path: Path, store: Store, real_time_clock: FrozenClock, keyring: KeyRing, stripe_stub: StripeStub
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with COINSLOT_PAYMENTS=stripe, on standalone Redis and on Cluster."""
    async with running_app(stripe_settings(tmp_path, stripe_stub), store, real_time_clock, keyring) as c:
        yield c
