"""What a reader waits for, in headless Chromium on loopback; prints figures next to the goals.

    python bench/widget.py [--runs 20]

Starts its own redis-server and ``coinslot demo`` (backend on 127.0.0.1, pages on
localhost), adds ``--runs`` + 1 items to the demo news site and a plain HTML page for each
(served by a process of its own, with keep-alive, as a publisher's pages are), then:
- sizes: coinslot.js, and the card (embed page + card.js + card.css), gzipped (level 9);
- navigation → price visible, in a fresh browser context each time (cold: nothing cached)
  and in one context (warm: loader, placeholders and card files cached as their Cache-Control
  allows): the first moment the price is on the screen, whichever comes first of the loader's
  placeholder in the page and the card's own first paint in its frame; and, apart from it,
  navigation → card ready (the card's first paint), which is what a reader can press;
- click → content visible: a wallet funded by a voucher clicks "Unlock" on a new item each
  time, until the item's content is in the publisher's page.
As a reference, the same page framing a bare JSON document from the backend shows what any
cross-site iframe costs on this machine. Times are read inside the browser, on its epoch
clock (``performance.timeOrigin``): from the page's navigation start to the card's first
contentful paint (its title and price button) and to the page's own first contentful paint,
which on the bench page (no text of its own) is the placeholder's title and price; and from
the click event in the card to the first animation frame after the content was inserted into
the page. Medians of ``--runs``. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from coinslot import catalog, demo
from coinslot.clock import SystemClock
from coinslot.embedded import find_redis_server
from coinslot.store import Store, connect
from coinslot.widget import asset
from harness import free_port, running, wait_http

ROOT = Path(__file__).resolve().parents[1]
SITE = "site_demo_news"
PRICE = 19  # minor units, like the demo articles
GOALS = {"loader": 2 * 1024, "card": 12 * 1024, "price": 150, "content": 250}  # bytes, bytes, ms, ms
FLAGS = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
FLAGS += "--disable-component-update --disable-sync"
# One page per item, its markup as a publisher pastes it (no script of the page's own builds it).
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bench</title>
<link rel="icon" href="data:,"></head><body><main><div data-coinslot-item="{item}"></div></main>
<script src="http://127.0.0.1:8000/coinslot.js" data-site="site_demo_news" async></script></body></html>
"""
# The floor any cross-site iframe pays here (a new renderer process under site isolation):
# the same page framing a bare JSON document from the backend, timed the same way.
BARE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>bare</title>
<link rel="icon" href="data:,"></head><body><main><iframe src="http://127.0.0.1:8000/healthz"></iframe></main>
</body></html>
"""
SERVE_PAGES = """import sys, time
from pathlib import Path
from coinslot import demo
with demo.serve_pages(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), sys.argv[3]):
    time.sleep(1e9)
"""


def gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def ms(samples: Sequence[float]) -> str:
    return f"{statistics.median(samples) * 1000:6.1f} ms (min {min(samples) * 1000:.1f}, max {max(samples) * 1000:.1f})"


def launch(pw: Playwright) -> Browser:
    """Playwright's own Chromium when installed, else the system one with the flags it needs here."""
    executable = find_chromium(pw.chromium.executable_path)
    if executable is None:
        return pw.chromium.launch(headless=True)
    return pw.chromium.launch(headless=True, executable_path=executable, args=FLAGS.split())


def find_chromium(bundled: str) -> str | None:
    if bundled and Path(bundled).exists():
        return None
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium"):
        if Path(candidate).exists():
            return candidate
    sys.exit("no Chromium: install Debian's chromium or run 'playwright install chromium'")


async def seed(redis_url: str, origins: list[str], items: int) -> None:
    store = Store(await connect(redis_url))
    try:
        await catalog.set_origins(store, SITE, origins)
        site = await catalog.Catalog(store).site(SITE)
        for i in range(items):
            await catalog.put_item(
                store, site, f"bench-{i}", title=f"Bench story {i}", price=PRICE,
                content_html=f"<p>Bench story {i}, the rest of it.</p>", now_ms=SystemClock().now_ms(),
            )  # fmt: skip
    finally:
        await store.close()


# In the card's own document: when it first painted (its price button), on the epoch clock.
CARD_PAINT = """() => performance.timeOrigin + performance.getEntriesByName('first-contentful-paint')[0].startTime"""


CLICK_AT = """() => document.getElementById('buy').addEventListener('click',
    (e) => { window.__clickAt = performance.timeOrigin + e.timeStamp; }, {once: true, capture: true})"""
