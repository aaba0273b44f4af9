"""How long the dashboard's overview (and its items page) take for a large site.

    python bench/dashboard.py [--items 10000] [--days 400] [--items-per-day 300] [--runs 20]

Starts its own redis-server (memory only), puts a site with ``--items`` items, and fills ``--days``
days of counters as the insights writer leaves them: each day the site's totals, ``--items-per-day``
items with counts of their own, and a HyperLogLog of a few hundred pseudonyms. Then signs in and
asks the app (in process, through httpx's ASGI transport: no network, the whole request with its
template) for ``GET /dashboard`` and ``GET /dashboard/items?sort=-revenue`` ``--runs`` times each,
and prints their median and p90 next to the goal (100 ms for the overview). Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import httpx
from starlette.datastructures import Secret

from coinslot import catalog, insights, keyspace
from coinslot.app import create_app
from coinslot.settings import Settings
from coinslot.sitedays import site_day
from coinslot.store import Store, connect
from harness import memory_redis

GOAL_MS = 100
PUBLIC_URL = "http://127.0.0.1:8000"


async def fill(store: Store, n_items: int, n_days: int, per_day: int, now_ms: int) -> str:
    site, _ = await catalog.create_site(
        store, name="Big Daily", origins=["https://big.example"], site_id="site_bench", now_ms=now_ms
    )
    ids = [f"article-{i:05d}" for i in range(n_items)]
    async with store.redis.pipeline(transaction=False) as pipe:
        for i, item_id in enumerate(ids):
            pipe.hset(
                keyspace.item_key(site.id, item_id),
                mapping={"title": f"Article {i}", "price": 19 + i % 80, "kind": "item", "pass_hours": 0,
                         "has_content": "0", "content": "", "updated_ms": now_ms, "archived": "0"},
            )  # fmt: skip
        pipe.sadd(keyspace.items_index_key(site.id), *ids)
        await pipe.execute()
    today = date.fromisoformat(site_day(site.timezone, now_ms).day)
    rng = random.Random(7)
    for d in range(n_days):
        day = (today - timedelta(days=d)).isoformat()
        fields: dict[str, int] = {}
        for item_id in rng.sample(ids, per_day):
            shown = rng.randint(5, 500)
            unlocked = rng.randint(0, shown // 5)
            refunded = unlocked // 20
            counts = {"shown": shown, "pressed": unlocked * 2, "offered": unlocked, "topup_started": unlocked // 2,
                      "topup_paid": unlocked // 3, "unlocked": unlocked, "unlocked:charged": unlocked,
                      "revenue": unlocked * 19, "refunded": refunded, "refunded_amount": refunded * 19}  # fmt: skip
            for name, n in counts.items():
                fields[name + insights.ITEM_SEPARATOR + item_id] = n
                fields[name] = fields.get(name, 0) + n
        async with store.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keyspace.insights_day_key(site.id, day), mapping=fields)
            pipe.pfadd(
                keyspace.insights_readers_key(site.id, day), *(f"reader-{rng.randint(0, 5000)}" for _ in range(300))
            )
            await pipe.execute()
    return site.id


async def measure(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, list[float]]:
    store = Store(await connect(url))
    now_ms = int(time.time() * 1000)
    started = time.monotonic()
    site_id = await fill(store, args.items, args.days, args.items_per_day, now_ms)
    print(f"filled {args.items:,} items and {args.days} days of counters in {time.monotonic() - started:.1f} s")
    settings = Settings(public_url=PUBLIC_URL, data_dir=tmp / "data", secret_keys=(Secret("b" * 40),))
    app = create_app(settings, redis=store.redis)
    times: dict[str, list[float]] = {"/dashboard": [], "/dashboard/items?sort=-revenue": []}
    async with app.router.lifespan_context(app):
        svc = app.state.services
        session = await svc.dashboard.open_session(site_id, now_ms=svc.clock.now_ms())
        cookie = {"Cookie": "coinslot_dash=" + svc.dashboard.cookie_value(session)}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_URL) as client:
            for path, spent in times.items():
                for run in range(args.runs + 2):
                    t0 = time.perf_counter()
                    r = await client.get(path, headers=cookie)
                    if r.status_code != 200:
                        raise RuntimeError(f"{path}: {r.status_code} {r.text[:300]}")
                    if run >= 2:  # the first two warm the catalog cache and the templates
                        spent.append((time.perf_counter() - t0) * 1000)
    await store.close()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=400)
    parser.add_argument("--items-per-day", type=int, default=300, help="items with counts on each day")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coinslot-dash-") as tmp, memory_redis(Path(tmp)) as (url, r):
        times = asyncio.run(measure(url, args, Path(tmp)))
        memory = r.info("memory")["used_memory"]
    print(f"redis used_memory {memory / 2**20:.0f} MiB")
    print(f"{'page':<36}{'median ms':>10}{'p90 ms':>9}{'goal':>7}")
    for path, spent in times.items():
        p90 = statistics.quantiles(spent, n=10)[-1]
        goal = f"{GOAL_MS}" if path == "/dashboard" else "-"
        print(f"{path:<36}{statistics.median(spent):>10.1f}{p90:>9.1f}{goal:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
