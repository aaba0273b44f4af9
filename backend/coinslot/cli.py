"""The ``coinslot`` command: serve the backend and manage sites, items and vouchers.

Every management command works whether or not a server runs: it uses the configured
Redis, the embedded server a running ``coinslot serve`` holds, or starts one for itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Any

from coinslot import admincli, catalog, dashcli, hookcli, insights, ledger, refunds, topups, vouchers
from coinslot.clock import SystemClock
from coinslot.commands import count
from coinslot.commands import with_store as _with_store
from coinslot.embedded import EmbeddedRedisError
from coinslot.errors import CoinslotError, ConfigurationError
from coinslot.keyring import KeyRing
from coinslot.settings import Settings, is_loopback_host
from coinslot.store import Store
from coinslot.widget import SCHEMA_TYPES


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from coinslot import serving
    from coinslot.app import create_app

    settings.check_for_serving(args.host)
    if settings.public_url is None:
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") or is_loopback_host(args.host) else args.host
        settings = dataclasses.replace(settings, public_url=f"http://{host}:{args.port}")
    serving.configure_logging(logging.INFO)
    print(f"Coinslot on {settings.public_url} (payments: {settings.payments})", flush=True)
    if args.workers == 1:
        app = create_app(settings)
        serving.run(app, host=args.host, port=args.port, limits=serving.Limits.of(settings), access_log=args.access_log)
    else:
        serving.run_workers(settings, args.workers, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from coinslot import demo, serving
    from coinslot.app import create_app
    from coinslot.widget import asset, loader_url

    pages = Path(args.pages) if args.pages else demo.find_pages(Path.cwd())
    if pages is None or not (pages / "index.html").is_file():
        print("coinslot: no demo_site/ here; run from a source checkout or pass --pages DIR", file=sys.stderr)
        return 2
    settings.check_for_serving("127.0.0.1")
    backend = f"http://127.0.0.1:{args.port}"
    origin = f"http://localhost:{args.demo_port}"
    # Its own data directory, so the demo's sites never mix with a real one's.
    settings = dataclasses.replace(settings, public_url=backend, data_dir=settings.data_dir / "demo")
    made = _with_store(settings, lambda store: demo.seed(store, origin, now_ms=SystemClock().now_ms()))
    dashboard = dashcli.sign_in_link(settings, "site_demo_news")
    serving.configure_logging(logging.WARNING)
    with demo.serve_pages(pages, "127.0.0.1", args.demo_port, backend):
        print(
            f"""
Coinslot demo (payments: {settings.payments})
  backend      {backend}
  demo site    {origin}/   <- open this in a browser
    news article (EUR 0.19)   {origin}/article.html
    two items on one page     {origin}/two-items.html
    item added after load     {origin}/late-item.html
    German article            {origin}/de/artikel.html
    strict CSP page           {origin}/strict-csp.html
    loader in head, slow ads  {origin}/slow-ads.html
    course lesson (EUR 0.49)  {origin}/course/lesson-3.html
    conference (EUR 1.50)     {origin}/events/keynote.html
    app feature (EUR 0.99)    {origin}/app/storage.html
    site with a tab           {origin}/gazette/fair.html
    daily cap, day pass, undo {origin}/weekly/
  voucher code  {made["voucher"]} (EUR 5.00), or "Add EUR 5.00" in the card and press Pay in the TEST MODE window
  dashboard     {dashboard}
                  (the news site's; works once, for 10 minutes; another: COINSLOT_DATA_DIR={settings.data_dir}
                  COINSLOT_PUBLIC_URL={backend} .venv/bin/coinslot dashboard SITE)
  snippet       <script src="{loader_url(backend)}" integrity="{asset("coinslot.js").integrity}"
                  crossorigin="anonymous" data-site="site_demo_news" async></script>
