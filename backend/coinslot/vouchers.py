"""Vouchers: codes a site issues, paid from its promotions account, redeemed once per wallet.

A use is taken in the voucher's own keys first and given back if the wallet's credit
script refuses it, so neither a use nor a cent is lost between the two (money rule 9).
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import Any

from coinslot import keyspace, ratelimit
from coinslot.catalog import MAX_PRICE, Site
from coinslot.errors import (
    CurrencyMismatch,
    DuplicateCode,
    InvalidBody,
    InvalidQuery,
    UnknownVoucher,
    UnknownWallet,
    VoucherAlreadyRedeemed,
    VoucherDisabled,
    VoucherUnavailable,
)
from coinslot.metrics import CREDITED_MINOR_UNITS, CREDITS
from coinslot.store import Store
from coinslot.tokens import WalletRef
from coinslot.wallets import check_wallet

CODE = re.compile(r"^[A-Z0-9]{6,40}\Z")
MAX_VOUCHER = 100 * MAX_PRICE  # minor units


def normalize_code(code: str) -> str:
    """Codes are read aloud and retyped: case, spaces and dashes don't matter."""
    return re.sub(r"[\s-]", "", code).upper()


def generate_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode()  # 80 random bits, 16 characters
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


@dataclass(frozen=True, slots=True)
class Voucher:
    code: str
    site: str
    amount: int
    currency: str
    uses: int

    def public(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "site": self.site,
            "amount": self.amount,
            "currency": self.currency,
            "uses": self.uses,
        }


async def create_voucher(
    store: Store, site: Site, *, amount: int, uses: int = 1, code: str | None = None, now_ms: int
) -> Voucher:
    if not 0 < amount <= MAX_VOUCHER:
        raise InvalidBody(
            f"voucher amount {amount} must be between 1 and {MAX_VOUCHER} minor units", [{"field": "amount"}]
        )
    if not 0 < uses <= 1_000_000:
        raise InvalidBody(f"voucher uses {uses} must be between 1 and 1000000", [{"field": "uses"}])
    shown = code.strip() if code else generate_code()
    normal = normalize_code(shown)
    if not CODE.match(normal):
        raise InvalidBody(
            f"voucher code {shown!r} must be 6 to 40 letters and digits (dashes allowed)", [{"field": "code"}]
        )
    voucher_key, _ = keyspace.voucher_keys(normal)
    # Written whole under a scratch name, then renamed only if the code is free (same slot),
    # so no half-made voucher can ever be seen or block its code.
    scratch = keyspace.scratch_key(voucher_key, "new:" + secrets.token_hex(8))
    await store.redis.hset(
        scratch,
        mapping={
            "site": site.id,
            "amount": amount,
            "currency": site.currency,
            "uses": uses,
            "uses_left": uses,
            "created_ms": now_ms,
            "shown": shown,
        },
    )
    if not await store.redis.renamenx(scratch, voucher_key):
        await store.redis.delete(scratch)
        raise DuplicateCode(f"voucher code {shown!r} already exists")
    # Another slot than the voucher's: a crash right here leaves a voucher that works but is not listed.
    await store.redis.zadd(keyspace.site_vouchers_key(site.id), {normal: 0})
    return Voucher(shown, site.id, amount, site.currency, uses)


async def redeem(
    store: Store, wallet: WalletRef, code: str, *, now_ms: int, tries: ratelimit.PerAddress | None = None
) -> tuple[int, int, str]:
    """Credit the voucher's value to the wallet; returns (amount, new balance, currency).

    ``tries`` bounds the codes one client address may try in an hour. Guessing codes must be
    slow: every try is counted before it is checked, in one atomic step, so parallel guesses
    cannot slip past the limit; only a credited code is uncounted.
    """
    if tries is None:
        return await _redeem(store, wallet, code, now_ms=now_ms)
    bucket = keyspace.redeem_tries_bucket(tries.address)
    await ratelimit.hit(store, bucket, limit=tries.per_hour, window_s=3600, now_ms=now_ms, what="voucher code tries")
    credited = await _redeem(store, wallet, code, now_ms=now_ms)
    await ratelimit.give_back(store, bucket, window_s=3600, now_ms=now_ms)
    return credited


