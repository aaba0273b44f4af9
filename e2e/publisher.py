"""A publisher of its own for a test: a fresh site (with a pass, a daily cap, a refund window —
whatever the test needs) and pages that embed it, served from the stranger's origin.

Each test gets its own site, so one test's cap or pass never leaks into another's, and the
demo sites the other tests read stay as they are.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from playwright.sync_api import Page

from conftest import SCREENSHOTS, Stack

_pages = itertools.count(1)

PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><link rel="stylesheet" href="{demo}/demo.css"></head>
<body{dark}><header><a href="/">{name}</a><small>a Coinslot test publisher</small></header><main>
<h1>{title}</h1>
{items}
</main>
<script src="{backend}/coinslot.js" data-site="{site}"{theme} async></script>
</body></html>
"""


@dataclass
class Publisher:
    stack: Stack
    site: str
    secret: str
    name: str

    def item(self, item: str, title: str, price: int, *, content: str | None = None, pass_hours: int = 0) -> None:
        body: dict[str, Any] = {"title": title, "price": price}
        if content is not None:
            body["content_html"] = content
        if pass_hours:
            body["pass_hours"] = pass_hours
        status, answer = self.stack.api("PUT", f"/v1/admin/items/{item}", self.secret, body)
        assert status in (200, 201), answer

    def page(self, *items: str, lang: str = "en", theme: str = "", title: str = "Today's paper") -> str:
        """A page embedding these items, each after a teaser; its URL on the stranger's origin."""
        blocks = "\n".join(
            f'<div data-coinslot-item="{i}"><p class="teaser">The first lines of {i}…</p></div>' for i in items
        )
        name = f"page-{self.site}-{next(_pages)}.html"
        html = PAGE.format(
            lang=lang,
            title=title,
            name=self.name,
            demo=self.stack.demo,
            items=blocks,
            backend=self.stack.backend,
            site=self.site,
            theme=f' data-theme="{theme}"' if theme else "",
            dark=' class="dark"' if theme == "dark" else "",  # as a dark publisher's page is
        )
        (self.stack.stranger_dir / name).write_text(html, encoding="utf-8")
        return f"{self.stack.stranger}/{name}"


def new_site(stack: Stack, name: str, *, daily_cap: int = 0, refund_window: int = 0, tab_limit: int = 0) -> Publisher:
    """A site that allows the stranger's origin, made with the CLI as a publisher would."""
    args = ["site", "create", "--name", name, "--origin", stack.stranger]
    args += ["--daily-cap", str(daily_cap), "--refund-window", str(refund_window), "--tab-limit", str(tab_limit)]
    done = subprocess.run(
        [sys.executable, "-m", "coinslot.cli", *args], env=stack.env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    made = json.loads(done.stdout)
    return Publisher(stack, made["site_id"], made["secret_key"], name)


def story(*paragraphs: str) -> str:
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def shot_item(page: Page, item: str, name: str) -> None:
    """A screenshot of one item (teaser, content, card), scrolled into view: a full-page capture
    leaves a cross-site frame below the fold unpainted."""
    SCREENSHOTS.mkdir(exist_ok=True)
    page.locator(f'[data-coinslot-item="{item}"]').screenshot(path=str(SCREENSHOTS / f"{name}.png"))
