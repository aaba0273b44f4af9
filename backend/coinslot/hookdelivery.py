"""The webhook worker: posts queued deliveries, retries them, and logs every attempt.

Every ``coinslot serve`` process runs one ``Deliverer`` in its lifespan, under a consumer name of
its own, in the one consumer group of the queue Stream (``keyspace.HOOK_QUEUE``). Each round it

1. moves retries that came due from the schedule into the Stream (``lua/hook_due.lua``, atomic:
   one process moves each);
2. claims entries another consumer has held longer than ``claim_idle_s`` (XAUTOCLAIM): that
   consumer died, or lost Redis, mid-delivery;
3. reads new entries (XREADGROUP, blocking at most ``poll_s``) and posts each in a task of its
   own, at most ``MAX_IN_FLIGHT`` at a time, so a slow receiver holds up only its own delivery.

A post has ``timeout`` seconds to connect and as long again to be answered, and is cut after
twice that in all; ``claim_idle_s`` is three times it, so a live consumer's delivery is never
claimed from under it. An answer 2xx is delivered; anything else (another status, a refused
connection, a timeout, an address the SSRF rule refuses now) is a failed attempt, retried after
``first_retry × 2^(n−1)`` s (at most an hour) while within 24 h of the event, then marked failed.
The entry is acknowledged, and the retry scheduled, in one script (``lua/hook_done.lua``).
Posting and acknowledging are not one step: a process that dies between them leaves the entry
pending, and it is posted again — at least once, never "at most once".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from redis.exceptions import ResponseError

from coinslot import __version__, hookevents, hooks, keyspace
from coinslot.clock import Clock
from coinslot.errors import UnknownWebhookEndpoint, WebhookUrlRefused
from coinslot.ids import new_id
from coinslot.scripts import Script
from coinslot.store import Store
from coinslot.tokens import Pseudonym

log = logging.getLogger("coinslot.hookdelivery")

MAX_IN_FLIGHT = 32  # deliveries one process posts at once
MAX_RETRY_DELAY_S = 3600.0
DUE_PER_ROUND = 100
DUE = Script("hook_due")
DONE = Script("hook_done")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None  # the receiver's HTTP status, if it answered
    error: str | None  # why it failed without an answer
    duration_ms: int


def retry_delay_s(attempt: int, first_retry_s: float) -> float:
    """Seconds to wait after failed attempt ``attempt`` (1-based)."""
    return min(first_retry_s * 2.0 ** (attempt - 1), MAX_RETRY_DELAY_S)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{new_id('c')[2:10]}"


class Deliverer:
    """One process's share of the webhook work."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        pseudonym: Pseudonym,
        *,
        livemode: bool,
        allow_private: bool,
        first_retry_s: float,
        timeout_s: float,
        consumer: str | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.pseudonym = pseudonym
        self.livemode = livemode
        self.allow_private = allow_private
        self.first_retry_s = first_retry_s
        self.timeout_s = timeout_s
        self.claim_idle_ms = int(3 * timeout_s * 1000)
        self.poll_s = min(1.0, first_retry_s)
        self.consumer = consumer or consumer_name()
        self.in_flight: set[asyncio.Task[None]] = set()
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # a redirect could lead anywhere, past the address check
            trust_env=False,  # no proxy from the environment between us and the checked address
            headers={"User-Agent": f"Coinslot-Webhooks/{__version__}"},
        )

    async def run(self) -> None:
        """Deliver until cancelled; Redis trouble pauses, never stops, the loop."""
        while True:
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook worker %s: %s; retrying in 1 s", self.consumer, exc)
                await asyncio.sleep(1)

    async def close(self) -> None:
        """Stop posting. Deliveries cut short stay pending and another consumer (or this one's
        successor) claims them once idle: nothing is lost."""
        tasks = list(self.in_flight)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        await self._http.aclose()

    async def round(self, block: bool = True) -> int:
        """One round of the loop; how many deliveries it started."""
        now_ms = self.clock.now_ms()
        await DUE(self.store.redis, [keyspace.HOOK_RETRIES, keyspace.HOOK_QUEUE], [now_ms, DUE_PER_ROUND])
        room = MAX_IN_FLIGHT - len(self.in_flight)
        if room <= 0:
            await asyncio.wait(self.in_flight, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
            return 0
        entries = await self._claim(room)
        if not entries:
            entries = await self._read(room, block)
        for entry_id, fields in entries:
            task = asyncio.create_task(self._deliver(entry_id, fields.get("d")))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
        return len(entries)

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests)."""
        while self.in_flight:
            await asyncio.wait(set(self.in_flight))

    async def _claim(self, count: int) -> list[tuple[str, dict[str, str]]]:
        try:
            reply = await self.store.redis.xautoclaim(
                keyspace.HOOK_QUEUE, keyspace.HOOK_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return []
        claimed = [(i, f) for i, f in reply[1] if f is not None]
        if claimed:
            log.info("webhook worker %s took over %d deliveries from a stalled consumer", self.consumer, len(claimed))
        return claimed

    async def _read(self, count: int, block: bool) -> list[tuple[str, dict[str, str]]]:
        try:
            reply = await self.store.redis.xreadgroup(
                keyspace.HOOK_GROUP,
                self.consumer,
                {keyspace.HOOK_QUEUE: ">"},
                count=count,
                block=int(self.poll_s * 1000) if block else None,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return []
        return [(i, f) for _stream, entries in reply or [] for i, f in entries]

    async def _create_group(self) -> None:
        # From the Stream's start ("0"), not "$": deliveries queued before any worker ran are kept.
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another process made it first
            await self.store.redis.xgroup_create(keyspace.HOOK_QUEUE, keyspace.HOOK_GROUP, id="0", mkstream=True)

    async def _deliver(self, entry_id: str, raw: str | None) -> None:
        try:
            await self._deliver_one(entry_id, raw)
        except asyncio.CancelledError:
            raise
        except Exception:  # left pending: claimed again after claim_idle_s
            log.exception("webhook delivery %s could not be completed", entry_id)

    async def _deliver_one(self, entry_id: str, raw: str | None) -> None:
        if raw is None:
            await self._done(entry_id, None, 0)
            return
        d = json.loads(raw)
        site_id, event = d["site"], d["event"]
        try:
            endpoint = await hooks.get_endpoint(self.store, site_id, d["endpoint"])
        except UnknownWebhookEndpoint:
            await self._done(entry_id, None, 0)  # removed since: nobody to tell
            return
        outcome = await self.post(
            endpoint, hookevents.render(event, site_id, self.pseudonym, self.livemode), event["id"]
        )
        now_ms = self.clock.now_ms()
        attempt = int(d["attempt"])
        retry, due_ms, state = None, 0, "delivered"
        if not outcome.ok:
            due_ms = now_ms + int(retry_delay_s(attempt, self.first_retry_s) * 1000)
            if due_ms <= int(d["from"]) + hooks.RETRY_FOR_MS:
                retry, state = {**d, "attempt": attempt + 1}, "retrying"
            else:
                state = "failed"
        record = {
            "attempt": attempt,
            "endpoint": endpoint.id,
            "at": now_ms // 1000,
            "status": outcome.status,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "outcome": state,
            **({"next_attempt_at": due_ms // 1000} if retry else {}),
        }
        attempts = keyspace.hook_attempts_key(site_id, event["id"])
        async with self.store.redis.pipeline(transaction=False) as pipe:  # one slot: the site's tag
            pipe.rpush(attempts, json.dumps(record))
            pipe.ltrim(attempts, -hooks.ATTEMPTS_KEPT, -1)
            pipe.expire(attempts, hooks.EVENT_TTL_S)
            pipe.hset(keyspace.hook_event_key(site_id, event["id"]), "ep:" + endpoint.id, state)
            await pipe.execute()
        await self._done(entry_id, None if retry is None else json.dumps(retry, separators=(",", ":")), due_ms)

    async def _done(self, entry_id: str, retry: str | None, due_ms: int) -> None:
        await DONE(
            self.store.redis,
            [keyspace.HOOK_QUEUE, keyspace.HOOK_RETRIES],
            [keyspace.HOOK_GROUP, entry_id, retry or "", due_ms],
        )

    async def post(self, endpoint: hooks.Endpoint, body: bytes, event_id: str) -> Outcome:
        """Post ``body`` to the endpoint, signed, to an address checked just now."""
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        try:
            host, port = hooks.check_url(endpoint.url)
            addresses = await hooks.checked_addresses(host, port, allow_private=self.allow_private)
            headers = {
                "Content-Type": "application/json",
                "Coinslot-Event-Id": event_id,
                "Coinslot-Signature": hooks.signature(
                    body, endpoint.signing_secrets(self.clock.now_ms()), self.clock.now_ms() // 1000
                ),
            }
            url, extensions = _pinned(endpoint.url, addresses[0], headers)
            async with asyncio.timeout(2 * self.timeout_s):
                response = await self._http.post(url, content=body, headers=headers, extensions=extensions)
        except WebhookUrlRefused as exc:
            return Outcome(False, None, exc.detail, took())
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__, took())
        return Outcome(200 <= response.status_code < 300, response.status_code, None, took())


def _pinned(url: str, address: str, headers: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """``url`` with its host replaced by the checked ``address``: the post goes where the check
    looked, not wherever a second DNS answer points. The name stays in ``Host`` and in TLS (SNI
    and the certificate's check)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    headers["Host"] = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)), {"sni_hostname": host}