SHOWN_AT = """() => { window.__shownAt = 0; document.addEventListener('coinslot:unlocked',
    () => requestAnimationFrame(() => { window.__shownAt = performance.timeOrigin + performance.now(); }),
    {once: true}); }"""


# In the publisher's page, before the loader runs: when the loader put a placeholder in, and when
# it took it out again (the card said it was ready), on the page's clock.
WATCH_PLACEHOLDER = """window.__placeholderAt = null;
window.__placeholderGone = null;
new MutationObserver((list, observer) => {
  const there = !!document.querySelector('.coinslot-placeholder');
  if (there && window.__placeholderAt === null) window.__placeholderAt = performance.now();
  if (!there && window.__placeholderAt !== null) {
    window.__placeholderGone = performance.now();
    observer.disconnect();
  }
}).observe(document, {childList: true, subtree: true});"""
PAGE_PAINT = """() => performance.getEntriesByName('first-contentful-paint').map((e) => e.startTime)[0]"""


@dataclass(frozen=True)
class Sample:
    """Seconds from the navigation's start (the page's time origin)."""

    card: float  # to the card's first paint in its frame
    framed: float  # to the start of the card's own navigation (when the loader created its iframe)
    placeholder: float | None = None  # to the page's first paint, when a placeholder was put in
    gone: float | None = None  # to the placeholder's removal (the card's "ready")

    @property
    def price(self) -> float:
        return self.card if self.placeholder is None else min(self.card, self.placeholder)


def price_visible(page: Page, url: str, bare: bool = False) -> Sample:
    page.goto(url, wait_until="commit")
    if not bare:
        page.frame_locator("iframe").get_by_role("button", name="Unlock for €0.19").wait_for(state="visible")
    page.wait_for_function("() => window.frames.length > 0")
    frame = page.frames[1]
    frame.wait_for_function("() => performance.getEntriesByName('first-contentful-paint').length")
    painted: float = frame.evaluate(CARD_PAINT)
    start: float = page.evaluate("() => performance.timeOrigin")
    framed: float = frame.evaluate("() => performance.timeOrigin")
    placeholder = gone = None
    if not bare and page.evaluate("() => window.__placeholderAt") is not None:
        gone = page.wait_for_function("() => window.__placeholderGone").json_value() / 1000
        try:  # a paint timestamp can come a little after the card's; none: it was never on screen
            placeholder = page.wait_for_function(PAGE_PAINT, timeout=1000).json_value() / 1000
        except PlaywrightTimeout:
            placeholder = None
    return Sample((painted - start) / 1000, (framed - start) / 1000, placeholder, gone)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coinslot-widget-bench-") as tmp:
        return run(args.runs, Path(tmp))


