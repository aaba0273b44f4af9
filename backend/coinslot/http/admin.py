"""Publisher calls, authenticated by the site's secret key."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from coinslot import catalog, listings, refunds, statements, vouchers
from coinslot.catalog import KEY_OVERLAP_MS
from coinslot.errors import InvalidQuery
from coinslot.http import counting
from coinslot.http.adminschemas import SiteUpdate
from coinslot.http.context import services
from coinslot.http.credentials import require_site
from coinslot.http.problems import read_json
from coinslot.http.schemas import ItemPut, VoucherCreate

NO_STORE = {"Cache-Control": "no-store"}
EXPORT_MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}  # by statements.FORMATS


async def get_site(request: Request) -> Response:
    site = await require_site(request)
    return JSONResponse(site.public(), headers=NO_STORE)


async def update_site(request: Request) -> Response:
    """Change the named settings; every worker's cached site (and the card pages made from it) drops."""
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, SiteUpdate, svc.settings.max_body_bytes)
    changed = await catalog.update_site(svc.store, site, body.model_dump(exclude_none=True))
    svc.catalog.invalidate(site.id)
    return JSONResponse(changed.public(), headers=NO_STORE)


async def rotate_key(request: Request) -> Response:
    """A new secret key; the ones before it (this request's included) keep working for 24 hours."""
    svc = services(request)
    site = await require_site(request)
    now_ms = svc.clock.now_ms()
    secret = await catalog.rotate_secret(svc.store, site.id, now_ms=now_ms)
    body = {"site_id": site.id, "secret_key": secret, "previous_keys_valid_until": now_ms + KEY_OVERLAP_MS}
    return JSONResponse(body, status_code=201, headers=NO_STORE)


_item = listings.admin_view


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
    return JSONResponse(_item(item, site.currency), headers=NO_STORE)


async def list_items(request: Request) -> Response:
    """A page of the site's items in id order (``?limit=&cursor=``), archived ones included and marked."""
    svc = services(request)
    site = await require_site(request)
    q = request.query_params
    page = await listings.items_page(
        svc.catalog, site.id, limit=listings.page_size(q.get("limit")), cursor=q.get("cursor")
    )
    body = {"items": [_item(i, site.currency) for i in page.items], "next_cursor": page.next_cursor}
    return JSONResponse(body, headers=NO_STORE)


async def archive_item(request: Request) -> Response:
    return await _set_archived(request, archived=True)


async def restore_item(request: Request) -> Response:
    return await _set_archived(request, archived=False)


async def _set_archived(request: Request, *, archived: bool) -> Response:
    svc = services(request)
    site = await require_site(request)
    item = await listings.set_archived(
        svc.store, svc.catalog, site.id, request.path_params["item"], archived, now_ms=svc.clock.now_ms()
    )
    return JSONResponse(_item(item, site.currency), headers=NO_STORE)


async def list_vouchers(request: Request) -> Response:
    """A page of the site's vouchers in code order, each with its uses left and whether it is disabled."""
    svc = services(request)
    site = await require_site(request)
    q = request.query_params
    found, cursor = await vouchers.list_vouchers(
        svc.store, site.id, limit=listings.page_size(q.get("limit")), cursor=q.get("cursor")
    )
    return JSONResponse({"vouchers": [v.public() for v in found], "next_cursor": cursor}, headers=NO_STORE)


async def disable_voucher(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    state = await vouchers.disable_voucher(svc.store, site.id, request.path_params["code"])
    return JSONResponse(state.public(), headers=NO_STORE)


async def purchases(request: Request) -> Response:
    """Purchases and refunds by the site's days (``?from=YYYY-MM-DD&to=YYYY-MM-DD``), readers under pseudonyms."""
    svc = services(request)
    site = await require_site(request)
    q = request.query_params
    body = await statements.sales(
        svc.store, site, q.get("from"), q.get("to"), svc.unlock_tokens.pseudonym, now_ms=svc.clock.now_ms()
    )
    return JSONResponse(body, headers=NO_STORE)


async def refund_purchase(request: Request) -> Response:
    """The publisher's goodwill refund of a purchase on its site (not counted against the reader's undos)."""
    svc = services(request)
    site = await require_site(request)
    now_ms = svc.clock.now_ms()
    done = await refunds.publisher_refund(
        svc.store, svc.catalog, site.id, request.path_params["purchase_id"], now_ms=now_ms
    )
    counting.refunded(svc, done, now_ms)
    return JSONResponse(done.for_publisher(), headers=NO_STORE)


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
