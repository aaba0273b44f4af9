from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.asyncio import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from servers import Cluster, start_cluster, start_standalone


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with start_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def test_standalone_serves_and_stops(tmp_path: Path) -> None:
    server = start_standalone(tmp_path)
    try:
        with redis.Redis.from_url(server.url) as conn:
            conn.set("k", "v")
            assert conn.get("k") == b"v"
    finally:
        server.stop()
    with pytest.raises(redis.ConnectionError), redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0)) as conn:
        conn.ping()


def test_cluster_has_three_masters_each_serving_keys(cluster: Cluster) -> None:
    with RedisCluster.from_url(cluster.url) as rc:
        masters = rc.get_primaries()
        assert sorted(node.port for node in masters) == sorted(cluster.ports)
        for node in masters:
            # A tag whose slot this master owns, so every master serves at least one key.
            tag = next(f"w:{i}" for i in range(10_000) if rc.get_node_from_key(f"{{w:{i}}}").name == node.name)
            slot = key_slot(f"{{{tag}}}".encode())
            rc.set(f"{{{tag}}}:balance", node.port)
            assert rc.get(f"{{{tag}}}:balance") == str(node.port).encode()
            with redis.Redis(port=node.port) as direct:
                assert direct.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
    with redis.Redis.from_url(cluster.url) as conn:
        nodes = conn.cluster("NODES")
    assert sorted(int(address.split(":")[1]) for address, node in nodes.items() if "master" in node["flags"]) == sorted(
        cluster.ports
    )


async def test_async_cluster_runs_eval_on_hash_tagged_keys(cluster: Cluster) -> None:
    rc = AsyncRedisCluster.from_url(cluster.url)
    try:
        await rc.set("{w:abc}:balance", 100)
        script = "redis.call('INCRBY', KEYS[2], ARGV[1]); return redis.call('DECRBY', KEYS[1], ARGV[1])"
        assert await rc.eval(script, 2, "{w:abc}:balance", "{w:abc}:spent", 40) == 60
        assert await rc.get("{w:abc}:spent") == b"40"
    finally:
        await rc.aclose()
