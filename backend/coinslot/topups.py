"""Top-ups: a wallet asks for money through a checkout, and is credited exactly once.

The credit is keyed by the checkout session id (money rule 5): however often and in
whatever order the provider, the return page or a reconcile run report a session paid,
the credit script adds it once, with the amount stored when the session was created.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from coinslot import hookevents, keyspace, ratelimit
from coinslot.catalog import Catalog
from coinslot.errors import CurrencyMismatch, NotFound, TopupAmountNotAllowed
from coinslot.idempotency import Idempotency, claim
from coinslot.ids import new_id
from coinslot.metrics import ALERTS, CREDITED_MINOR_UNITS, CREDITS
from coinslot.payments import Payments, SessionReport
from coinslot.store import Store
from coinslot.tokens import WalletRef
from coinslot.wallets import check_wallet

log = logging.getLogger("coinslot.topups")

SESSION_INDEX_TTL_S = 40 * 24 * 60 * 60  # longer than any provider reports on a session


class Fulfilment(Enum):
    CREDITED = "credited"
    ALREADY = "already-credited"
    MISMATCH = "amount-mismatch"
    UNKNOWN_SESSION = "unknown-session"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Topup:
    id: str
    wallet_id: str
    amount: int
    currency: str
    status: str  # pending | paid | failed | expired
    checkout_url: str
    session_id: str
    expires_ms: int
    # The reader completed the checkout with a delayed method (SEPA Direct Debit): the money is
    # on its way, the top-up stays pending until the provider reports it paid or failed.
    awaiting_payment: bool = False
    site: str | None = None  # the site it was started from, which hears of the payment

    def public(self) -> dict[str, Any]:
        return {
            "topup_id": self.id,
            "site": self.site,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "checkout_url": self.checkout_url,
            "expires_at": self.expires_ms // 1000,
            "awaiting_payment": self.awaiting_payment,
        }


@dataclass(frozen=True, slots=True)
class TopupLimits:
    """Card testing: at most so many new checkouts per wallet and per client address in an hour."""

    per_wallet: int
    per_ip: int
    address: str  # the client address's pseudonym (coinslot.addresses)


def _from_hash(topup_id: str, wallet_id: str, h: dict[str, str], now_ms: int) -> Topup:
    status = h["status"]
    awaiting = status == "pending" and "awaiting" in h
    if status == "pending" and not awaiting and int(h["expires_ms"]) <= now_ms:
        status = "expired"
    return Topup(
        id=topup_id,
        wallet_id=wallet_id,
        amount=int(h["amount"]),
        currency=h["currency"],
        status=status,
        checkout_url=h["url"],
        session_id=h["session"],
        expires_ms=int(h["expires_ms"]),
        awaiting_payment=awaiting,
        site=h.get("site"),
    )


def check_amount(amount: int, currency: str, allowed: tuple[int, ...]) -> None:
    if amount not in allowed:
        raise TopupAmountNotAllowed(
            f"top-up amount {amount} is not one of {list(allowed)} ({currency} minor units)",
            allowed=list(allowed),
        )


async def create_topup(
    store: Store,
    payments: Payments,
    wallet: WalletRef,
    *,
    amount: int,
    allowed: Callable[[str], tuple[int, ...]],
    now_ms: int,
    topup_id: str | None = None,
    issued_ms: int | None = None,
    limits: TopupLimits | None = None,
    idempotency: Idempotency | None = None,
    site_id: str | None = None,
    catalog: Catalog | None = None,
) -> Topup:
    """Open a checkout for ``amount`` and remember what was asked, to check it on payment.

    ``topup_id`` may be chosen in advance (a prepared top-up link, signed at ``issued_ms``);
    asking again for the same id returns the existing top-up instead of opening a second
    checkout. The checkout's lifetime counts from ``issued_ms``, so a retried request asks the
    provider for exactly the same session under the same idempotency key. ``limits`` raise
    ``RateLimited`` before a new checkout is opened beyond them.

    With ``idempotency``, the first request under a key picks the top-up's id and time, and
    every retry within a day reuses both: one top-up, one checkout. The same key with another
    body raises ``IdempotencyKeyReused``.

    ``site_id`` names the site the top-up was started from (its 402's link, or the caller): it must
    exist in ``catalog`` and sell in the wallet's currency, and hears of the payment (``topup.paid``).
    """
    k = keyspace.wallet_keys(wallet.wallet_id)
    currency = await check_wallet(store, wallet)
    check_amount(amount, currency, allowed(currency))
    if site_id is not None:
        if catalog is None:
            raise ValueError("a top-up for a site needs the catalog to check the site")
        site = await catalog.site(site_id)  # UnknownSite: 404
        if site.currency != currency:
            raise CurrencyMismatch(f"wallet holds {currency}, site {site.id} sells in {site.currency}")
    if idempotency is not None:
        claimed = k.idempotency("topups", idempotency.key)
        topup_id, issued = (await claim(store, claimed, idempotency, f"{new_id('tu')} {now_ms}")).split(" ")
        issued_ms = int(issued)
    if topup_id is None:
        topup_id = new_id("tu")
    else:
        existing = await store.redis.hgetall(k.topup(topup_id))
        if existing:
            return _from_hash(topup_id, wallet.wallet_id, existing, now_ms)
    if limits is not None:
        # Counted only when a new checkout would open: reopening a prepared link is free.
        for bucket, limit, what in (
            (keyspace.wallet_topups_bucket(wallet.wallet_id), limits.per_wallet, "top-up checkouts for this wallet"),
            (keyspace.address_topups_bucket(limits.address), limits.per_ip, "top-up checkouts from this address"),
        ):
            await ratelimit.hit(store, bucket, limit=limit, window_s=3600, now_ms=now_ms, what=what)
    session = await payments.create_checkout(
        topup_id=topup_id,
        wallet_id=wallet.wallet_id,
        amount=amount,
        currency=currency,
        now_ms=now_ms if issued_ms is None else issued_ms,
    )
    record = {
        "amount": amount,
        "currency": currency,
        "status": "pending",
        "session": session.session_id,
        "url": session.url,
        "provider": payments.name,
        "created_ms": now_ms,
        "expires_ms": session.expires_ms,
        **({"site": site_id} if site_id is not None else {}),
    }
    # Written under a scratch name and renamed only if the id is still free, so two racing
    # requests for one prepared id keep one complete record (both keys share the wallet's slot).
    # A scratch name of its own per request: racing requests may all get the same session back
    # from a provider that honours the idempotency key (Stripe does).
    scratch = keyspace.scratch_key(k.topup(topup_id), new_id("new"))
    await store.redis.hset(scratch, mapping=record)
    # The session index first: if the process dies before the rename, an index without a
    # record is harmless, while a record without an index would make a paid session unknown.
    index = keyspace.checkout_session_key(session.session_id)
    await store.redis.set(index, f"{wallet.wallet_id} {topup_id}", ex=SESSION_INDEX_TTL_S)
    if await store.redis.renamenx(scratch, k.topup(topup_id)):
        async with store.redis.pipeline(transaction=True) as pipe:  # all the wallet's keys: one slot
            pipe.expire(k.topup(topup_id), SESSION_INDEX_TTL_S)  # the ledger keeps the money for good
            # The wallet's own index of its top-ups (for its reader's export), as long as their records live.
            pipe.zadd(k.topups, {topup_id: now_ms})
            pipe.zremrangebyscore(k.topups, "-inf", now_ms - SESSION_INDEX_TTL_S * 1000)
            pipe.expire(k.topups, SESSION_INDEX_TTL_S)
            # An empty wallet, which would expire, lives at least as long as this session may be paid.
            pipe.expire(k.wallet, SESSION_INDEX_TTL_S, gt=True)
            await pipe.execute()
    else:
        await store.redis.delete(scratch)
        # Our session lost the race and will expire unpaid; its index goes, unless it is the winner's too.
        if await store.redis.hget(k.topup(topup_id), "session") != session.session_id:
            await store.redis.delete(index)
    h = await store.redis.hgetall(k.topup(topup_id))
    return _from_hash(topup_id, wallet.wallet_id, h, now_ms)


async def get_topup(store: Store, wallet: WalletRef, topup_id: str, *, now_ms: int) -> Topup:
    await check_wallet(store, wallet)  # a token that a recovery ended reads nothing of the wallet
    h = await store.redis.hgetall(keyspace.wallet_keys(wallet.wallet_id).topup(topup_id))
    if not h or "url" not in h:
        raise NotFound(f"top-up {topup_id!r} not found for this wallet")
    return _from_hash(topup_id, wallet.wallet_id, h, now_ms)


async def find_session(store: Store, session_id: str, *, now_ms: int) -> Topup | None:
    raw = await store.redis.get(keyspace.checkout_session_key(session_id))
    if raw is None:
        return None
    wallet_id, topup_id = raw.split(" ")
    h = await store.redis.hgetall(keyspace.wallet_keys(wallet_id).topup(topup_id))
    return _from_hash(topup_id, wallet_id, h, now_ms) if h and "url" in h else None


async def fulfil(
    store: Store, session_id: str, *, amount: int, currency: str, now_ms: int, payment_id: str = ""
) -> Fulfilment:
    """Credit the wallet behind a paid checkout session, at most once per session id.

    ``amount`` and ``currency`` are what the provider reports as paid; if they differ from
    what was stored when the session was created, nothing is credited and the operator is
    alerted through the ``coinslot.topups`` logger at ERROR. ``payment_id`` (a Stripe
    PaymentIntent) is remembered so later refunds and disputes find the top-up.
    """
    raw = await store.redis.get(keyspace.checkout_session_key(session_id))
    if raw is None:
        log.error("paid checkout session %s is unknown to this deployment; nothing credited", session_id)
        ALERTS.labels("unknown-session").inc()
        return Fulfilment.UNKNOWN_SESSION
    wallet_id, topup_id = raw.split(" ")
    k = keyspace.wallet_keys(wallet_id)
    if payment_id:
        # Before the credit, so a refund never meets a credited top-up it cannot trace. Kept for
        # good: disputes may come months later. Only a report the credit accepts names the payment,
        # with the stored amount and currency: a differing report (alerted below) must neither widen
        # what a refund or dispute may take back nor overwrite what an earlier, right report wrote.
        stored = await store.redis.hmget(k.topup(topup_id), ["amount", "currency"])
        if stored == [str(amount), currency]:
            await store.redis.set(
                keyspace.payment_key(payment_id), f"{wallet_id} {topup_id} {session_id} {stored[0]} {stored[1]}"
            )
    result = await store.run(
        "credit",
        [k.wallet, k.credited, k.ledger, k.topup(topup_id)],
        [
            now_ms,
            keyspace.checkout_credit_ref(session_id),
            amount,
            currency,
            "topup",
            keyspace.ACCOUNT_TOPUP_CLEARING,
            "",
            "1",
            payment_id,
        ],
    )
    status = result[0]
    CREDITS.labels("topup", status).inc()
    if status == "ok":
        CREDITED_MINOR_UNITS.labels("topup", currency).inc(amount)
        await hookevents.topup_paid(store, k.topup(topup_id), topup_id, wallet_id, now_ms)
        return Fulfilment.CREDITED
    if status == "duplicate":
        return Fulfilment.ALREADY
    if status == "mismatch":
        ALERTS.labels("amount-mismatch").inc()
        log.error(
            "ALERT checkout session %s reported %s %s but %s %s was stored; nothing credited (wallet %s, top-up %s)",
            session_id,
            amount,
            currency,
            result[1],
            result[2],
            wallet_id,
            topup_id,
        )
        return Fulfilment.MISMATCH
    if status == "no-wallet":
        # Its reader erased the wallet (erasing waits for open checkouts, so only a payment that
        # arrives later than its session could be paid gets here): the money must go back.
        ALERTS.labels("wallet-gone").inc()
        log.error(
            "ALERT checkout session %s paid %s %s for wallet %s, which was erased; refund it in the Stripe Dashboard",
            session_id,
            amount,
            currency,
            wallet_id,
        )
        return Fulfilment.REFUSED
    log.error("checkout session %s could not be credited: %s", session_id, status)
    return Fulfilment.REFUSED


PROVIDER_CHECK_INTERVAL_MS = 5_000  # the return page asks the provider about one session at most this often


async def may_ask_provider(store: Store, session_id: str, *, now_ms: int) -> bool:
    """Whether the reader's return page may ask the provider about this session now.

    Reloads and crafted links must not turn our API quota at the provider into anyone's tool:
    one question per session per interval, however many requests come.
    """
    took = await store.redis.set(
        keyspace.provider_check_key(session_id), now_ms, nx=True, px=PROVIDER_CHECK_INTERVAL_MS
    )
    return bool(took)


async def mark(store: Store, session_id: str, state: str, *, now_ms: int) -> str:
    """Record a session that brought no money (``awaiting``, ``failed``, ``expired``); paid stays paid.

    Returns the top-up's status afterwards, or ``unknown-session``.
    """
    raw = await store.redis.get(keyspace.checkout_session_key(session_id))
    if raw is None:
        return "unknown-session"
    wallet_id, topup_id = raw.split(" ")
    status: str = await store.run("topup_mark", [keyspace.wallet_keys(wallet_id).topup(topup_id)], [state, now_ms])
    return status


async def settle(store: Store, report: SessionReport, *, now_ms: int) -> str:
    """Act on what the provider says about a session: credit once if paid, else record the state.

    Sessions without our metadata belong to another integration on the same account: ignored.
    Returns a short outcome for the webhook's answer and the reconcile report.
    """
    if report.topup_id is None:
        return "ignored"
    if report.state == "paid":
        outcome = await fulfil(
            store,
            report.session_id,
            amount=report.amount,
            currency=report.currency,
            now_ms=now_ms,
            payment_id=report.payment_intent or "",
        )
        return outcome.value
    if report.state in ("awaiting", "failed", "expired"):
        return await mark(store, report.session_id, report.state, now_ms=now_ms)
    return "open"


RECONCILE_DAYS = 30


async def repair_from_provider(store: Store, payments: Payments, *, now_ms: int) -> dict[str, Any]:
    """Credit every paid session of the last 30 days that the ledger lacks (a webhook was lost).

    Uses the same exactly-once credit as the webhook, so running it again changes nothing.
    """
    since_s = now_ms // 1000 - RECONCILE_DAYS * 24 * 60 * 60
    checked = 0
    credited: list[dict[str, Any]] = []
    problems: list[str] = []
    async for report in payments.recent_sessions(since_s=since_s):
        checked += 1
        if report.topup_id is None or report.state != "paid":
            continue
        outcome = await settle(store, report, now_ms=now_ms)
        if outcome == Fulfilment.CREDITED.value:
            credited.append(
                {
                    "session": report.session_id,
                    "topup_id": report.topup_id,
                    "amount": report.amount,
                    "currency": report.currency,
                }
            )
        elif outcome != Fulfilment.ALREADY.value:
            problems.append(f"paid session {report.session_id} (top-up {report.topup_id}): {outcome}")
    return {"sessions_checked": checked, "credited": credited, "problems": problems}


async def wallet_topups(store: Store, wallet: WalletRef, *, now_ms: int) -> list[Topup]:
    """The wallet's top-ups whose records are still kept (40 days), oldest first."""
    k = keyspace.wallet_keys(wallet.wallet_id)
    ids = await store.redis.zrange(k.topups, 0, -1)
    async with store.redis.pipeline(transaction=False) as pipe:
        for topup_id in ids:
            pipe.hgetall(k.topup(topup_id))
        records = await pipe.execute() if ids else []
    return [_from_hash(i, wallet.wallet_id, h, now_ms) for i, h in zip(ids, records, strict=True) if h]


async def open_topups(store: Store, wallet: WalletRef, *, now_ms: int) -> list[Topup]:
    """The wallet's top-ups that may still bring money: pending, or awaiting a bank transfer."""
    return [t for t in await wallet_topups(store, wallet, now_ms=now_ms) if t.status == "pending"]