async def _redeem(store: Store, wallet: WalletRef, code: str, *, now_ms: int) -> tuple[int, int, str]:
    normal = normalize_code(code)
    if not CODE.match(normal):
        raise VoucherUnavailable("voucher code not recognised")
    voucher_key, redeemed_by = keyspace.voucher_keys(normal)
    k = keyspace.wallet_keys(wallet.wallet_id)
    # A stale token must not take a use: its give-back could race a current token's credit.
    await check_wallet(store, wallet)
    taken = await store.run("voucher_take", [voucher_key, redeemed_by], [wallet.wallet_id])
    if taken[0] == "unknown":
        raise VoucherUnavailable("voucher code not recognised")
    if taken[0] == "used-up":
        raise VoucherUnavailable("voucher has no uses left")
    if taken[0] == "disabled":
        raise VoucherDisabled("voucher was disabled by the site that issued it")
    # "again": this wallet's use was taken before, by an earlier redeem or by this very call
    # if a lost reply made it run twice. The credit, keyed by the code, tells which.
    _, site_id, amount, currency = taken
    result = await store.run(
        "credit",
        [k.wallet, k.credited, k.ledger, k.wallet],
        [
            now_ms,
            keyspace.voucher_credit_ref(normal),
            amount,
            currency,
            "voucher",
            keyspace.site_promotions_account(site_id),
            site_id,
            "0",
        ],
    )
    CREDITS.labels("voucher", result[0]).inc()
    if result[0] == "ok":
        CREDITED_MINOR_UNITS.labels("voucher", currency).inc(int(amount))
        return int(amount), int(result[1]), str(currency)
    if result[0] == "duplicate":
        # The wallet holds this voucher's credit (perhaps from a concurrent call): its use is spent.
        raise VoucherAlreadyRedeemed("this wallet already redeemed that voucher")
    await store.run("voucher_give_back", [voucher_key, redeemed_by], [wallet.wallet_id])
    if result[0] == "currency":
        raise CurrencyMismatch(f"voucher is in {currency}, the wallet holds {result[1]}")
    raise UnknownWallet()


@dataclass(frozen=True, slots=True)
class VoucherState:
    """A voucher as its site sees it afterwards: how many uses are left, and whether it was disabled."""

    voucher: Voucher
    uses_left: int
    disabled: bool
    created_ms: int

    def public(self) -> dict[str, Any]:
        return {
            **self.voucher.public(),
            "uses_left": self.uses_left,
            "disabled": self.disabled,
            "created_at": self.created_ms,
        }


def _state(code: str, h: dict[str, str]) -> VoucherState:
    voucher = Voucher(h.get("shown", code), h["site"], int(h["amount"]), h["currency"], int(h["uses"]))
    return VoucherState(voucher, max(0, int(h["uses_left"])), h.get("disabled") == "1", int(h["created_ms"]))


async def list_vouchers(
    store: Store, site_id: str, *, limit: int, cursor: str | None
) -> tuple[list[VoucherState], str | None]:
    """Up to ``limit`` of the site's vouchers in code order after ``cursor``; and the next page's cursor."""
    if cursor is not None and not CODE.match(cursor):
        raise InvalidQuery(f"cursor {cursor!r} is not one this API gave out", field="cursor")
    start = "-" if cursor is None else "(" + cursor
    codes = await store.redis.zrange(
        keyspace.site_vouchers_key(site_id), start, "+", bylex=True, offset=0, num=limit + 1
    )
    page = codes[:limit]
    async with store.redis.pipeline(transaction=False) as pipe:
        for code in page:
            pipe.hgetall(keyspace.voucher_keys(code)[0])
        rows = await pipe.execute()
    states = [_state(code, h) for code, h in zip(page, rows, strict=True) if h and h.get("site") == site_id]
    return states, page[-1] if len(codes) > limit and page else None


async def disable_voucher(store: Store, site_id: str, code: str) -> VoucherState:
    """Refuse every further redeem of the site's voucher (``voucher-disabled``); redeemed credit stays."""
    normal = normalize_code(code)
    voucher_key, _ = keyspace.voucher_keys(normal)
    if not CODE.match(normal) or await store.redis.hget(voucher_key, "site") != site_id:
        raise UnknownVoucher(f"voucher {code!r} is not one of site {site_id}")  # another site's is not told apart
    await store.redis.hset(voucher_key, "disabled", "1")
    return _state(normal, await store.redis.hgetall(voucher_key))
