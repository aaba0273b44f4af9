"""Publisher webhooks: endpoints, events, and their signatures.

A site registers endpoint URLs (admin API, ``coinslot webhook add``). When money moves for the
site — an item bought (``unlock.created``), a pass bought (``pass.started``), a purchase refunded
(``purchase.refunded``), a top-up started from the site paid (``topup.paid``) — or the publisher
asks for a ``test.ping``, an event is made and one delivery per subscribed endpoint is queued.
``coinslot.hookevents`` makes and queues them, ``coinslot.hookdelivery`` posts them; this module
holds the endpoints, the signatures and the rule of where Coinslot may post.

The design, in the order a delivery lives it:

- **Emission never waits on a publisher.** The money path calls ``emit`` after its script has
  moved the money. ``emit`` looks up the site's endpoints in a per-process cache (refreshed every
  ``TARGETS_TTL_S``: an endpoint added in another process is heard of that much later), and only
  when there are some it writes the event (``{hk:<site>}``) and XADDs its deliveries to the queue
  Stream (``{hooks}``): one pipelined round trip to Redis, no HTTP. A failure there is logged and
  counted, never raised: the reader has paid and gets the item.
- **The window.** The money moves in one script; the event is written after it, by the same
  process. If that process dies (or Redis refuses the write) between the two, the money has moved
  and no event exists: the purchase, refund or top-up is in the ledger export and
  ``GET /v1/admin/ledger``, which a publisher who must not miss one reconciles against. An
  outbox inside the money scripts would close the window, at the cost of touching keys of another
  hash tag from the wallet's script, which Cluster forbids.
- **At least once.** Each delivery is a Stream entry read in one consumer group by every server
  process, so each entry goes to one of them; it stays pending until acknowledged, and a process
  that dies holding it loses nothing: another claims it (XAUTOCLAIM) once it has been idle longer
  than a delivery can take. A delivery posted but not acknowledged (a crash right after the
  receiver answered) is posted again: receivers de-duplicate by event id, which every attempt
  carries unchanged (``Coinslot-Event-Id`` and the payload's ``id``).
- **Retries.** A delivery that fails (no answer in time, or not 2xx) waits
  ``first_retry × 2^(n−1)`` seconds (at most an hour) in a sorted set and is moved back into the
  Stream when due; once the next try would come more than 24 h after the event (or after a "send
  again"), the delivery is marked failed. Every attempt is logged with its outcome.
- **Signatures** are Stripe's scheme: ``Coinslot-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of
  "t.body">``, one ``v1`` per live secret of the endpoint. Rotating a secret keeps the old one
  signing for ``ROTATION_OVERLAP_S`` more, so a receiver can switch without losing events.
  Secrets are kept in Redis as they are: signing needs them, as Stripe's do.
- **No SSRF.** An endpoint must be ``https`` unless its host is loopback, and its host must not
  resolve to a private, loopback, link-local, multicast or reserved address unless the settings
  allow it (tests and the demo). It is checked when registered and again at every delivery, and
  the delivery connects to the very address it checked (DNS rebinding).
- **Privacy.** A payload names the reader only by the wallet's pseudonym on the site (as the
  ledger export and unlock tokens do), never the wallet id; the queue keeps the wallet id, and
  the pseudonym is made when the payload is rendered.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from coinslot import keyspace
from coinslot.errors import (
    InvalidBody,
    TooManyWebhookEndpoints,
    UnknownWebhookEndpoint,
    WebhookUrlRefused,
)
from coinslot.ids import new_id
from coinslot.store import Store

log = logging.getLogger("coinslot.hooks")

EVENT_TYPES = ("unlock.created", "pass.started", "purchase.refunded", "topup.paid", "test.ping")
MAX_ENDPOINTS = 16  # per site
MAX_URL_CHARS = 2048
ROTATION_OVERLAP_S = 24 * 60 * 60  # a rotated secret still signs for a day
RETRY_FOR_MS = 24 * 60 * 60 * 1000  # a delivery is retried for a day from its event (or "send again")
EVENT_TTL_S = 30 * 24 * 60 * 60  # an event, its attempts and its log entry are kept 30 days
LOG_LENGTH = 1000  # newest events kept in a site's log
ATTEMPTS_KEPT = 100  # per event
TARGETS_TTL_S = 5.0  # how long a process trusts what it knows of a site's endpoints
RESOLVE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    events: tuple[str, ...]  # the event types it receives (test.ping always)
    created_ms: int
    # Signing secrets, newest first: (secret, until when it signs in ms, or 0 for as long as it is current).
    secrets: tuple[tuple[str, int], ...]

    def wants(self, event_type: str) -> bool:
        return event_type == "test.ping" or event_type in self.events

    def signing_secrets(self, now_ms: int) -> list[str]:
        return [s for s, until in self.secrets if not until or until > now_ms]

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events), "created": self.created_ms // 1000}

    def record(self) -> str:
        return json.dumps({**self.public(), "created_ms": self.created_ms, "secrets": [list(s) for s in self.secrets]})

    @classmethod
    def load(cls, raw: str) -> Endpoint:
        r = json.loads(raw)
        secrets_ = tuple((s, int(until)) for s, until in r["secrets"])
        return cls(r["id"], r["url"], tuple(r["events"]), int(r["created_ms"]), secrets_)


# Signatures ---------------------------------------------------------------------------


def signature(body: bytes, signing_secrets: Sequence[str], timestamp_s: int) -> str:
    """``t=<timestamp>,v1=<hmac>[,v1=<hmac>…]``: HMAC-SHA256 of ``"<timestamp>.<body>"`` per secret."""
    signed = str(timestamp_s).encode() + b"." + body
    macs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in signing_secrets]
    return ",".join([f"t={timestamp_s}"] + [f"v1={m}" for m in macs])


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# Where Coinslot may post (SSRF) -------------------------------------------------------


def is_loopback_name(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, int]:
    """The URL's host and port, if Coinslot may post to it at all (https beyond loopback)."""
    if len(url) > MAX_URL_CHARS:
        raise WebhookUrlRefused(f"endpoint URL has {len(url)} characters, more than {MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise WebhookUrlRefused(f"endpoint URL {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookUrlRefused(f"endpoint URL {url!r} must be https://host/path")
    if parts.scheme == "http" and not is_loopback_name(host):
        raise WebhookUrlRefused(f"endpoint URL {url!r} must use https beyond loopback")
    if parts.username or parts.password or parts.fragment:
        raise WebhookUrlRefused(f"endpoint URL {url!r} may carry no user, password or fragment")
    return host, port or (443 if parts.scheme == "https" else 80)


async def checked_addresses(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses ``host`` resolves to, if every one of them may be reached; raises ``WebhookUrlRefused``."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise WebhookUrlRefused(f"endpoint host {host!r} does not resolve ({exc or 'timed out'})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        # Every address, not just the first: a name that also resolves inward is refused whole.
        inward = [a for a in addresses if not is_public_address(a)]
        if inward:
            raise WebhookUrlRefused(
                f"endpoint host {host!r} resolves to {inward[0]}, a private, loopback or reserved address"
            )
    if not addresses:
        raise WebhookUrlRefused(f"endpoint host {host!r} has no address")
    return addresses


# Endpoints ----------------------------------------------------------------------------


def _check_events(events: Sequence[str] | None) -> tuple[str, ...]:
    if not events:
        return tuple(t for t in EVENT_TYPES if t != "test.ping")
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise InvalidBody(f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
    return tuple(dict.fromkeys(events))


async def add_endpoint(
    store: Store, site_id: str, url: str, events: Sequence[str] | None, *, allow_private: bool, now_ms: int
) -> tuple[Endpoint, str]:
    """Register an endpoint for the site; returns it and its signing secret (shown this once)."""
    host, port = check_url(url)
    await checked_addresses(host, port, allow_private=allow_private)
    key = keyspace.hook_endpoints_key(site_id)
    if await store.redis.hlen(key) >= MAX_ENDPOINTS:
        raise TooManyWebhookEndpoints(f"site {site_id} has {MAX_ENDPOINTS} webhook endpoints, the most it may")
    secret = new_secret()
    endpoint = Endpoint(new_id("we"), url, _check_events(events), now_ms, ((secret, 0),))
    await store.redis.hset(key, endpoint.id, endpoint.record())
    forget_targets(site_id)
    return endpoint, secret


async def list_endpoints(store: Store, site_id: str) -> list[Endpoint]:
    raw = await store.redis.hgetall(keyspace.hook_endpoints_key(site_id))
    return sorted((Endpoint.load(r) for r in raw.values()), key=lambda e: (e.created_ms, e.id))


async def get_endpoint(store: Store, site_id: str, endpoint_id: str) -> Endpoint:
    raw = await store.redis.hget(keyspace.hook_endpoints_key(site_id), endpoint_id)
    if raw is None:
        raise UnknownWebhookEndpoint(f"site {site_id} has no webhook endpoint {endpoint_id!r}")
    return Endpoint.load(raw)


async def remove_endpoint(store: Store, site_id: str, endpoint_id: str) -> None:
    """Remove an endpoint; its queued deliveries are dropped when they come due."""
    if not await store.redis.hdel(keyspace.hook_endpoints_key(site_id), endpoint_id):
        raise UnknownWebhookEndpoint(f"site {site_id} has no webhook endpoint {endpoint_id!r}")
    forget_targets(site_id)


async def rotate_secret(store: Store, site_id: str, endpoint_id: str, *, now_ms: int) -> tuple[Endpoint, str, int]:
    """A new signing secret; the current one signs too for ``ROTATION_OVERLAP_S`` more. Returns
    the endpoint, the new secret (shown once) and until when (ms) the previous one signs."""
    endpoint = await get_endpoint(store, site_id, endpoint_id)
    until = now_ms + ROTATION_OVERLAP_S * 1000
    kept = [(s, min(u, until) if u else until) for s, u in endpoint.secrets if not u or u > now_ms][:1]
    secret = new_secret()
    rotated = Endpoint(endpoint.id, endpoint.url, endpoint.events, endpoint.created_ms, ((secret, 0), *kept))
    await store.redis.hset(keyspace.hook_endpoints_key(site_id), endpoint.id, rotated.record())
    return rotated, secret, until


# Which endpoints want a site's events, as each process knows it ------------------------

# site id → (monotonic time read, the endpoints: id and the types each wants); per process.
_targets: dict[str, tuple[float, list[tuple[str, tuple[str, ...]]]]] = {}


def forget_targets(site_id: str) -> None:
    _targets.pop(site_id, None)


async def targets_of(store: Store, site_id: str) -> list[tuple[str, tuple[str, ...]]]:
    now = time.monotonic()
    known = _targets.get(site_id)
    if known is not None and now - known[0] < TARGETS_TTL_S:
        return known[1]
    found = [(e.id, e.events) for e in await list_endpoints(store, site_id)]
    if len(_targets) > 10_000:
        _targets.clear()  # sites come and go; a miss costs one HGETALL
    _targets[site_id] = (now, found)
    return found
