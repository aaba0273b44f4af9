"""Guest wallets: anonymous balances in one currency. The tokens that carry them are tokens.py's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from coinslot import dailylimit, keyspace, ratelimit
from coinslot.catalog import Catalog
from coinslot.errors import InvalidBody, UnknownSite, UnknownWallet
from coinslot.ids import new_id
from coinslot.ledger import parse_entry, purchase_record, purchase_records
from coinslot.money import check_currency
from coinslot.refunds import WalletFields, refund_windows, undo_until
from coinslot.store import Store
from coinslot.tokens import WalletRef

RECENT_LEDGER_LINES = 20
ID_TRIES = 64  # fresh ids drawn for an id_check that half of them pass


async def create_wallet(
    store: Store,
    *,
    currency: str,
    now_ms: int,
    limit: ratelimit.PerAddress | None = None,
    empty_ttl_s: int | None = None,
    id_check: Callable[[str], bool] | None = None,
) -> WalletRef:
    """A new, empty wallet; ``limit`` bounds how many one client address makes in an hour.

    ``id_check`` picks among fresh random ids: a price test's variant (coinslot.pricetests). After
    ``ID_TRIES`` misses the wallet gets the last one: the reader is then shown
    the other price before paying anything (money rule 7), which is not worth a loop without end.

    With ``empty_ttl_s`` the wallet expires, keys and all, unless money moves through it first:
    its first ledger entry (a credit or an unlock, in the scripts) makes it permanent.
    """
    if limit is not None:
        await ratelimit.hit(
            store,
            keyspace.new_wallets_bucket(limit.address),
            limit=limit.per_hour,
            window_s=3600,
            now_ms=now_ms,
            what="new wallets from this address",
        )
    currency = check_currency(currency)
    wallet_id = new_id("w")
    for _ in range(ID_TRIES if id_check is not None else 0):
        if id_check is not None and id_check(wallet_id):
            break
        wallet_id = new_id("w")
    k = keyspace.wallet_keys(wallet_id)
    async with store.redis.pipeline(transaction=True) as pipe:  # one key: MULTI holds on a Cluster too
        pipe.hset(k.wallet, mapping={"currency": currency, "balance": 0, "gen": 1, "seq": 0, "created_ms": now_ms})
        if empty_ttl_s is not None:
            pipe.expire(k.wallet, empty_ttl_s)
        await pipe.execute()
    # Indexed only once it exists: an index entry without a wallet is one that expired or was erased.
    await store.redis.sadd(keyspace.WALLET_INDEX, wallet_id)
    return WalletRef(wallet_id, 1)


async def check_wallet(store: Store, ref: WalletRef) -> str:
    """The wallet's currency, if the wallet exists and the token's generation is current."""
    currency, gen = await store.redis.hmget(keyspace.wallet_key(ref.wallet_id), ["currency", "gen"])
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    return str(currency)


async def wallet_view(store: Store, ref: WalletRef, *, catalog: Catalog, now_ms: int) -> dict[str, Any]:
    """Balance, budget, daily limit, receipts (with until when each may be undone) and recent ledger lines."""
    k = keyspace.wallet_keys(ref.wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(k.wallet)
        pipe.hgetall(k.purchases)
        pipe.lrange(k.ledger, -RECENT_LEDGER_LINES, -1)
        wallet, purchases, ledger = await pipe.execute()
    if not wallet.get("currency") or wallet.get("gen") != str(ref.generation):
        raise UnknownWallet()
    records = await purchase_records(store, ref.wallet_id, purchases)
    receipts = sorted(records, key=lambda p: p["at"], reverse=True)
    windows = await refund_windows(catalog, {r["site"] for r in receipts})
    titles = await _titles(catalog, receipts)
    for receipt in receipts:
        site = receipt["site"]
        receipt["title"] = titles.get((site, receipt["item"]), receipt["item"])
        fields = WalletFields(wallet.get(keyspace.UNDOS_FIELD), wallet.get(keyspace.cap_field(site)))
        until = undo_until(receipt, fields, refund_window_s=windows.get(site, 0), now_ms=now_ms)
        if until is not None:
            receipt["undo_until"] = until
    account = keyspace.wallet_account(ref.wallet_id)
    lines = []
    for raw in reversed(ledger):
        entry = parse_entry(raw, ref.wallet_id)
        if entry is None:
            continue  # reconcile reports it; a reader's view shows what can be read
        own = sum(p["amount"] for p in entry["postings"] if p["account"] == account)
        lines.append(
            {
                "at": entry["at"],
                "kind": entry["kind"],
                "amount": own,
                "balance": entry["balance"],
                "ref": entry["ref"],
                **({"site": entry["site"]} if "site" in entry else {}),
            }
        )
    budget = wallet.get(keyspace.BUDGET_FIELD)
    return {
        "wallet_id": ref.wallet_id,
        "currency": wallet["currency"],
        "balance": int(wallet["balance"]),
        "frozen": wallet.get("frozen") == "1",
        "budget": DEFAULT_BUDGET if budget is None else int(budget),
        **dailylimit.view(wallet.get(keyspace.DAILY_LIMIT_FIELD), now_ms),
        "recovery_code": keyspace.RECOVERY_FIELD in wallet,
        "purchases": receipts,
        "ledger": lines,
    }


async def _titles(catalog: Catalog, receipts: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The items' titles as they are now: a receipt keeps ids, not a copy of each title."""
    wanted: dict[str, set[str]] = {}
    for r in receipts:
        wanted.setdefault(r["site"], set()).add(r["item"])
    titles = {}
    for site_id, item_ids in wanted.items():
        try:
            found = await catalog.items(site_id, item_ids)
        except UnknownSite:
            continue
        titles.update({(site_id, i): item.title for i, item in found.items() if item is not None})
    return titles


