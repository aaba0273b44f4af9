"""Redis access: the connection (standalone, Sentinel or Cluster) and the Store the domain modules share.

Key names are in ``coinslot.keyspace``, the Lua scripts in ``coinslot.scripts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel

from coinslot.errors import ConfigurationError
from coinslot.pipe import ScriptPipe
from coinslot.scripts import SCRIPTS, Script

AnyRedis = Redis | RedisCluster

# A Redis that stops answering (a stalled disk, a partition that drops packets without a reset)
# fails each call after this long, as a 503, instead of holding its request for ever. A redis://
# URL that names socket_timeout or socket_connect_timeout in its query keeps its own value.
COMMAND_TIMEOUT_S = 5.0
_TIMEOUTS: dict[str, Any] = {"socket_timeout": COMMAND_TIMEOUT_S, "socket_connect_timeout": COMMAND_TIMEOUT_S}


class Store:
    """The Redis client and the scripts; one per app, shared by the domain modules."""

    def __init__(self, redis: AnyRedis) -> None:
        # redis-py types its async commands as ``Awaitable[T] | T`` and both client classes
        # differ in small ways; typed as Any here, checked by the suite against both.
        self.redis: Any = redis
        self.is_cluster = isinstance(redis, RedisCluster)
        self.scripts = {name: Script(name) for name in SCRIPTS}
        # A cluster pipeline would have to be split by node and follow redirections: there
        # each script call goes on its own, through the cluster client.
        self.pipe = None if isinstance(redis, RedisCluster) else ScriptPipe(redis)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        script = self.scripts[name]
        if self.pipe is None:
            return await script(self.redis, keys, args)
        return await self.pipe.run(script, keys, args)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        await self.redis.aclose()


class SentinelMaster(Redis):
    """The master found through Sentinel; closing it closes its pool and the sentinel clients."""

    # Not "sentinel": Redis already has a SENTINEL command method by that name.
    sentinel_client: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool=True)
        for client in self.sentinel_client.sentinels:
            await client.aclose()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """``redis+sentinel://[:password@]host:26379,host2:26379/service[/db]`` → its parts."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    sentinels = []
    for address in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"sentinel address {address!r} in {url!r} must be host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or (len(path) > 1 and not path[1].isdigit()):
        raise ConfigurationError(f"sentinel URL {url!r} must look like redis+sentinel://host:26379/service[/db]")
    return sentinels, path[0], int(path[1]) if len(path) > 1 else 0, password


async def connect(url: str) -> AnyRedis:
    """Connect to ``url``: standalone, a Sentinel-managed master, or a Cluster (detected)."""
    if url.startswith("redis+sentinel://"):
        sentinels, service, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(
            sentinels, socket_timeout=COMMAND_TIMEOUT_S, sentinel_kwargs={"password": password} if password else {}
        )
        # Each new connection asks the sentinels for the master again, so a failover is followed.
        master: SentinelMaster = sentinel.master_for(
            service,
            redis_class=SentinelMaster,
            db=db,
            password=password,
            decode_responses=True,
            protocol=2,
            **_TIMEOUTS,
        )
        master.sentinel_client = sentinel
        await master.ping()
        return master
    probe: Redis = Redis.from_url(url, decode_responses=True, protocol=2, **_TIMEOUTS)
    try:
        info = await asyncio.wait_for(probe.info("cluster"), timeout=10)
    finally:
        await probe.aclose()
    if info.get("cluster_enabled"):
        # The cluster client cannot wait for a free connection, so its ceiling is generous.
        cluster: RedisCluster = RedisCluster.from_url(
            url, decode_responses=True, protocol=2, max_connections=2048, **_TIMEOUTS
        )
        await cluster.initialize()
        return cluster
    # A burst beyond the pool waits for a connection instead of failing the request.
    pool = BlockingConnectionPool.from_url(
        url, decode_responses=True, protocol=2, max_connections=256, timeout=10, **_TIMEOUTS
    )
    return Redis.from_pool(pool)
