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
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from coinslot import keyspace
from coinslot.catalog import Site
from coinslot.errors import InvalidQuery
from coinslot.ledger import parse_entry, wallet_ids
from coinslot.sitedays import day_at, site_day
from coinslot.store import Store
from coinslot.tokens import Pseudonym

# (site id, wallet id) → what stands for the wallet on that site (UnlockTokens.pseudonym)

FORMATS = ("jsonl", "csv")
MAX_DAYS = 366  # the longest span one purchases query may cover
SALES = {"unlock": "purchase", "purchase-refund": "refund"}  # ledger kind → what the publisher calls it
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


async def export(
    store: Store, site_id: str, fmt: str, pseudonym: Pseudonym, *, since_ms: int = 0, until_ms: int | None = None
) -> str:
    """The site's entries, by time, as JSON lines (``fmt`` 'jsonl') or CSV ('csv'), readers under pseudonyms;
    only those made from ``since_ms`` until before ``until_ms`` when given."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {FORMATS}")
    entries = [
        for_publisher(e, site_id, pseudonym)
        async for e in site_entries(store, site_id)
        if since_ms <= e["at"] and (until_ms is None or e["at"] < until_ms)
    ]
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


def days_asked(site: Site, first: str | None, last: str | None, *, now_ms: int) -> tuple[date, date]:
    """The ``from`` and ``to`` query dates (YYYY-MM-DD, the site's days, both included; default today)."""
    today = site_day(site.timezone, now_ms).day
    try:
        start = date.fromisoformat(first or today)
    except ValueError as exc:
        raise InvalidQuery(f"from {first!r} is not a date like 2026-03-01", field="from") from exc
    try:
        end = date.fromisoformat(last or first or today)
    except ValueError as exc:
        raise InvalidQuery(f"to {last!r} is not a date like 2026-03-31", field="to") from exc
    if end < start:
        raise InvalidQuery(f"to {end} is before from {start}", field="to")
    if (end - start).days >= MAX_DAYS:
        raise InvalidQuery(f"{(end - start).days + 1} days asked, at most {MAX_DAYS}", field="to")
    return start, end


async def sales(
    store: Store, site: Site, first: str | None, last: str | None, pseudonym: Pseudonym, *, now_ms: int
) -> dict[str, Any]:
    """The site's purchases and refunds from day ``first`` to day ``last`` (YYYY-MM-DD in the site's time
    zone, both included; see ``days_asked``), by time.

    Each with its purchase id, item, what it moved in the site's revenue (a refund is negative),
    the site day it fell on, and the reader under the site's pseudonym.
    """
    start, end = days_asked(site, first, last, now_ms=now_ms)
    since, until = day_at(site.timezone, start).starts_ms, day_at(site.timezone, end).ends_ms
    revenue = keyspace.site_revenue_account(site.id)
    found: list[tuple[int, str, int, dict[str, Any]]] = []  # by time, then each wallet's own order
    async for entry in site_entries(store, site.id):
        if entry.get("kind") not in SALES or not since <= entry["at"] < until:
            continue
        entry = for_publisher(entry, site.id, pseudonym)
        row = {
            "at": entry["at"],
            "day": site_day(site.timezone, entry["at"]).day,
            "kind": SALES[entry["kind"]],
            "purchase_id": entry["ref"],
            "item": entry.get("item"),
            "amount": sum(p["amount"] for p in entry["postings"] if p["account"] == revenue),
            "currency": entry["currency"],
            "wallet": entry["wallet"],
        }
        if "by" in entry:
            row["refunded_by"] = entry["by"]
        found.append((entry["at"], entry["wallet"], entry["seq"], row))
    found.sort(key=lambda f: f[:3])
    return {"site": site.id, "from": start.isoformat(), "to": end.isoformat(), "sales": [f[3] for f in found]}
