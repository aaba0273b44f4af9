"""The admin API on the command line: ``coinslot site show|update``, ``coinslot item list|archive|restore|price-test``,
``coinslot voucher list|disable`` and ``coinslot purchases``. Each prints one JSON object, the same as
the matching ``/v1/admin/...`` call answers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from coinslot import catalog, listings, pricetests, statements, vouchers
from coinslot.clock import SystemClock
from coinslot.commands import pseudonyms, with_store
from coinslot.settings import Settings
from coinslot.store import Store


def _subcommands(parser: argparse.ArgumentParser) -> Any:
    """The sub-command group ``cli.parser`` made for ``parser`` (site, item, voucher), to add to it."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


_item = listings.admin_view


def register(sub: Any) -> None:
    """Add the admin commands to the ``coinslot`` parser's sub-commands ``sub``."""

    def command(func: Callable[[Settings, argparse.Namespace, Store], Awaitable[Any]]) -> Callable[..., int]:
        def run(settings: Settings, args: argparse.Namespace) -> int:
            print(json.dumps(with_store(settings, lambda store: func(settings, args, store)), indent=2))
            return 0

        return run

    site = _subcommands(sub.choices["site"])
    show = site.add_parser("show", help="print a site's settings")
    show.add_argument("site")
    show.set_defaults(func=command(_site_show))
    update = site.add_parser("update", help="change a site's origins, time zone, tab limit, daily cap, refund window")
    update.add_argument("site")
    update.add_argument("--origin", action="append", help="replaces all origins (repeatable)")
    update.add_argument("--timezone")
    update.add_argument("--tab-limit", type=int, help="minor units a wallet may owe (0 = no tab)")
    update.add_argument("--daily-cap", type=int, help="minor units per site day (0 = no cap)")
    update.add_argument("--refund-window", type=int, help="seconds a reader may undo a purchase (at most 7 days)")
    update.set_defaults(func=command(_site_update))

    item = _subcommands(sub.choices["item"])
    listing = item.add_parser("list", help="a page of a site's items in id order")
    listing.add_argument("site")
    listing.add_argument("--limit", type=int, default=listings.DEFAULT_PAGE)
    listing.add_argument("--cursor", help="next_cursor of the page before")
    listing.set_defaults(func=command(_item_list))
    for name, archived, text in (("archive", True, "take an item off sale"), ("restore", False, "put it back")):
        flag = item.add_parser(name, help=text + " (who bought it keeps it)")
        flag.add_argument("site")
        flag.add_argument("item")
        flag.set_defaults(func=command(_item_archive), archived=archived)
    test = item.add_parser("price-test", help="an item's price test: start one, show it, or keep a price and end it")
    test.add_argument("site")
    test.add_argument("item")
    started = test.add_mutually_exclusive_group()
    started.add_argument("--start", type=int, metavar="PRICE", help="show half of the readers this second price")
    started.add_argument("--keep", type=int, metavar="PRICE", help="end the test: this price (one of the two) for all")
    test.set_defaults(func=command(_price_test))

    voucher = _subcommands(sub.choices["voucher"])
    vlist = voucher.add_parser("list", help="a page of a site's vouchers with their uses left")
    vlist.add_argument("site")
    vlist.add_argument("--limit", type=int, default=listings.DEFAULT_PAGE)
    vlist.add_argument("--cursor", help="next_cursor of the page before")
    vlist.set_defaults(func=command(_voucher_list))
    disable = voucher.add_parser("disable", help="refuse every further redeem of a voucher")
    disable.add_argument("site")
    disable.add_argument("code")
    disable.set_defaults(func=command(_voucher_disable))

    sales = sub.add_parser("purchases", help="a site's purchases and refunds by its days (readers as pseudonyms)")
    sales.add_argument("site")
    sales.add_argument("--from", dest="first", help="YYYY-MM-DD in the site's time zone (default: today)")
    sales.add_argument("--to", dest="last", help="YYYY-MM-DD, included (default: --from)")
    sales.set_defaults(func=command(_purchases))


async def _site_show(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    return (await catalog.Catalog(store).site(args.site)).public()


async def _site_update(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    named = {"origins": args.origin, "timezone": args.timezone, "tab_limit": args.tab_limit}
    named |= {"daily_cap": args.daily_cap, "refund_window": args.refund_window}
    site = await catalog.Catalog(store).site(args.site)
    return (await catalog.update_site(store, site, {k: v for k, v in named.items() if v is not None})).public()


async def _item_list(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    cache = catalog.Catalog(store)
    site = await cache.site(args.site)
    limit = listings.page_size(str(args.limit))
    page = await listings.items_page(cache, site.id, limit=limit, cursor=args.cursor)
    return {"items": [_item(i, site.currency) for i in page.items], "next_cursor": page.next_cursor}


async def _item_archive(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    cache = catalog.Catalog(store)
    site = await cache.site(args.site)
    now_ms = SystemClock().now_ms()
    return _item(
        await listings.set_archived(store, cache, site.id, args.item, args.archived, now_ms=now_ms), site.currency
    )


async def _price_test(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    site = await catalog.Catalog(store).site(args.site)
    now_ms = SystemClock().now_ms()
    if args.start is not None:
        item = await pricetests.start(store, site, args.item, args.start, now_ms=now_ms)
    elif args.keep is not None:
        return pricetests.public(await pricetests.keep(store, site, args.item, args.keep, now_ms=now_ms), None)
    else:
        item = await catalog.Catalog(store, ttl_s=0).item(site.id, args.item)
    return pricetests.public(item, await pricetests.results(store, item))


async def _voucher_list(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    site = await catalog.Catalog(store).site(args.site)
    found, cursor = await vouchers.list_vouchers(
        store, site.id, limit=listings.page_size(str(args.limit)), cursor=args.cursor
    )
    return {"vouchers": [v.public() for v in found], "next_cursor": cursor}


async def _voucher_disable(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    site = await catalog.Catalog(store).site(args.site)
    return (await vouchers.disable_voucher(store, site.id, args.code)).public()


async def _purchases(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    site = await catalog.Catalog(store).site(args.site)
    return await statements.sales(
        store, site, args.first, args.last, pseudonyms(settings), now_ms=SystemClock().now_ms()
    )
