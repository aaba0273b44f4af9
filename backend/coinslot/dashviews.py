"""What the dashboard's pages show, made from the counters (coinslot.insights): figures, the funnel,
the chart's geometry and the items table. Numbers in, plain values out; the templates only print them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

from coinslot import insights, tabs, vouchers
from coinslot.catalog import Catalog, Site, list_items
from coinslot.errors import InvalidQuery
from coinslot.insights import Day
from coinslot.store import Store

CHART_W, CHART_H, CHART_PAD = 600, 180, 4  # the SVG's user units; CSS scales it to the page
SORTS = ("item", "views", "presses", "unlocks", "conversion", "revenue", "rpm", "refunds")
PERIODS = (7, 30, 90)


def net_revenue(counts: dict[str, int] | Counter[str]) -> int:
    return counts.get(insights.REVENUE, 0) - counts.get(insights.REFUNDED_AMOUNT, 0)


def rate(part: int, whole: int) -> float | None:
    return None if whole <= 0 else part / whole


def summed(days: list[Day]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for day in days:
        total.update(day.counts)
    return dict(total)


def funnel(total: dict[str, int]) -> list[dict[str, Any]]:
    """Each step of the funnel with its count, its conversion from the step before (None first) and its
    share of the cards shown. Readers with money in their wallet skip the top-up steps, so the share
    of cards shown is the figure that stays comparable down the funnel."""
    steps = []
    before: int | None = None
    shown = total.get(insights.SHOWN, 0)
    for step in insights.FUNNEL:
        n = total.get(step, 0)
        conversion = None if before is None else rate(n, before)
        steps.append({"step": step, "count": n, "conversion": conversion, "of_shown": rate(n, shown)})
        before = n
    return steps


def chart(days: list[Day]) -> dict[str, Any]:
    """Bars of net revenue and a line of unlocks per day, in the SVG's user units (y grows down)."""
    revenues = [net_revenue(d.counts) for d in days]
    unlocks = [d.counts.get(insights.UNLOCKED, 0) for d in days]
    top_r, top_u = max(max(revenues, default=0), 1), max(max(unlocks, default=0), 1)
    width = (CHART_W - 2 * CHART_PAD) / max(len(days), 1)
    usable = CHART_H - 2 * CHART_PAD
    bars, points = [], []
    for i, (r, u) in enumerate(zip(revenues, unlocks, strict=True)):
        height = max(r, 0) / top_r * usable
        x = CHART_PAD + i * width
        bars.append(
            {
                "x": round(x + width * 0.15, 1),
                "y": round(CHART_H - CHART_PAD - height, 1),
                "w": round(width * 0.7, 1),
                "h": round(height, 1),
            }
        )
        points.append(f"{x + width / 2:.1f},{CHART_H - CHART_PAD - u / top_u * usable:.1f}")
    return {
        "w": CHART_W,
        "h": CHART_H,
        "bars": bars,
        "line": " ".join(points),
        "top_revenue": max(revenues, default=0),
        "top_unlocks": max(unlocks, default=0),
    }


@dataclass(frozen=True, slots=True)
class ItemRow:
    item: str
    title: str
    price: int
    archived: bool
    views: int
    presses: int
    unlocks: int
    conversion: float | None  # unlocks per view
    revenue: int  # net of refunds, minor units
    rpm: float | None  # revenue per 1,000 views, minor units
    refunds: int
    test_price: int | None = None  # the second price under test (coinslot.pricetests)


def item_row(item_id: str, title: str, price: int, archived: bool, c: Counter[str]) -> ItemRow:
    views, revenue = c.get(insights.SHOWN, 0), net_revenue(c)
    return ItemRow(
        item_id,
        title,
        price,
        archived,
        views,
        c.get(insights.PRESSED, 0),
        c.get(insights.UNLOCKED, 0),
        rate(c.get(insights.UNLOCKED, 0), views),
        revenue,
        None if views == 0 else revenue * 1000 / views,
        c.get(insights.REFUNDED, 0),
    )


