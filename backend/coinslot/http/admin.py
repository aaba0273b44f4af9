"""Publisher calls, authenticated by the site's secret key."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from coinslot import catalog, keyspace, ledger, vouchers
from coinslot.errors import InvalidQuery
from coinslot.http.credentials import require_site
from coinslot.http.problems import read_json
from coinslot.http.schemas import ItemPut, VoucherCreate
from coinslot.services import Services, services

NO_STORE = {"Cache-Control": "no-store"}


async def get_site(request: Request) -> Response:
    site = await require_site(request)
    return JSONResponse(site.public(), headers=NO_STORE)


async def put_item(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, ItemPut, svc.settings.max_content_bytes + svc.settings.max_body_bytes)
    item = await catalog.put_item(
        svc.store,
        site,
        request.path_params["item"],
        title=body.title,
        price=body.price,
        content_html=body.content_html,
        pass_hours=body.pass_hours,
        max_content_bytes=svc.settings.max_content_bytes,
        now_ms=svc.clock.now_ms(),
    )
    svc.catalog.invalidate(site.id)
    return JSONResponse({**item.public(site.currency), "has_content": item.has_content}, headers=NO_STORE)


async def list_items(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    names = await catalog.list_items(svc.store, site.id)
    found = await svc.catalog.items(site.id, names)
    return JSONResponse({"items": [i.public(site.currency) for i in found.values() if i is not None]}, headers=NO_STORE)


async def create_voucher(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, VoucherCreate, svc.settings.max_body_bytes)
    voucher = await vouchers.create_voucher(
        svc.store, site, amount=body.amount, uses=body.uses, code=body.code, now_ms=svc.clock.now_ms()
    )
    return JSONResponse(voucher.public(), status_code=201, headers=NO_STORE)


def _for_publisher(svc: Services, site_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry with the wallet replaced by its per-site pseudonym."""
    wallet_id = entry.pop("wallet")
    alias = keyspace.wallet_account(svc.unlock_tokens.pseudonym(site_id, wallet_id))
    entry["wallet"] = alias
    entry["postings"] = [
        {**p, "account": alias} if p["account"] == keyspace.wallet_account(wallet_id) else p for p in entry["postings"]
    ]
    entry.pop("balance", None)  # the reader's balance is not the publisher's business
    return entry


async def export_ledger(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in ("jsonl", "csv"):
        raise InvalidQuery(f"format {fmt!r} must be 'jsonl' or 'csv'", field="format")
    entries = [_for_publisher(svc, site.id, e) async for e in ledger.site_entries(svc.store, site.id)]
    entries.sort(key=lambda e: (e["at"], e["wallet"], e["seq"]))
    if fmt == "csv":
        return PlainTextResponse(ledger.csv_rows(entries), media_type="text/csv", headers=NO_STORE)
    lines = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in entries)
    return PlainTextResponse(lines, media_type="application/x-ndjson", headers=NO_STORE)


async def stats(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    revenue = promotions = unlocks = 0
    per_item: dict[str, dict[str, int]] = defaultdict(lambda: {"unlocks": 0, "revenue": 0})
    async for entry in ledger.site_entries(svc.store, site.id):
        for p in entry["postings"]:
            if p["account"] == keyspace.site_revenue_account(site.id):
                revenue += p["amount"]
                if entry["kind"] == "unlock":
                    unlocks += 1
                    per_item[entry["item"]]["unlocks"] += 1
                    per_item[entry["item"]]["revenue"] += p["amount"]
            elif p["account"] == keyspace.site_promotions_account(site.id):
                promotions += p["amount"]
    return JSONResponse(
        {
            "site": site.id,
            "currency": site.currency,
            "revenue": revenue,
            "promotions": promotions,
            "unlocks": unlocks,
            "items": dict(sorted(per_item.items())),
        },
        headers=NO_STORE,
    )
