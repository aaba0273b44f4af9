"""What a wallet and a purchase cost Redis in memory, measured over many of each.

    python bench/scale.py [--wallets 100000] [--purchases 100000]

Starts its own redis-server (AOF off, no saves: memory only) and fills it through the domain
functions the server uses: ``--wallets`` empty guest wallets (the first step of every new reader),
then ``--purchases`` unlocks spread over wallets that hold a voucher's money (a voucher credit
each, then purchases of 1-cent items). Prints, per wallet and per purchase, the growth of
``used_memory`` (INFO memory; includes Redis' own per-key overhead and the wallet index) and the
``MEMORY USAGE`` of the keys one of them adds, sampled, next to the goals (300 B and 200 B).
Prints, asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from coinslot import catalog, unlocks, vouchers, wallets
from coinslot import keyspace as keys
from coinslot.catalog import Catalog
from coinslot.settings import Settings
from coinslot.store import Store, connect
from coinslot.tokens import WalletRef
from harness import memory_redis

WALLET_GOAL, PURCHASE_GOAL = 300, 200  # bytes
PER_WALLET_PURCHASES = 20  # purchases per funded wallet; a reader's few weeks of articles
SAMPLE = 200


def used_memory(r: redis.Redis) -> int:
    value: int = r.info("memory")["used_memory"]
    return value


def usage(r: redis.Redis, names: Sequence[str]) -> int:
    return sum(int(r.memory_usage(n, samples=0) or 0) for n in names)


async def fill(url: str, wallet_count: int, purchase_count: int, r: redis.Redis) -> dict[str, float]:
    store = Store(await connect(url))
    now_ms = int(time.time() * 1000)
    gate = asyncio.Semaphore(64)
    figures: dict[str, float] = {}
    try:
        site, _ = await catalog.create_site(
            store, name="Scale", origins=["http://127.0.0.1"], site_id="site_scale", now_ms=now_ms
        )
        for i in range(PER_WALLET_PURCHASES):
            await catalog.put_item(store, site, f"i{i}", title=f"Item {i}", price=1, now_ms=now_ms)

        async def new_wallet() -> WalletRef:
            async with gate:
                # As POST /v1/wallets makes them: expiring while empty (the expiry costs memory too).
                return await wallets.create_wallet(
                    store, currency="EUR", now_ms=now_ms, empty_ttl_s=Settings().empty_wallet_days * 86400
                )

        before = used_memory(r)
        refs = await asyncio.gather(*(new_wallet() for _ in range(wallet_count)))
        figures["wallet_used"] = (used_memory(r) - before) / wallet_count
        sample = refs[:SAMPLE]
        figures["wallet_keys"] = statistics.mean(usage(r, [keys.wallet_keys(w.wallet_id).wallet]) for w in sample)

        buyers = await asyncio.gather(*(new_wallet() for _ in range(purchase_count // PER_WALLET_PURCHASES)))
        voucher = await vouchers.create_voucher(
            store, site, amount=PER_WALLET_PURCHASES, uses=len(buyers), now_ms=now_ms
        )

        async def redeem(ref: WalletRef) -> None:
            async with gate:
                await vouchers.redeem(store, ref, voucher.code, now_ms=now_ms)

        await asyncio.gather(*(redeem(ref) for ref in buyers))
        funded = used_memory(r)

        def purchase_keys(ref: WalletRef) -> list[str]:
            k = keys.wallet_keys(ref.wallet_id)
            return [k.owned, k.purchases, k.ledger]

        # Before its first purchase a buyer's purchase keys hold only the voucher's ledger line, so
        # their growth over its purchases is what purchases cost.
        before_buying = statistics.mean(usage(r, purchase_keys(b)) for b in buyers[:SAMPLE])
        cache = Catalog(store)

        async def buy(ref: WalletRef, item: int) -> None:
            async with gate:
                await unlocks.purchase(
                    store, cache, ref, site_id=site.id, item_id=f"i{item}", shown_price=1, idempotency=None,
                    now_ms=now_ms, purchase_id=unlocks.new_purchase_id(), tab_quota=None, links=None,
                    pseudonym=lambda site, wallet_id: wallet_id,  # no price test here
                )  # fmt: skip

        await asyncio.gather(*(buy(ref, i) for ref in buyers for i in range(PER_WALLET_PURCHASES)))
        made = len(buyers) * PER_WALLET_PURCHASES
        figures["purchases"] = made
        figures["purchase_used"] = (used_memory(r) - funded) / made
        per_buyer = statistics.mean(usage(r, purchase_keys(b)) for b in buyers[:SAMPLE])
        figures["purchase_keys"] = (per_buyer - before_buying) / PER_WALLET_PURCHASES
    finally:
        await store.close()
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wallets", type=int, default=100_000)
    parser.add_argument("--purchases", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coinslot-scale-") as tmp, memory_redis(Path(tmp)) as (url, r):
        started = time.monotonic()
        figures = asyncio.run(fill(url, args.wallets, args.purchases, r))
        version = r.info("server")["redis_version"]
    print(f"redis-server {version}; {args.wallets:,} wallets, {figures['purchases']:,.0f} purchases "
          f"in {time.monotonic() - started:.0f} s")  # fmt: skip
    print(f"{'':<34}{'used_memory growth':>20}{'MEMORY USAGE of its keys':>26}{'goal':>8}")
    print(f"{'per empty wallet (B)':<34}{figures['wallet_used']:>20.0f}{figures['wallet_keys']:>26.0f}{WALLET_GOAL:>8}")
    print(f"{'per purchase (B)':<34}{figures['purchase_used']:>20.0f}{figures['purchase_keys']:>26.0f}"
          f"{PURCHASE_GOAL:>8}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