DEFAULT_BUDGET = 100  # minor units: €1.00 in one click, unless the reader sets otherwise
MAX_BUDGET = 100_000


@dataclass(frozen=True, slots=True)
class ItemStanding:
    """What one wallet holds for one item and its site, as the card shows it."""

    currency: str
    balance: int  # minor units
    budget: int  # what one click may pay without asking again
    owned: str | None  # the owned hash's value: the purchase (or grant) id, and when it ends
    pass_value: str | None  # the wallet's pass on the site (keyspace.pass_field)
    cap_value: str | None  # the daily cap's count on the site (keyspace.cap_field)
    undos: str | None  # the reader's recent undos (keyspace.UNDOS_FIELD)
    receipt: dict[str, Any] | None  # the purchase that owns the item, if a purchase does

    @property
    def purchase_id(self) -> str | None:
        return self.owned.split("|", 1)[0] if self.owned else None


def _owns(value: str | None, now_ms: int) -> bool:
    """Whether an owned hash value still grants its item: for good, or until the time after its id."""
    if value is None:
        return False
    parts = value.split("|")
    return len(parts) == 1 or int(parts[1]) > now_ms


async def owned_items(
    store: Store, ref: WalletRef, site_id: str, item_ids: Sequence[str], *, now_ms: int
) -> dict[str, bool]:
    """Which of the site's items the wallet owns now (a pass covers them all), in one round trip."""
    k = keyspace.wallet_keys(ref.wallet_id)
    async with store.redis.pipeline(transaction=False) as pipe:  # one slot: one node on a Cluster
        pipe.hmget(k.owned, [keyspace.owned_field(site_id, i) for i in item_ids])
        pipe.hmget(k.wallet, ["gen", keyspace.pass_field(site_id)])
        values, (gen, pass_value) = await pipe.execute()
    if gen != str(ref.generation):  # erased, or recovered elsewhere: this token no longer speaks for it
        raise UnknownWallet()
    covered = pass_value is not None and int(pass_value.split("|", 1)[0]) > now_ms
    return {i: _owns(v, now_ms) or covered for i, v in zip(item_ids, values, strict=True)}


async def item_standing(
    store: Store, ref: WalletRef, site_id: str, item_id: str, *, is_pass: bool, now_ms: int
) -> ItemStanding:
    """Balance, budget and what grants the item, in one round trip, for the card a reader sees.

    A pass that covers the item is marked as having served (it can no longer be undone).
    """
    k = keyspace.wallet_keys(ref.wallet_id)
    currency, balance, gen, budget, owned, pass_value, cap_value, undos, receipt, line = await store.run(
        "standing",
        [k.wallet, k.owned, k.purchases, k.ledger],
        [
            keyspace.owned_field(site_id, item_id),
            keyspace.pass_field(site_id),
            keyspace.cap_field(site_id),
            now_ms,
            "pass" if is_pass else "item",
            ref.generation,
        ],
    )
    if currency is None or gen != str(ref.generation):
        raise UnknownWallet()
    return ItemStanding(
        str(currency),
        int(balance),
        DEFAULT_BUDGET if budget is None else int(budget),
        owned,
        pass_value,
        cap_value,
        undos,
        purchase_record(owned.split("|", 1)[0], receipt, line, ref.wallet_id) if receipt and owned else None,
    )


async def update_settings(
    store: Store, ref: WalletRef, *, budget: int | None, daily_limit: int | None, now_ms: int
) -> dict[str, Any]:
    """Set what one click may pay without the card asking again (0 = always ask) and what unlocks
    may charge the wallet per UTC day (0 = no limit; see coinslot.dailylimit); None leaves one as it
    is. Returns what was set: the budget, and the daily limit with what was spent today."""
    if budget is None and daily_limit is None:
        raise InvalidBody("nothing to change: send budget, daily_limit or both", [{"field": "(body)"}])
    if budget is not None and not 0 <= budget <= MAX_BUDGET:
        raise InvalidBody(f"budget {budget} must be between 0 and {MAX_BUDGET} minor units", [{"field": "budget"}])
    if daily_limit is not None and not 0 <= daily_limit <= dailylimit.MAX_DAILY_LIMIT:
        raise InvalidBody(
            f"daily_limit {daily_limit} must be between 0 and {dailylimit.MAX_DAILY_LIMIT} minor units",
            [{"field": "daily_limit"}],
        )
    args = [ref.generation, "" if budget is None else budget, "" if daily_limit is None else daily_limit]
    done = await store.run("budget", [keyspace.wallet_key(ref.wallet_id)], args)
    if not done:
        raise UnknownWallet()
    out: dict[str, Any] = {}
    if budget is not None:
        out["budget"] = budget
    if daily_limit is not None:
        out.update(dailylimit.view(done[1], now_ms))
    return out
