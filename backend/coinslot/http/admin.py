"""Publisher calls, authenticated by the site's secret key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from coinslot import catalog, refunds, statements, vouchers
from coinslot.errors import InvalidQuery
from coinslot.http.context import services
from coinslot.http.credentials import require_site
from coinslot.http.problems import read_json
from coinslot.http.schemas import ItemPut, VoucherCreate

NO_STORE = {"Cache-Control": "no-store"}
EXPORT_MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}  # by statements.FORMATS


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


async def refund_purchase(request: Request) -> Response:
    """The publisher's goodwill refund of a purchase on its site (not counted against the reader's undos)."""
    svc = services(request)
    site = await require_site(request)
    done = await refunds.publisher_refund(
        svc.store, svc.catalog, site.id, request.path_params["purchase_id"], now_ms=svc.clock.now_ms()
    )
    return JSONResponse(done.public(), headers=NO_STORE)


async def create_voucher(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, VoucherCreate, svc.settings.max_body_bytes)
    voucher = await vouchers.create_voucher(
        svc.store, site, amount=body.amount, uses=body.uses, code=body.code, now_ms=svc.clock.now_ms()
    )
    return JSONResponse(voucher.public(), status_code=201, headers=NO_STORE)


async def export_ledger(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    fmt = request.query_params.get("format", "jsonl")
    if fmt not in statements.FORMATS:
        raise InvalidQuery(f"format {fmt!r} must be 'jsonl' or 'csv'", field="format")
    body = await statements.export(svc.store, site.id, fmt, svc.unlock_tokens.pseudonym)
    return PlainTextResponse(body, media_type=EXPORT_MEDIA_TYPES[fmt], headers=NO_STORE)


async def stats(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    return JSONResponse((await statements.stats(svc.store, site)).public(), headers=NO_STORE)