Ctrl-C stops it.""",
            flush=True,
        )
        serving.run(create_app(settings), host="127.0.0.1", port=args.port, limits=serving.Limits.of(settings))
    return 0


def cmd_snippet(settings: Settings, args: argparse.Namespace) -> int:
    from coinslot.app import DEFAULT_PUBLIC_URL
    from coinslot.widget import LOCKED_CLASS, asset, loader_url, paywall_json_ld

    base = settings.public_url or DEFAULT_PUBLIC_URL
    attrs = f' data-lang="{args.lang}"' if args.lang else ""
    print(
        f'<script src="{loader_url(base)}"\n'
        f'        integrity="{asset("coinslot.js").integrity}" crossorigin="anonymous"\n'
        f'        data-site="{args.site}"{attrs} async></script>\n'
        f'<div class="{LOCKED_CLASS}" data-coinslot-item="{args.item}">Teaser text you already show…</div>\n'
        f"<!-- In <head>: tells search engines the part above is paid, so showing it to their crawlers is not"
        f" cloaking -->\n{paywall_json_ld(args.schema_type)}"
    )
    return 0


def cmd_site_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        site, secret = await catalog.create_site(
            store,
            name=args.name,
            origins=args.origin,
            currency=args.currency,
            timezone=args.timezone,
            tab_limit=args.tab_limit,
            daily_cap=args.daily_cap,
            refund_window=args.refund_window,
            site_id=args.id,
            now_ms=SystemClock().now_ms(),
        )
        return {**site.public(), "secret_key": secret}

    _print(_with_store(settings, work))
    return 0


def cmd_site_rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        secret = await catalog.rotate_secret(store, args.site, now_ms=SystemClock().now_ms())
        return {"site_id": args.site, "secret_key": secret, "previous_keys_valid_for_hours": 24}

    _print(_with_store(settings, work))
    return 0


def cmd_item_put(settings: Settings, args: argparse.Namespace) -> int:
    content = Path(args.content_file).read_text() if args.content_file else None

    async def work(store: Store) -> Any:
        site = await catalog.Catalog(store).site(args.site)
        item = await catalog.put_item(
            store,
            site,
            args.item,
            title=args.title,
            price=args.price,
            content_html=content,
            pass_hours=args.pass_hours,
            max_content_bytes=settings.max_content_bytes,
            now_ms=SystemClock().now_ms(),
        )
        return {**item.public(site.currency), "site": site.id, "has_content": item.has_content}

    _print(_with_store(settings, work))
    return 0


def cmd_voucher_create(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        site = await catalog.Catalog(store).site(args.site)
        voucher = await vouchers.create_voucher(
            store, site, amount=args.amount, uses=args.uses, code=args.code, now_ms=SystemClock().now_ms()
        )
        return voucher.public()

    _print(_with_store(settings, work))
    return 0


def cmd_refund(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        now_ms = SystemClock().now_ms()
        done = await refunds.publisher_refund(store, catalog.Catalog(store), args.site, args.purchase, now_ms=now_ms)
        await count(settings, store, insights.refund_notes(done, now_ms))
        return done.public()

    _print(_with_store(settings, work))
    return 0


def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> int:
    ring = KeyRing.load(settings.data_dir, settings.unlock_key_files)
    kid = ring.rotate(settings.data_dir)
    # Keys retired more than two token lifetimes ago can no longer have a valid token out there.
    pruned = ring.prune(settings.data_dir, 2 * settings.unlock_token_ttl)
    _print(
        {
            "signing_kid": kid,
            "published_kids": [k["kid"] for k in ring.jwks()["keys"]],
            "pruned_kids": pruned,
            "note": "restart running servers so they sign with the new key",
        }
    )
    return 0


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    if not args.stripe:
        report: ledger.Report = _with_store(settings, ledger.reconcile)
        _print(report.as_dict())
        return 0 if report.clean else 1
    if settings.payments != "stripe":
        raise ConfigurationError("reconcile --stripe needs Stripe configured (COINSLOT_STRIPE_SECRET_KEY)")
    from coinslot.payments.choice import from_settings

    async def work(store: Store) -> tuple[dict[str, Any], ledger.Report]:
        provider = from_settings(settings, settings.public_url or "http://127.0.0.1:8000")
        try:
            # Lost webhooks first, so the replay below sees the repaired ledger.
            stripe = await topups.repair_from_provider(store, provider, now_ms=SystemClock().now_ms())
        finally:
            await provider.aclose()
        return stripe, await ledger.reconcile(store)

    stripe, report = _with_store(settings, work)
    _print({**report.as_dict(), "stripe": stripe})
    return 0 if report.clean and not stripe["problems"] else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coinslot", description="One-click micropayments for the open web.")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the backend (embedded Redis unless COINSLOT_REDIS_URL is set)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port, each with its signer (one per core)"
    )
    serve.add_argument(
        "--access-log", action="store_true", help="log every request (off by default: it costs a quarter of throughput)"
    )
    serve.set_defaults(func=cmd_serve)

    demo_cmd = sub.add_parser("demo", help="run the backend and the demo publisher site, with seeded items")
    demo_cmd.add_argument("--port", type=int, default=8000, help="backend port (on 127.0.0.1)")
    demo_cmd.add_argument("--demo-port", type=int, default=8001, help="demo site port (on localhost)")
    demo_cmd.add_argument("--pages", help="the demo site's directory (default: ./demo_site)")
    demo_cmd.set_defaults(func=cmd_demo)

    snippet = sub.add_parser("snippet", help="print the HTML to paste: the pinned loader (with SRI) and an item")
    snippet.add_argument("site")
    snippet.add_argument("--item", default="article-42")
    snippet.add_argument("--lang", choices=["en", "de"], help="fix the card's language (default: the page's)")
    snippet.add_argument("--schema-type", default="NewsArticle", choices=SCHEMA_TYPES, help="the page's, for JSON-LD")
    snippet.set_defaults(func=cmd_snippet)

    site = sub.add_parser("site", help="publisher sites").add_subparsers(dest="site_command", required=True)
    create = site.add_parser("create", help="create a site; prints its secret key once")
    create.add_argument("--name", required=True)
    create.add_argument("--origin", action="append", required=True, help="an origin allowed to embed (repeatable)")
    create.add_argument("--currency", default="EUR")
    create.add_argument("--timezone", default="UTC")
    create.add_argument("--tab-limit", type=int, default=0, help="minor units a wallet may owe (0 = no tab)")
    create.add_argument("--daily-cap", type=int, default=0, help="minor units per site day (0 = no cap)")
    create.add_argument(
        "--refund-window",
        type=int,
        default=catalog.DEFAULT_REFUND_WINDOW_S,
        help="seconds a reader may undo a purchase (0 = no undo; at most 7 days)",
    )
    create.add_argument("--id", help="choose the site id (site_...) instead of a random one")
    create.set_defaults(func=cmd_site_create)
    rotate = site.add_parser("rotate-key", help="issue a new secret key; the old one works 24 h more")
    rotate.add_argument("site")
    rotate.set_defaults(func=cmd_site_rotate)

    item = sub.add_parser("item", help="items for sale").add_subparsers(dest="item_command", required=True)
    put = item.add_parser("put", help="create or replace an item")
    put.add_argument("site")
    put.add_argument("item")
    put.add_argument("--title", required=True)
    put.add_argument("--price", type=int, required=True, help="minor units")
    put.add_argument("--content-file", help="HTML to host (sanitized when stored)")
    put.add_argument("--pass-hours", type=int, help="make it a pass lasting this many hours")
    put.set_defaults(func=cmd_item_put)

    voucher = sub.add_parser("voucher", help="vouchers").add_subparsers(dest="voucher_command", required=True)
    vcreate = voucher.add_parser("create", help="issue a voucher paid by the site's promotions")
    vcreate.add_argument("site")
    vcreate.add_argument("--amount", type=int, required=True, help="minor units")
    vcreate.add_argument("--uses", type=int, default=1)
    vcreate.add_argument("--code", help="choose the code instead of a random one")
    vcreate.set_defaults(func=cmd_voucher_create)

    refund = sub.add_parser("refund", help="refund a purchase as the publisher's goodwill (not a reader's undo)")
    refund.add_argument("purchase", help="the purchase id (pur_...) from the reader's receipt or the ledger")
    refund.add_argument("--site", help="refuse unless the purchase was made on this site")
    refund.set_defaults(func=cmd_refund)

    keys_cmd = sub.add_parser("keys", help="unlock-token signing keys").add_subparsers(
        dest="keys_command", required=True
    )
    krotate = keys_cmd.add_parser("rotate", help="make a new signing key; old ones stay in the JWKS")
    krotate.set_defaults(func=cmd_keys_rotate)

    reconcile = sub.add_parser("reconcile", help="replay the ledger; exit 1 on any difference")
    reconcile.add_argument(
        "--stripe", action="store_true", help="first credit paid Checkout Sessions of the last 30 days the ledger lacks"
    )
    reconcile.set_defaults(func=cmd_reconcile)
    hookcli.register(sub)
    admincli.register(sub)  # site show|update, item list|archive|restore, voucher list|disable, purchases
    dashcli.register(sub)  # dashboard SITE: a one-time sign-in link
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        code: int = args.func(settings, args)
        return code
    except (CoinslotError, EmbeddedRedisError) as exc:
        print(f"coinslot: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"coinslot: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
