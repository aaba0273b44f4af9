"""What a publisher sees of the ledger, without the app: pseudonyms, no balance, sums per account."""

from __future__ import annotations

import csv
import io
import json

from coinslot import catalog, keyspace, statements, unlocks, vouchers, wallets
from coinslot.catalog import Catalog
from coinslot.clock import FrozenClock
from coinslot.store import Store

from conftest import unique


def pseudonym(site_id: str, wallet_id: str) -> str:
    return f"alias-of-{wallet_id}-on-{site_id}"


async def test_export_and_stats_name_readers_by_pseudonym_and_sum_the_sites_accounts(
    store: Store, clock: FrozenClock
) -> None:
    now = clock.now_ms()
    site, _ = await catalog.create_site(
        store, name="Planet", origins=["http://localhost:8001"], site_id=unique("site_s"), now_ms=now
    )
    other, _ = await catalog.create_site(
        store, name="Other", origins=["http://localhost:8001"], site_id=unique("site_s"), now_ms=now
    )
    shop = Catalog(store)
    readers = [await wallets.create_wallet(store, currency="EUR", now_ms=now) for _ in range(2)]
    for s in (site, other):
        await catalog.put_item(store, s, "a", title="A", price=19, now_ms=now)
        for reader in readers:
            voucher = await vouchers.create_voucher(store, s, amount=50, now_ms=now)
            await vouchers.redeem(store, reader, voucher.code, now_ms=clock.now_ms())
            clock.advance(1)
            await unlocks.purchase(
                store, shop, reader, site_id=s.id, item_id="a", shown_price=19, idempotency=None,
                now_ms=clock.now_ms(), purchase_id=unlocks.new_purchase_id(), tab_quota=None, links=None,
                pseudonym=pseudonym,
            )  # fmt: skip
            clock.advance(1)

    lines = [json.loads(line) for line in (await statements.export(store, site.id, "jsonl", pseudonym)).splitlines()]
    rows = list(csv.DictReader(io.StringIO(await statements.export(store, site.id, "csv", pseudonym))))
    totals = await statements.stats(store, site)

    aliases = {keyspace.wallet_account(pseudonym(site.id, r.wallet_id)) for r in readers}
    assert {e["wallet"] for e in lines} == {r["wallet"] for r in rows} == aliases
    assert [e["kind"] for e in lines] == ["voucher", "unlock"] * 2
    assert lines == sorted(lines, key=lambda e: (e["at"], e["wallet"], e["seq"]))
    assert all("balance" not in e for e in lines)
    own = {
        aliases.pop(),
        aliases.pop(),
        keyspace.site_revenue_account(site.id),
        keyspace.site_promotions_account(site.id),
    }
    assert {p["account"] for e in lines for p in e["postings"]} == {r["account"] for r in rows} == own
    assert totals.public() == {
        "site": site.id,
        "currency": "EUR",
        "revenue": 2 * 19,
        "promotions": -2 * 50,
        "unlocks": 2,
        "refunds": 0,
        "items": {"a": {"unlocks": 2, "refunds": 0, "revenue": 2 * 19}},
    }
