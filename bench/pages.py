"""What a page view costs: the card page and the card's credentialed read, next to a hello-world.

    python bench/pages.py [--duration 8] [--repeat 3] [--connections 50]

Starts its own redis-server, `coinslot serve` as shipped and a Starlette hello-world under
uvicorn (uvloop, httptools, one worker, no access log, as bench/unlock.py's). Seeds one site
and item, a wallet that owns it and one that does not, then drives with wrk, alternately:
``GET /embed/{site}/{item}?origin=…`` (the card page, once per page view; public, cacheable),
``GET /v1/card/{site}/{item}`` for the wallet that does not own the item (balance and price)
and for the one that does (a fresh unlock token and the content, so a signature each), and the
hello-world. Prints req/s and the ratio to the hello-world of the same round, with the goals of
issue 18 (card page >= 0.7, card read >= 0.5). Prints, asserts nothing but 2xx answers.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from coinslot import catalog, unlocks, vouchers, wallets
from coinslot.catalog import Catalog
from coinslot.embedded import find_redis_server
from coinslot.store import Store, connect
from coinslot.tokens import WalletTokens
from harness import BENCH, WrkResult, coinslot_env, coinslot_serve, free_port, running, uvicorn, wait_http, wrk

ORIGIN = "http://localhost:8001"
GOALS = {"card page": 0.7, "card read (not owned)": 0.5, "card read (owned)": 0.5}


async def seed(url: str, secret: str) -> tuple[str, str]:
    """A site with one item, and tokens of a wallet that owns it and of one that does not."""
    store = Store(await connect(url))
    now_ms = int(time.time() * 1000)
    try:
        site, _ = await catalog.create_site(store, name="Pages", origins=[ORIGIN], site_id="site_pages", now_ms=now_ms)
        await catalog.put_item(store, site, "article", title="An article", price=19, now_ms=now_ms)
        owner = await wallets.create_wallet(store, currency="EUR", now_ms=now_ms)
        voucher = await vouchers.create_voucher(store, site, amount=100, uses=1, now_ms=now_ms)
        await vouchers.redeem(store, owner, voucher.code, now_ms=now_ms)
        await unlocks.purchase(
            store, Catalog(store), owner, site_id=site.id, item_id="article", shown_price=19, idempotency=None,
            now_ms=now_ms, purchase_id=unlocks.new_purchase_id(), tab_quota=None, links=None,
            pseudonym=lambda site, wallet_id: wallet_id,  # no price test here: any pseudonym will do
        )  # fmt: skip
        visitor = await wallets.create_wallet(store, currency="EUR", now_ms=now_ms)
        signer = WalletTokens([secret.encode()])
        return signer.sign(owner), signer.sign(visitor)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8, help="seconds per measured wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of all four, alternating")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH (Debian: apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="coinslot-pages-"))
    results: dict[str, list[float]] = {name: [] for name in (*GOALS, "hello")}
    errors = 0
    try:
        sock = tmp / "redis.sock"
        server = [find_redis_server(), "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp)]
        server += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with running(server, tmp / "redis.log"):
            url = f"unix://{sock}"
            secret = secrets.token_urlsafe(32)
            for _ in range(100):
                if sock.exists():
                    break
                time.sleep(0.05)
            owner, visitor = asyncio.run(seed(url, secret))
            app_port, hello_port = free_port(), free_port()
            app_url = f"http://127.0.0.1:{app_port}"
            env = coinslot_env(url, tmp, app_url, secret)
            with (
                coinslot_serve(app_port, env, tmp, tmp / "app.log", 1, False) as app,
                uvicorn("asgi:hello", hello_port, env, tmp, tmp / "hello.log") as hello,
            ):
                wait_http(app_url + "/healthz", app, tmp / "app.log")
                wait_http(f"http://127.0.0.1:{hello_port}/", hello, tmp / "hello.log")
                targets = {
                    "card page": (f"{app_url}/embed/site_pages/article?origin={ORIGIN}", ""),
                    "card read (not owned)": (f"{app_url}/v1/card/site_pages/article", visitor),
                    "card read (owned)": (f"{app_url}/v1/card/site_pages/article", owner),
                    "hello": (f"http://127.0.0.1:{hello_port}/", ""),
                }

                def drive(name: str, seconds: float) -> WrkResult:
                    target, token = targets[name]
                    return wrk(target, BENCH / "hello.lua", [token], seconds, connections=args.connections, threads=1,
                               pids={})  # fmt: skip

                for name in targets:
                    drive(name, 2)
                for _ in range(args.repeat):
                    for name in targets:
                        result = drive(name, args.duration)
                        errors += result.errors_4xx_5xx + result.socket_errors
                        results[name].append(result.rps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"coinslot serve against a hello-world under uvicorn, wrk -t1 -c{args.connections}, "
          f"{args.repeat} rounds of {args.duration:g} s each")  # fmt: skip
    print(f"{'':<24}{'req/s (median)':>16}{'ratios to hello, per round':>34}{'median':>8}{'goal':>6}")
    for name, goal in GOALS.items():
        ratios = [a / h for a, h in zip(results[name], results["hello"], strict=True)]
        listed = " ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{name:<24}{statistics.median(results[name]):>16,.0f}{listed:>34}{statistics.median(ratios):>8.2f}{goal:>6}"
        )
    print(f"{'hello':<24}{statistics.median(results['hello']):>16,.0f}")
    print(f"non-2xx or socket errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
