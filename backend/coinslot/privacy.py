"""A reader's rights over their wallet: everything kept about it, as JSON, and its erasure.

What is kept, and for how long (the README's "What is kept"): a wallet nothing was ever paid
into expires, keys and all, after ``COINSLOT_EMPTY_WALLET_DAYS``; one that holds money or
purchases stays until its reader erases it. Erasing removes what was bought and every way to
reach the wallet (its token and its recovery code stop working); the ledger stays, under the
wallet's random id that nothing links to its reader any more, because the sites' and the payment
provider's accounts are derived from it and ``reconcile`` replays it.
"""

from __future__ import annotations

from typing import Any

from coinslot import dailylimit, keyspace
from coinslot.errors import TopupPending, UnknownWallet
from coinslot.ledger import parse_entry, purchase_record, receipt_seq
from coinslot.store import Store
from coinslot.tokens import WalletRef
from coinslot.topups import open_topups, wallet_topups
from coinslot.wallets import check_wallet


async def export(store: Store, ref: WalletRef, *, now_ms: int) -> dict[str, Any]:
    """Everything held about the wallet: its record, what it owns and bought, its whole ledger,
    the money credited to it, its top-ups and the refunds and disputes posted to it."""
    k = keyspace.wallet_keys(ref.wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.wallet)
        pipe.ttl(k.wallet)
        pipe.hgetall(k.owned)
        pipe.hgetall(k.purchases)
        pipe.lrange(k.ledger, 0, -1)
        pipe.smembers(k.credited)
        pipe.hgetall(k.chargebacks)
        wallet, ttl, owned, purchases, ledger, credited, chargebacks = await pipe.execute()
    if not wallet or wallet.get("gen") != str(ref.generation):
        raise UnknownWallet()
    tabs = {
        field.removeprefix(keyspace.TAB_FIELD_PREFIX): int(since)
        for field, since in wallet.items()
        if field.startswith(keyspace.TAB_FIELD_PREFIX)
    }
    return {
        "wallet": {
            "wallet_id": ref.wallet_id,
            "currency": wallet["currency"],
            "balance": int(wallet["balance"]),
            "frozen": wallet.get("frozen") == "1",
            "generation": int(wallet["gen"]),
            "created_at": int(wallet["created_ms"]) // 1000 if "created_ms" in wallet else None,
            # An empty wallet expires unless money moves through it; then it is kept until erased.
            "expires_at": now_ms // 1000 + ttl if ttl > 0 else None,
            "tabs_opened": tabs,  # site → when the wallet first went below zero there (ms)
            # site → its pass there (until ms, purchase, used) and its count against the daily cap
            "passes": _per_site(wallet, keyspace.PASS_FIELD_PREFIX),
            "daily_caps": _per_site(wallet, keyspace.CAP_FIELD_PREFIX),
            "undos": [int(at) for at in wallet.get(keyspace.UNDOS_FIELD, "").split(",") if at],
            "budget": int(wallet[keyspace.BUDGET_FIELD]) if keyspace.BUDGET_FIELD in wallet else None,
            **dailylimit.view(wallet.get(keyspace.DAILY_LIMIT_FIELD), now_ms),  # its limit and today's spending
            # Whether a recovery code is saved, and since when (ms); never the code, kept only as an HMAC.
            "recovery_code": keyspace.RECOVERY_FIELD in wallet,
            "recovery_code_created_at": int(saved) if (saved := wallet.get(keyspace.RECOVERY_AT_FIELD)) else None,
        },
        "owned": [
            {"site": site, "item": item, "purchase_id": purchase.split("|", 1)[0]}
            for field, purchase in sorted(owned.items())
            for site, _, item in [field.partition(keyspace.OWNED_FIELD_SEPARATOR)]
        ],
        "purchases": sorted(
            (
                purchase_record(pid, raw, ledger[seq - 1] if seq and 0 < seq <= len(ledger) else None, ref.wallet_id)
                for pid, raw in purchases.items()
                for seq in [receipt_seq(raw)]
            ),
            key=lambda p: p["at"],
        ),
        "ledger": [parse_entry(line, ref.wallet_id) or {"unreadable": line} for line in ledger],
        "credited": sorted(credited),
        "chargebacks": chargebacks,
        "topups": [t.public() for t in await wallet_topups(store, ref, now_ms=now_ms)],
    }


def _per_site(wallet: dict[str, str], prefix: str) -> dict[str, str]:
    return {field.removeprefix(prefix): value for field, value in wallet.items() if field.startswith(prefix)}


async def erase(store: Store, ref: WalletRef, *, now_ms: int) -> dict[str, Any]:
    """Erase the wallet; the answer says what balance was left in it (given up with it).

    Refused (``TopupPending``) while a checkout of the wallet may still be paid: its money
    would then reach nobody.
    """
    await check_wallet(store, ref)  # a token a recovery ended learns nothing, not even of a checkout
    pending = await open_topups(store, ref, now_ms=now_ms)
    if pending:
        raise TopupPending(
            f"top-up {pending[0].id} may still be paid (until {pending[0].expires_ms // 1000}); "
            "erase the wallet once it is paid or has expired"
        )
    k = keyspace.wallet_keys(ref.wallet_id)
    result = await store.run("erase", [k.wallet, k.owned, k.purchases, k.topups], [ref.generation, now_ms])
    if result[0] != "ok":
        raise UnknownWallet()
    balance, currency, kept = int(result[1]), str(result[2]), int(result[3])
    if result[4]:  # its recovery code's index, in a slot of its own: no code may find the wallet again
        await store.redis.delete(keyspace.recovery_index_key(result[4]))
    if kept == 0:
        # Nothing was ever paid in or out: no ledger to keep, so no trace either.
        await store.redis.srem(keyspace.WALLET_INDEX, ref.wallet_id)
    return {"erased": True, "balance_left": balance, "currency": currency, "ledger_entries_kept": kept}
