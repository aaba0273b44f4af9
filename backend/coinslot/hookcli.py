"""``coinslot webhook …``: a site's webhook endpoints and their delivery log, from the command line.

The same as ``/v1/admin/webhooks``. Deliveries are posted by the running ``coinslot serve``
processes; ``ping`` and ``resend`` only queue them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

from coinslot import hookevents, hooks
from coinslot.clock import SystemClock
from coinslot.commands import pseudonyms, with_store
from coinslot.settings import Settings
from coinslot.store import Store


def _run(settings: Settings, work: Callable[[Store], Awaitable[Any]]) -> int:
    print(json.dumps(with_store(settings, work), indent=2, ensure_ascii=False))
    return 0


def cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        endpoint, secret = await hooks.add_endpoint(
            store,
            args.site,
            args.url,
            args.event or None,
            allow_private=settings.webhooks_allow_private,
            now_ms=SystemClock().now_ms(),
        )
        return {**endpoint.public(), "secret": secret}

    return _run(settings, work)


def cmd_list(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        return {"endpoints": [e.public() for e in await hooks.list_endpoints(store, args.site)]}

    return _run(settings, work)


def cmd_remove(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        await hooks.remove_endpoint(store, args.site, args.endpoint)
        return {"id": args.endpoint, "deleted": True}

    return _run(settings, work)


def cmd_rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        endpoint, secret, until = await hooks.rotate_secret(
            store, args.site, args.endpoint, now_ms=SystemClock().now_ms()
        )
        return {**endpoint.public(), "secret": secret, "previous_secret_signs_until": until // 1000}

    return _run(settings, work)


def cmd_ping(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        return {"event_id": await hookevents.ping(store, args.site, args.endpoint, now_ms=SystemClock().now_ms())}

    return _run(settings, work)


def cmd_log(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        livemode = settings.livemode
        events = await hookevents.event_log(store, args.site, pseudonyms(settings), livemode, limit=args.limit)
        return {"events": events}

    return _run(settings, work)


def cmd_resend(settings: Settings, args: argparse.Namespace) -> int:
    async def work(store: Store) -> Any:
        sent_to = await hookevents.resend(store, args.site, args.event, now_ms=SystemClock().now_ms())
        return {"event_id": args.event, "endpoints": sent_to}

    return _run(settings, work)


def register(sub: Any) -> None:
    """Add ``webhook`` and its commands to the ``coinslot`` parser's subcommands."""
    hook = sub.add_parser("webhook", help="a site's webhook endpoints and deliveries").add_subparsers(
        dest="webhook_command", required=True
    )
    add = hook.add_parser("add", help="register an endpoint; prints its signing secret once")
    add.add_argument("site")
    add.add_argument("url", help="https URL (http only on loopback)")
    add.add_argument(
        "--event", action="append", choices=hooks.EVENT_TYPES, help="an event type (repeatable; default all)"
    )
    add.set_defaults(func=cmd_add)
    for name, func, what in (
        ("list", cmd_list, "the site's endpoints"),
        ("remove", cmd_remove, "remove an endpoint"),
        ("rotate-secret", cmd_rotate, "a new signing secret; the previous one signs 24 h more"),
        ("ping", cmd_ping, "queue a test.ping to an endpoint"),
    ):
        cmd = hook.add_parser(name, help=what)
        cmd.add_argument("site")
        if name != "list":
            cmd.add_argument("endpoint", help="the endpoint id (we_...)")
        cmd.set_defaults(func=func)
    log = hook.add_parser("log", help="the newest events with every delivery attempt")
    log.add_argument("site")
    log.add_argument("--limit", type=int, default=20)
    log.set_defaults(func=cmd_log)
    resend = hook.add_parser("resend", help="send an event again, with the same id")
    resend.add_argument("site")
    resend.add_argument("event", help="the event id (evt_...)")
    resend.set_defaults(func=cmd_resend)
