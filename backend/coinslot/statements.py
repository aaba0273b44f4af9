"""What a publisher sees of the ledger: its site's entries (the export) and their sums (stats).

A site's entries are those, in every wallet's ledger, that post to one of the site's accounts.
The publisher sees each reader's wallet under a pseudonym of its own, so one reader cannot be
followed from one publisher to another, and never the reader's balance.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from coinslot import keyspace
from coinslot.catalog import Site
from coinslot.ledger import parse_entry, wallet_ids
from coinslot.store import Store

# (site id, wallet id) → what stands for the wallet on that site (UnlockTokens.pseudonym)
Pseudonym = Callable[[str, str], str]

FORMATS = ("jsonl", "csv")
CSV_FIELDS = ("at", "wallet", "seq", "kind", "ref", "site", "item", "currency", "account", "amount")


async def site_entries(store: Store, site_id: str) -> AsyncIterator[dict[str, Any]]:
    """Every ledger entry that moves money to or from ``site_id``, one wallet at a time."""
    prefix = keyspace.site_accounts_prefix(site_id)
    async for wallet_id in wallet_ids(store):
        for raw in await store.redis.lrange(keyspace.wallet_keys(wallet_id).ledger, 0, -1):
            entry = parse_entry(raw, wallet_id)
            if entry is not None and any(p["account"].startswith(prefix) for p in entry["postings"]):
                yield {"wallet": wallet_id, **entry}


def for_publisher(entry: dict[str, Any], site_id: str, pseudonym: Pseudonym) -> dict[str, Any]:
    """``entry`` (changed in place) with the wallet replaced by its pseudonym on the site, and no balance."""
    wallet_id = entry.pop("wallet")
    mine, alias = keyspace.wallet_account(wallet_id), keyspace.wallet_account(pseudonym(site_id, wallet_id))
    entry["wallet"] = alias
    entry["postings"] = [{**p, "account": alias} if p["account"] == mine else p for p in entry["postings"]]
    entry.pop("balance", None)  # the reader's balance is not the publisher's business
    return entry


def csv_rows(entries: list[dict[str, Any]]) -> str:
    """One CSV row per posting, so a spreadsheet can sum any account."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        for p in entry["postings"]:
            writer.writerow({**entry, "account": p["account"], "amount": p["amount"]})
    return out.getvalue()


def json_lines(entries: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)


async def export(store: Store, site_id: str, fmt: str, pseudonym: Pseudonym) -> str:
    """The site's entries, by time, as JSON lines (``fmt`` 'jsonl') or CSV ('csv'), readers under pseudonyms."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {FORMATS}")
    entries = [for_publisher(e, site_id, pseudonym) async for e in site_entries(store, site_id)]
    entries.sort(key=lambda e: (e["at"], e["wallet"], e["seq"]))
    return csv_rows(entries) if fmt == "csv" else json_lines(entries)


@dataclass
class SiteStats:
    """What a site earned (revenue), gave away in vouchers (promotions, negative) and sold, per item too."""

    site: str
    currency: str
    revenue: int = 0  # minor units, net of refunds
    promotions: int = 0  # minor units
    unlocks: int = 0  # purchases (a purchase refunded later still counts here, and in refunds)
    refunds: int = 0  # purchases refunded: the reader's undos and the site's goodwill
    items: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: {"unlocks": 0, "refunds": 0, "revenue": 0})
    )

    def public(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "currency": self.currency,
            "revenue": self.revenue,
            "promotions": self.promotions,
            "unlocks": self.unlocks,
            "refunds": self.refunds,
            "items": dict(sorted(self.items.items())),
        }


async def stats(store: Store, site: Site) -> SiteStats:
    """The sums of the site's accounts over every wallet's ledger."""
    revenue, promotions = keyspace.site_revenue_account(site.id), keyspace.site_promotions_account(site.id)
    totals = SiteStats(site.id, site.currency)
    async for entry in site_entries(store, site.id):
        for p in entry["postings"]:
            if p["account"] == revenue:
                totals.revenue += p["amount"]
                if entry["kind"] in ("unlock", "purchase-refund"):
                    counted = "unlocks" if entry["kind"] == "unlock" else "refunds"
                    setattr(totals, counted, getattr(totals, counted) + 1)
                    totals.items[entry["item"]][counted] += 1
                    totals.items[entry["item"]]["revenue"] += p["amount"]
            elif p["account"] == promotions:
                totals.promotions += p["amount"]
    return totals
