"""Webhook events: made where money moved, queued for delivery, rendered, sent again, logged.

See ``coinslot.hooks`` for the design (emission, the window, retries, signatures, SSRF).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from coinslot import hooks, keyspace
from coinslot.catalog import KIND_PASS
from coinslot.errors import UnknownWebhookEvent
from coinslot.hooks import EVENT_TTL_S, LOG_LENGTH
from coinslot.ids import new_id
from coinslot.store import Store
from coinslot.tokens import Pseudonym

log = logging.getLogger("coinslot.hooks")


def delivery(site_id: str, event: dict[str, Any], endpoint_id: str, attempt: int, window_from_ms: int) -> str:
    """A queued delivery: all a worker needs to post it, with no other read."""
    return json.dumps(
        {"site": site_id, "endpoint": endpoint_id, "attempt": attempt, "from": window_from_ms, "event": event},
        separators=(",", ":"),
    )


async def _queue(store: Store, site_id: str, event: dict[str, Any], endpoint_ids: list[str], now_ms: int) -> None:
    ek = keyspace.hook_event_key(site_id, event["id"])
    log_key = keyspace.hook_log_key(site_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hset(ek, mapping={"event": json.dumps(event), **{"ep:" + e: "pending" for e in endpoint_ids}})
        pipe.expire(ek, EVENT_TTL_S)
        pipe.zadd(log_key, {event["id"]: now_ms})
        pipe.zremrangebyrank(log_key, 0, -LOG_LENGTH - 1)
        pipe.expire(log_key, EVENT_TTL_S)
        for endpoint_id in endpoint_ids:
            pipe.xadd(keyspace.HOOK_QUEUE, {"d": delivery(site_id, event, endpoint_id, 1, now_ms)})
        await pipe.execute()


def _event(event_type: str, data: dict[str, Any], wallet_id: str | None, now_ms: int) -> dict[str, Any]:
    return {"id": new_id("evt"), "type": event_type, "created_ms": now_ms, "data": data, "wallet": wallet_id}


async def emit(
    store: Store, site_id: str, event_type: str, data: dict[str, Any], *, wallet_id: str | None, now_ms: int
) -> str | None:
    """Queue an event for every endpoint of the site that wants it; its id, or None if none does.

    Called after money moved: it never raises (a failure is logged), and posts nothing itself.
    """
    try:
        targets = [e for e, types in await hooks.targets_of(store, site_id) if event_type in types]
        if not targets:
            return None
        event = _event(event_type, data, wallet_id, now_ms)
        await _queue(store, site_id, event, targets, now_ms)
        return str(event["id"])
    except Exception:  # the money has moved; the ledger still shows it (see the module's "window")
        log.exception("webhook event %s for site %s could not be queued", event_type, site_id)
        return None


class Sale(Protocol):
    """What the money path knows after an unlock (``coinslot.unlocks.Unlocked``)."""

    @property
    def site(self) -> Any: ...
    @property
    def item(self) -> Any: ...
    @property
    def purchase_id(self) -> str: ...
    @property
    def charged(self) -> int: ...
    @property
    def price(self) -> int: ...
    @property
    def access(self) -> str: ...
    @property
    def access_until_ms(self) -> int | None: ...


async def unlocked(store: Store, sale: Sale, wallet_id: str, now_ms: int) -> None:
    """``unlock.created`` (or ``pass.started``) for a purchase, or a grant under the daily cap, just made."""
    until = None if sale.access_until_ms is None else sale.access_until_ms // 1000
    data = {
        "purchase_id": sale.purchase_id,
        "site": sale.site.id,
        "item": sale.item.id,
        "title": sale.item.title,
        "price": sale.price,
        "charged": sale.charged,
        "currency": sale.site.currency,
        "access": sale.access,
        "access_until": until,
    }
    is_pass = sale.item.kind == KIND_PASS
    await emit(
        store, sale.site.id, "pass.started" if is_pass else "unlock.created", data, wallet_id=wallet_id, now_ms=now_ms
    )


async def refunded(store: Store, receipt: dict[str, Any], refunded: int, by: str, wallet_id: str, now_ms: int) -> None:
    """``purchase.refunded``: the reader's undo, or the publisher's goodwill (``by``)."""
    data = {
        "purchase_id": receipt["id"],
        "site": receipt["site"],
        "item": receipt["item"],
        "refunded": refunded,
        "currency": receipt["currency"],
        "by": by,
    }
    await emit(store, receipt["site"], "purchase.refunded", data, wallet_id=wallet_id, now_ms=now_ms)


async def topup_paid(store: Store, topup_key: str, topup_id: str, wallet_id: str, now_ms: int) -> None:
    """``topup.paid`` for the site a top-up was started from (a 402's top-up link names it)."""
    try:
        site_id, amount, currency = await store.redis.hmget(topup_key, ["site", "amount", "currency"])
    except Exception:
        log.exception("top-up %s: its site could not be read for webhooks", topup_id)
        return
    if site_id:
        data = {"topup_id": topup_id, "site": site_id, "amount": int(amount), "currency": currency}
        await emit(store, site_id, "topup.paid", data, wallet_id=wallet_id, now_ms=now_ms)


async def ping(store: Store, site_id: str, endpoint_id: str, *, now_ms: int) -> str:
    """Queue a ``test.ping`` to one endpoint; the event's id."""
    await hooks.get_endpoint(store, site_id, endpoint_id)
    event = _event("test.ping", {"site": site_id, "endpoint": endpoint_id}, None, now_ms)
    await _queue(store, site_id, event, [endpoint_id], now_ms)
    return str(event["id"])


def render(event: dict[str, Any], site_id: str, pseudonym: Pseudonym, livemode: bool) -> bytes:
    """The payload as posted: the same bytes for every attempt of the event."""
    data = dict(event["data"])
    if event.get("wallet"):
        data["wallet"] = pseudonym(site_id, event["wallet"])
    body = {
        "id": event["id"],
        "type": event["type"],
        "created": event["created_ms"] // 1000,
        "livemode": livemode,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


async def resend(store: Store, site_id: str, event_id: str, *, now_ms: int) -> list[str]:
    """Send an event again (same id) to each current endpoint that wants it, with a fresh 24 h of
    retries; the endpoints it goes to."""
    ek = keyspace.hook_event_key(site_id, event_id)
    raw = await store.redis.hget(ek, "event")
    if raw is None:
        raise UnknownWebhookEvent(f"site {site_id} has no webhook event {event_id!r} (events are kept 30 days)")
    event = json.loads(raw)
    endpoints = [e for e in await hooks.list_endpoints(store, site_id) if e.wants(event["type"])]
    attempts = await store.redis.llen(keyspace.hook_attempts_key(site_id, event_id))
    async with store.redis.pipeline(transaction=False) as pipe:
        for e in endpoints:
            pipe.hset(ek, "ep:" + e.id, "pending")
            pipe.xadd(keyspace.HOOK_QUEUE, {"d": delivery(site_id, event, e.id, attempts + 1, now_ms)})
        await pipe.execute()
    return [e.id for e in endpoints]


async def event_log(
    store: Store, site_id: str, pseudonym: Pseudonym, livemode: bool, *, limit: int = 50
) -> list[dict[str, Any]]:
    """The site's newest events, each with its payload, each endpoint's state and every attempt."""
    ids = await store.redis.zrevrange(keyspace.hook_log_key(site_id), 0, limit - 1)
    async with store.redis.pipeline(transaction=False) as pipe:
        for event_id in ids:
            pipe.hgetall(keyspace.hook_event_key(site_id, event_id))
            pipe.lrange(keyspace.hook_attempts_key(site_id, event_id), 0, -1)
        found = await pipe.execute() if ids else []
    out = []
    for event_id, record, attempts in zip(ids, found[::2], found[1::2], strict=True):
        if "event" not in record:
            continue  # expired between the two reads
        event = json.loads(record["event"])
        out.append(
            {
                "id": event_id,
                "type": event["type"],
                "created": event["created_ms"] // 1000,
                "payload": json.loads(render(event, site_id, pseudonym, livemode)),
                "deliveries": {k[3:]: v for k, v in record.items() if k.startswith("ep:")},
                "attempts": [json.loads(a) for a in attempts],
            }
        )
    return out
