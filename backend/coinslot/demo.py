"""The demo: seeded publisher sites and items, and a tiny server for the demo site's pages.

The pages in ``demo_site/`` paste the snippet as a publisher would, pointing at
``http://127.0.0.1:8000``; the server rewrites that address to wherever the backend
really runs, so the pages stay plain HTML and the demo and the e2e tests can use any port.
The sites have fixed ids (``site_demo_…``) so the pages can name them.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from coinslot import catalog, vouchers
from coinslot.catalog import Site
from coinslot.errors import DuplicateCode
from coinslot.store import Store

PAGES_BACKEND = "http://127.0.0.1:8000"  # the backend address written in the demo pages
VOUCHER_CODE = "DEMO-FIVE-EUROS"
VOUCHER_AMOUNT = 500  # minor units
VOUCHER_USES = 100_000


def _story(*paragraphs: str) -> str:
    return "".join(f"<p>{p}</p>" for p in paragraphs)


@dataclass(frozen=True)
class DemoItem:
    id: str
    title: str
    price: int  # minor units
    content: str | None
    pass_hours: int | None = None  # a pass: every item of its site while it runs


@dataclass(frozen=True)
class DemoSite:
    id: str
    name: str
    tab_limit: int
    items: tuple[DemoItem, ...]
    daily_cap: int = 0  # minor units a wallet pays the site in a day at most (0 = no cap)


SITES = (
    DemoSite(
        "site_demo_news",
        "The Daily Planet",
        0,
        (
            DemoItem(
                "article-heatwave",
                "Why this summer's heat wave broke every record",
                19,
                _story(
                    "Meteorologists had warned for a decade that the jet stream was slowing down. "
                    "This July, it stalled for eleven days over the continent.",
                    "Night-time temperatures never fell below 24 °C in six capitals, and that — more "
                    "than the daytime peaks — is what made this summer so dangerous.",
                    "<strong>What comes next:</strong> city planners are already redrawing tree maps.",
                ),
            ),
            DemoItem(
                "article-bridge",
                "The bridge that took forty years",
                19,
                _story(
                    "It began as a sketch on a napkin in 1986 and opened on a rainy Tuesday in May.",
                    "Three mayors, two referendums and one very stubborn engineer later, it carries "
                    "9,000 cyclists a day.",
                ),
            ),
            DemoItem(
                "article-council",
                "Live: the council votes on the night-bus plan",
                19,
                _story("21:04 — The motion passes, 31 to 12. Night buses start running in March."),
            ),
            DemoItem(
                "article-datacentre",
                "Inside the data centre that heats a swimming pool",
                19,
                _story("The servers run at 60 °C; the pool next door stays at a steady 28 °C all winter."),
            ),
            DemoItem(
                "artikel-hitze",
                "Warum diese Hitzewelle alle Rekorde brach",
                19,
                _story(
                    "Elf Tage lang stand der Jetstream still. Die Nächte kühlten nicht mehr unter 24 °C ab.",
                    "Stadtplaner zeichnen die Baumkarten bereits neu.",
                ),
            ),
        ),
    ),
    DemoSite(
        "site_demo_course",
        "Learn Bread",
        0,
        (
            DemoItem(
                "lesson-3",
                "Lesson 3: shaping a sourdough loaf",
                49,
                _story(
                    "Flour the bench lightly, tip the dough out and fold the four corners to the middle.",
                    "Turn it seam-side down and drag it towards you to build surface tension.",
                ),
            ),
        ),
    ),
    DemoSite(
        "site_demo_events",
        "Web Days 2026",
        0,
        (
            DemoItem(
                "session-keynote",
                "Keynote: the open web pays its way",
                150,
                _story(
                    "Recording: 42 minutes. Slides and transcript below.",
                    '<a href="https://example.com/slides">Slides (PDF)</a>',
                ),
            ),
        ),
    ),
    DemoSite(
        "site_demo_app",
        "Notely",
        0,
        (DemoItem("extra-storage", "Extra storage: 10 GB more for your notes", 99, None),),
    ),
    DemoSite(
        "site_demo_tab",
        "The Corner Gazette",
        500,
        (
            DemoItem(
                "article-fair",
                "Everything you need to know about this weekend's town fair",
                19,
                _story("Stalls open at 10, the brass band plays at noon, and parking is free all day."),
            ),
        ),
    ),
    DemoSite(
        "site_demo_weekly",
        "The Weekly Review",
        0,
        (
            DemoItem(
                "review-rivers",
                "The rivers that came back",
                30,
                _story("Thirty years after the factories closed, salmon swim past the old mill again."),
            ),
            DemoItem(
                "review-trains",
                "Night trains, round two",
                30,
                _story("Sleeper cars are back on eleven routes, and most of them sell out by Thursday."),
            ),
            DemoItem(
                "review-seeds",
                "A library that lends seeds",
                30,
                _story("Borrow a packet in spring, bring back seeds from your harvest in autumn."),
            ),
            DemoItem("day-pass", "Day pass: every story today", 79, None, pass_hours=24),
        ),
        daily_cap=50,
    ),
)


async def seed(store: Store, origin: str, *, now_ms: int) -> dict[str, Any]:
    """Create (or bring up to date) the demo sites, items and voucher, allowing ``origin`` to embed them."""
    made: dict[str, Any] = {"sites": {}, "voucher": VOUCHER_CODE}
    for spec in SITES:
        try:
            site, secret = await catalog.create_site(
                store,
                name=spec.name,
                origins=[origin],
                tab_limit=spec.tab_limit,
                daily_cap=spec.daily_cap,
                site_id=spec.id,
                now_ms=now_ms,
            )
            made["sites"][spec.id] = secret
        except DuplicateCode:
            origins = await catalog.set_origins(store, spec.id, [origin])
            site = Site(spec.id, spec.name, "EUR", "UTC", origins, tab_limit=spec.tab_limit, daily_cap=spec.daily_cap)
            made["sites"][spec.id] = None  # its secret key was shown when it was first made
        for item in spec.items:
            await catalog.put_item(
                store,
                site,
                item.id,
                title=item.title,
                price=item.price,
                content_html=item.content,
                pass_hours=item.pass_hours,
                now_ms=now_ms,
            )
    news = await catalog.Catalog(store).site(SITES[0].id)
    with contextlib.suppress(DuplicateCode):
        await vouchers.create_voucher(
            store, news, amount=VOUCHER_AMOUNT, uses=VOUCHER_USES, code=VOUCHER_CODE, now_ms=now_ms
        )
    return made


class _Pages(SimpleHTTPRequestHandler):
    """Static files, with the backend address in HTML and JS rewritten to the running one."""

    backend = PAGES_BACKEND
    # Keep-alive, as a publisher's web server: a page's script need not wait for a new connection.
    protocol_version = "HTTP/1.1"

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix not in (".html", ".js") or not path.is_file():
            return super().send_head()
        body = path.read_bytes().replace(PAGES_BACKEND.encode(), self.backend.encode())
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8" if path.suffix == ".html" else "text/javascript")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        if path.name == "strict-csp.html":
            # A hardened publisher also isolates its windows; the card's top-up window must cope.
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo prints where to click; request lines would drown it


@contextlib.contextmanager
def serve_pages(directory: Path, host: str, port: int, backend: str) -> Iterator[ThreadingHTTPServer]:
    """Serve ``directory`` on host:port in a thread, for as long as the context lasts."""
    handler = type("Pages", (_Pages,), {"backend": backend})
    server = ThreadingHTTPServer((host, port), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, name="demo-pages", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def find_pages(start: Path) -> Path | None:
    """``demo_site/`` in the working directory or in the source checkout this package runs from."""
    for candidate in (start / "demo_site", Path(__file__).resolve().parents[2] / "demo_site"):
        if (candidate / "index.html").is_file():
            return candidate
    return None
