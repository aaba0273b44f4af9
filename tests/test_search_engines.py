"""What search engines are told: the locked container's class, the page's paywall JSON-LD (printed by
`coinslot snippet`, carried by the demo pages), and a card whose prices stay out of snippets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from coinslot import widget
from coinslot.cli import main
from coinslot.clock import FrozenClock
from coinslot.store import Store

from api import Api

DEMO = Path(__file__).resolve().parents[1] / "demo_site"
JSON_LD = re.compile(r'<script type="application/ld\+json">(.*?)</script>', re.S)


def paywall_parts(html: str) -> list[dict[str, object]]:
    """The hasPart entries of every paywall JSON-LD block in ``html``."""
    blocks = [json.loads(b) for b in JSON_LD.findall(html)]
    return [b["hasPart"] for b in blocks if b.get("isAccessibleForFree") is False]


def test_the_snippet_marks_the_container_and_prints_the_paywall_json_ld(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snippet", "site_abc", "--item", "story-1", "--schema-type", "Course"]) == 0
    out = capsys.readouterr().out
    assert '<div class="coinslot-locked" data-coinslot-item="story-1">' in out
    block = json.loads(JSON_LD.findall(out)[0])
    assert block["@context"] == "https://schema.org" and block["@type"] == "Course"
    assert block["isAccessibleForFree"] is False
    assert block["hasPart"] == {
        "@type": "WebPageElement",
        "isAccessibleForFree": False,
        "cssSelector": ".coinslot-locked",
    }
    with pytest.raises(SystemExit):
        main(["snippet", "site_abc", "--schema-type", "Nonsense"])


def test_every_demo_page_with_a_locked_item_says_so_to_search_engines() -> None:
    pages = [p for p in DEMO.rglob("*.html") if "data-coinslot-item" in p.read_text()]
    assert len(pages) >= 5
    for page in pages:
        html = page.read_text()
        containers = re.findall(r"<[a-z]+ [^>]*data-coinslot-item=[^>]*>", html)
        assert containers and all(widget.LOCKED_CLASS in c for c in containers), page
        assert {"@type": "WebPageElement", "isAccessibleForFree": False, "cssSelector": ".coinslot-locked"} in (
            paywall_parts(html)
        ), page


async def test_the_card_keeps_its_prices_out_of_search_snippets(
    standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock
) -> None:
    api = Api(standalone_client, standalone_store, clock)
    site = await api.site()
    await api.item(site, "a", 19)
    for path in (f"/embed/{site[0]}/a?origin=http://localhost:8001", f"/embed/{site[0]}/zzz?origin=x"):
        html = (await standalone_client.get(path)).text
        body = html.split("<body>", 1)[1]
        assert body.startswith("<div data-nosnippet>") and body.endswith("</div></body></html>"), path
