"""Webhook delivery across real processes: a worker killed mid-delivery, and two workers sharing the queue."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from coinslot import hookevents, hooks, keyspace
from coinslot.clock import SystemClock
from coinslot.store import Store
from receiver import receiver

WORKER = Path(__file__).with_name("hookworker.py")


@contextlib.contextmanager
def worker(redis_url: str, timeout_s: float = 10.0) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, str(WORKER), redis_url, str(timeout_s)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def until(condition: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_worker_killed_mid_delivery_loses_nothing(standalone_store: Store, standalone_url: str) -> None:
    now_ms = SystemClock().now_ms()
    with receiver(hang_s=30) as rx:
        endpoint, _ = await hooks.add_endpoint(
            standalone_store, "site_k", rx.url, None, allow_private=True, now_ms=now_ms
        )
        event_id = await hookevents.ping(standalone_store, "site_k", endpoint.id, now_ms=now_ms)
        # A short timeout: the successor claims a delivery idle for 3 × 1 s.
        with worker(standalone_url, timeout_s=1.0) as first:
            await until(rx.arrived.is_set, 10)  # it is posting, and the receiver holds the post
            first.kill()  # SIGKILL: no goodbye, the entry stays pending under its name
            first.wait()
        rx.hang_s = 0
        rx.released.set()
        with worker(standalone_url, timeout_s=1.0):
            await until(lambda: len(rx.posts) >= 2, 20)
            for _ in range(100):
                [logged] = await hookevents.event_log(standalone_store, "site_k", lambda s, w: "p", False)
                if logged["deliveries"][endpoint.id] == "delivered":
                    break
                await asyncio.sleep(0.05)
        assert logged["deliveries"] == {endpoint.id: "delivered"}
        assert set(rx.ids()) == {event_id}  # the cut post, then the one the successor made
        pending = await standalone_store.redis.xpending(keyspace.HOOK_QUEUE, keyspace.HOOK_GROUP)
        assert pending["pending"] == 0


async def test_two_server_processes_deliver_each_event_once(standalone_store: Store, standalone_url: str) -> None:
    now_ms = SystemClock().now_ms()
    with receiver() as rx:
        endpoint, _ = await hooks.add_endpoint(
            standalone_store, "site_2", rx.url, None, allow_private=True, now_ms=now_ms
        )
        with worker(standalone_url), worker(standalone_url):
            sent = [await hookevents.ping(standalone_store, "site_2", endpoint.id, now_ms=now_ms) for _ in range(60)]
            await until(lambda: len(rx.posts) >= 60, 20)
            await asyncio.sleep(0.5)  # time for a second copy, if one were coming
    counts = collections.Counter(rx.ids())
    assert set(counts) == set(sent)
    assert max(counts.values()) == 1