def run(runs: int, tmp: Path) -> int:
    redis_port, port, demo_port, bench_port = free_port(), free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}"
    redis_cmd = [find_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp)]
    pages = tmp / "pages"
    pages.mkdir()
    for i in range(runs + 1):
        (pages / f"bench-{i}.html").write_text(PAGE.format(item=f"bench-{i}"))
    (pages / "bare.html").write_text(BARE_PAGE)
    env = {**os.environ, "COINSLOT_REDIS_URL": redis_url, "COINSLOT_DATA_DIR": str(tmp / "data")}
    env["COINSLOT_PAYMENTS"] = "test"
    env.pop("COINSLOT_PUBLIC_URL", None)
    demo_cmd = [sys.executable, "-m", "coinslot.cli", "demo", "--port", str(port), "--demo-port", str(demo_port)]
    backend = f"http://127.0.0.1:{port}"
    bench_origin = f"http://localhost:{bench_port}"
    with (
        running(redis_cmd, tmp / "redis.log"),
        running(demo_cmd, tmp / "demo.log", env=env, cwd=ROOT) as server,
    ):
        wait_http(backend + "/healthz", server, tmp / "demo.log")
        asyncio.run(seed(redis_url, [f"http://localhost:{demo_port}", bench_origin], runs + 1))
        time.sleep(0.2)  # the server's catalog cache hears about the new origin over pub/sub
        with urllib.request.urlopen(f"{backend}/embed/{SITE}/bench-0?origin={bench_origin}&lang=en") as r:
            embed_page = r.read()
        loader = gz(asset("coinslot.js").body)
        card = gz(embed_page) + gz(asset("card.js").body) + gz(asset("card.css").body)
        # The bench's pages come from a process of their own, as a publisher's from its web server:
        # served from a thread of this one, they waited for the GIL behind Playwright's driver
        # (tens of ms for a fresh connection).
        pages_cmd = [sys.executable, "-c", SERVE_PAGES, str(pages), str(bench_port), backend]
        with running(pages_cmd, tmp / "pages.log") as pages_server, sync_playwright() as pw:
            wait_http(bench_origin + "/bare.html", pages_server, tmp / "pages.log")
            browser = launch(pw)
            try:
                cold, warm, click = measure(browser, bench_origin + "/bench-{}.html", runs)
                bare = measure_bare(browser, bench_origin + "/bare.html", runs)
            finally:
                browser.close()
    print(f"Coinslot widget, Chromium headless on loopback, median of {runs} (load average {os.getloadavg()[0]:.1f})")
    print(f"  coinslot.js gzipped                 {loader:6d} B     goal <= {GOALS['loader']} B")
    print(f"  card gzipped (page + js + css)      {card:6d} B     goal <= {GOALS['card']} B")
    parts = (
        f"embed page {gz(embed_page)} B, card.js {gz(asset('card.js').body)} B, card.css {gz(asset('card.css').body)} B"
    )
    print("    " + parts)
    for name, samples in (("cold", cold), ("warm", warm)):
        first = sum(s.placeholder is not None and s.placeholder < s.card for s in samples)
        print(f"  navigation -> price visible, {name}   {ms([s.price for s in samples])}   goal <= {GOALS['price']} ms")
        print(f"    placeholder or card, whichever first; the placeholder was first in {first} of {len(samples)}")
        print(f"  navigation -> card ready, {name}      {ms([s.card for s in samples])}   (the card's own first paint)")
        print(f"    of which until the loader framed the card: {ms([s.framed for s in samples])}")
        swaps = [s.gone - s.card for s in samples if s.gone is not None]
        if swaps:  # < 0: the placeholder went before the card had painted, and the box was empty that long
            print(f"    placeholder removal - card paint:       {ms(swaps)}")
    print(f"  reference: a bare cross-site iframe, warm {ms([s.card for s in bare])}")
    print(f"    of which until its navigation started:   {ms([s.framed for s in bare])}")
    # What the card itself adds once framed, against what any cross-site frame pays once started.
    card_start, bare_start = ms([s.card - s.framed for s in warm]), ms([s.card - s.framed for s in bare])
    print(f"  frame start -> paint: card warm {card_start}; bare {bare_start}")
    print(f"  click -> content visible (funded)   {ms(click)}   goal <= {GOALS['content']} ms")
    return 0


Samples = list[Sample]


def measure_bare(browser: Browser, url: str, runs: int) -> Samples:
    context = browser.new_context()
    try:
        page = context.new_page()
        price_visible(page, url, bare=True)
        return [price_visible(page, url, bare=True) for _ in range(runs)]
    finally:
        context.close()


def measure(browser: Browser, url: str, runs: int) -> tuple[Samples, Samples, list[float]]:
    cold: Samples = []
    for _ in range(runs):
        context = browser.new_context()
        context.add_init_script(WATCH_PLACEHOLDER)
        cold.append(price_visible(context.new_page(), url.format(0)))
        context.close()

    context = browser.new_context()
    context.add_init_script(WATCH_PLACEHOLDER)
    try:
        page = context.new_page()
        price_visible(page, url.format(0))  # fill the cache
        warm = [price_visible(page, url.format(0)) for _ in range(runs)]

        # Fund the wallet once with the demo voucher (this unlocks bench-0, not measured).
        card = page.frame_locator("iframe")
        card.locator("html[data-seen]").wait_for(state="attached")  # presses count once the card was seen
        card.locator("#buy").click()
        card.locator("#code").fill(demo.VOUCHER_CODE)
        card.locator("#voucher button").click()
        page.locator(".coinslot-content").wait_for()

        click: list[float] = []
        for i in range(1, runs + 1):
            page.goto(url.format(i))
            card = page.frame_locator("iframe")
            card.locator("#balance").filter(has_text="€").wait_for()  # the reader's state has arrived
            card.locator("html[data-seen]").wait_for(state="attached")

            # Both ends on the epoch clock inside the browser: the click event in the card, and the
            # first animation frame after the content went into the publisher's page.
            page.frames[1].evaluate(CLICK_AT)
            page.evaluate(SHOWN_AT)
            card.locator("#buy").click()
            page.locator(".coinslot-content").wait_for(state="visible")
            shown: float = page.wait_for_function("() => window.__shownAt").json_value()
            clicked: float = page.frames[1].evaluate("() => window.__clickAt")
            click.append((shown - clicked) / 1000)
    finally:
        context.close()
    return cold, warm, click


if __name__ == "__main__":
    sys.exit(main())
