"""The demo's seed data and page server."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

from coinslot import demo, vouchers
from coinslot.catalog import Catalog
from coinslot.clock import FrozenClock
from coinslot.store import Store
from coinslot.wallets import create_wallet


async def test_seed_makes_the_demo_sites_and_follows_a_new_port(standalone_store: Store, clock: FrozenClock) -> None:
    first = await demo.seed(standalone_store, "http://localhost:8001", now_ms=clock.now_ms())
    assert all(secret and secret.startswith("sk_") for secret in first["sites"].values())
    again = await demo.seed(standalone_store, "http://localhost:9001", now_ms=clock.now_ms())
    assert set(again["sites"]) == {s.id for s in demo.SITES}
    assert all(secret is None for secret in again["sites"].values())  # secret keys are shown once

    catalog = Catalog(standalone_store)
    news = await catalog.site("site_demo_news")
    assert news.origins == ("http://localhost:9001",)
    assert (await catalog.site("site_demo_tab")).tab_limit == 500
    prices = {(s.id, i.id): i.price for s in demo.SITES for i in s.items}
    assert prices[("site_demo_news", "article-heatwave")] == 19
    assert prices[("site_demo_course", "lesson-3")] == 49
    assert prices[("site_demo_events", "session-keynote")] == 150
    assert prices[("site_demo_app", "extra-storage")] == 99
    for (site_id, item_id), price in prices.items():
        assert (await catalog.item(site_id, item_id)).price == price

    wallet = await create_wallet(standalone_store, currency="EUR", now_ms=clock.now_ms())
    credited, balance, _currency = await vouchers.redeem(
        standalone_store, wallet, demo.VOUCHER_CODE, now_ms=clock.now_ms()
    )
    assert credited == balance == demo.VOUCHER_AMOUNT


def test_pages_are_served_with_the_running_backend_address(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(f'<script src="{demo.PAGES_BACKEND}/coinslot.js"></script>')
    (tmp_path / "style.css").write_text(f"/* {demo.PAGES_BACKEND} */")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with demo.serve_pages(tmp_path, "127.0.0.1", port, "http://127.0.0.1:5555"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as r:
            assert r.read().decode() == '<script src="http://127.0.0.1:5555/coinslot.js"></script>'
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/style.css") as r:
            assert r.read().decode() == f"/* {demo.PAGES_BACKEND} */"  # only HTML and JS are rewritten
