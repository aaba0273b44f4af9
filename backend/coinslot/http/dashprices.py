"""The dashboard's price tests, on an item's page: start one, keep a price (coinslot.pricetests, as
``/v1/admin/items/{item}/price-test``)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from starlette.requests import Request
from starlette.responses import Response

from coinslot import pricetests
from coinslot.catalog import Item, Site
from coinslot.http.context import services
from coinslot.http.dashsession import checked_form, see_other, shown_as_page, whole_number
from coinslot.store import Store


def when(ms: int, site: Site, lang: str) -> str:
    """A moment as the publisher reads it: in the site's time zone and the page's language."""
    return format_datetime(datetime.fromtimestamp(ms / 1000, ZoneInfo(site.timezone)), "medium", locale=lang)


async def section(store: Store, site: Site, item: Item, lang: str) -> dict[str, object]:
    """What the item page shows of its price test: the running one's figures, or the last one's and how it
    ended."""
    test = await pricetests.results(store, item)
    last = None if test is not None else await pricetests.last_test(store, item)
    if last is not None:
        test = await pricetests.last_results(store, item, last)
    return {
        "test": test,
        "since": when(test.since_ms, site, lang) if test is not None else "",
        "ended": when(last["ended"], site, lang) if last is not None else "",
        "last": last,
        "min_views": pricetests.MIN_VIEWS,
    }


@shown_as_page
async def start_test(request: Request) -> Response:
    svc = services(request)
    session, form = await checked_form(request)
    site = await svc.catalog.site(session.site_id)
    price = whole_number(form.get("test_price", ""), "test_price")
    item = await pricetests.start(svc.store, site, request.path_params["item"], price, now_ms=svc.clock.now_ms())
    svc.catalog.invalidate(site.id)
    return see_other(f"/dashboard/items/{item.id}?test=started")


@shown_as_page
async def keep_price(request: Request) -> Response:
    svc = services(request)
    session, form = await checked_form(request)
    site = await svc.catalog.site(session.site_id)
    price = whole_number(form.get("price", ""), "price")
    item = await pricetests.keep(svc.store, site, request.path_params["item"], price, now_ms=svc.clock.now_ms())
    svc.catalog.invalidate(site.id)
    return see_other(f"/dashboard/items/{item.id}?test=kept")