def check_table_query(sort: str | None, period: str | None, page: str | None) -> tuple[str, bool, int, int]:
    """``?sort=`` (a SORTS name, ``-`` in front for descending), ``?days=`` and ``?page=`` (from 1)."""
    sort = sort or "item"
    descending = sort.startswith("-")
    if sort.removeprefix("-") not in SORTS:
        raise InvalidQuery(f"sort {sort!r} must be one of {', '.join(SORTS)} (with '-' for descending)", field="sort")
    days = int(period) if period and period.isdigit() else 30
    if days not in PERIODS:
        raise InvalidQuery(f"days {period!r} must be one of {PERIODS}", field="days")
    if page is not None and (not page.isdigit() or not 1 <= int(page) <= 10**6):
        raise InvalidQuery(f"page {page!r} must be a whole number from 1", field="page")
    return sort.removeprefix("-"), descending, days, int(page or 1)


async def item_table(
    store: Store,
    cache: Catalog,
    site: Site,
    *,
    sort: str,
    descending: bool,
    days: int,
    page: int,
    size: int,
    now_ms: int,
) -> tuple[list[ItemRow], bool]:
    """One page of the items table, sorted over every item of the site; and whether a next page exists.

    Sorting by a figure needs every item's figures, so the ids are sorted first, and titles and prices
    are read for the page's items alone.
    """
    totals = await insights.item_totals(store, site, insights.last_days(site, days, now_ms=now_ms))
    ids = await list_items(store, site.id)
    empty: Counter[str] = Counter()
    if sort == "item":
        ordered = sorted(ids, reverse=descending)
    else:

        def key(item_id: str) -> float:
            figure = getattr(item_row(item_id, "", 0, False, totals.get(item_id, empty)), sort)
            return -1.0 if figure is None else float(figure)

        ordered = sorted(sorted(ids), key=key, reverse=descending)  # ties stay in id order
    chosen = ordered[(page - 1) * size : page * size]
    found = await cache.items(site.id, chosen)
    rows = [
        replace(item_row(i, it.title, it.price, it.archived, totals.get(i, empty)), test_price=it.test_price)
        for i in chosen
        if (it := found.get(i)) is not None
    ]
    return rows, page * size < len(ordered)


async def vouchers_used(store: Store, site_id: str) -> int:
    """Redemptions of the site's vouchers, all of them (a page of 200 at a time)."""
    used, cursor = 0, None
    while True:
        page, cursor = await vouchers.list_vouchers(store, site_id, limit=200, cursor=cursor)
        used += sum(v.voucher.uses - v.uses_left for v in page)
        if cursor is None:
            return used


async def overview(store: Store, site: Site, *, now_ms: int) -> dict[str, Any]:
    """The overview page's figures: today, 7 and 30 days, the chart and the funnel of 30 days."""
    names = insights.last_days(site, 30, now_ms=now_ms)
    days = await insights.site_days(store, site, names)
    periods = {}
    for label, n in (("today", 1), ("days_7", 7), ("days_30", 30)):
        total = summed(days[-n:])
        periods[label] = {
            "revenue": net_revenue(total),
            "unlocks": total.get(insights.UNLOCKED, 0),
            "refunds": total.get(insights.REFUNDED, 0),
            "readers": await insights.readers_over(store, site, names[-n:]),
        }
    total = summed(days)
    rows = [
        {"day": d.day, "revenue": net_revenue(d.counts), "unlocks": d.counts.get(insights.UNLOCKED, 0)} for d in days
    ]
    return {
        "periods": periods,
        "vouchers_used": await vouchers_used(store, site.id),
        "tab_outstanding": await tabs.owed(store, site.id),
        "chart": chart(days),
        "rows": rows,
        "funnel": funnel(total),
        "offered": total.get(insights.OFFERED, 0),
        "accesses": {a: total.get(f"{insights.UNLOCKED}:{a}", 0) for a in insights.ACCESSES},
    }
