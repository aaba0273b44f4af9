"""The publisher's dashboard: sign-in and out, overview, items, vouchers, ledger (HTML pages).

Every page is for a signed-in session only (see dashsession) and answers errors as pages.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import resources

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from coinslot import catalog, dashviews, listings, statements, vouchers
from coinslot.errors import InvalidQuery
from coinslot.http import dashprices
from coinslot.http.admin import EXPORT_MEDIA_TYPES
from coinslot.http.context import services
from coinslot.http.credentials import client_address
from coinslot.http.dashsession import (
    PAGE_HEADERS,
    check_origin,
    checked_form,
    clear_session_cookie,
    current_session,
    language,
    page,
    page_context,
    read_form,
    see_other,
    set_session_cookie,
    shown_as_page,
    whole_number,
)
from coinslot.ratelimit import PerAddress
from coinslot.sitedays import day_at

STYLESHEET = resources.files("coinslot").joinpath("templates/dashboard/dashboard.css").read_bytes()


async def stylesheet(request: Request) -> Response:
    return Response(STYLESHEET, media_type="text/css", headers={"Cache-Control": "public, max-age=300"})


@shown_as_page
async def signin_page(request: Request) -> Response:
    """The sign-in form; with ``?token=`` (the printed link) a button that uses the link. Nothing is
    used on GET: a mail scanner or a chat preview that fetches the link cannot spend it."""
    return page(request, "signin", {"token": request.query_params.get("token", "")})


@shown_as_page
async def signin(request: Request) -> Response:
    svc = services(request)
    check_origin(request)  # no session yet, so no CSRF token: Origin alone keeps other sites out
    form = await read_form(request)
    now_ms = svc.clock.now_ms()
    if form.get("token"):
        session = await svc.dashboard.use_link(form["token"], now_ms=now_ms)
    else:
        tries = PerAddress(await client_address(request, now_ms), svc.settings.failed_signins_per_ip_per_hour)
        session = await svc.dashboard.use_secret_key(form.get("key", ""), now_ms=now_ms, tries=tries)
    response = see_other("/dashboard")
    set_session_cookie(request, response, session)
    return response


@shown_as_page
async def signout(request: Request) -> Response:
    session, _ = await checked_form(request)
    await services(request).dashboard.close(session)
    response = see_other("/dashboard/signin")
    clear_session_cookie(request, response)
    return response


@shown_as_page
async def overview(request: Request) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    figures = await dashviews.overview(svc.store, site, now_ms=svc.clock.now_ms())
    return page(request, "overview", page_context(request, session, site, figures=figures, nav="overview"))


@shown_as_page
async def items(request: Request) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    q = request.query_params
    sort, descending, days, number = dashviews.check_table_query(q.get("sort"), q.get("days"), q.get("page"))
    size = listings.page_size(q.get("limit"))
    rows, more = await dashviews.item_table(
        svc.store,
        svc.catalog,
        site,
        sort=sort,
        descending=descending,
        days=days,
        page=number,
        size=size,
        now_ms=svc.clock.now_ms(),
    )
    table = {"rows": rows, "sort": sort, "descending": descending, "days": days, "page": number, "more": more}
    return page(request, "items", page_context(request, session, site, table=table, nav="items"))


@shown_as_page
async def item_page(request: Request) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    item = await svc.catalog.item(site.id, request.path_params["item"])
    content = await catalog.item_content(svc.store, site.id, item.id) if item.has_content else ""
    q = request.query_params
    test = await dashprices.section(svc.store, site, item, language(request))
    context = page_context(request, session, site, item=item, content=content or "", nav="items", **test)
    return page(request, "item", {**context, "saved": q.get("saved") == "1", "done": q.get("test", "")})


@shown_as_page
async def save_item(request: Request) -> Response:
    """The same ``catalog.put_item`` as ``PUT /v1/admin/items/{item}``: the same checks and sanitizing."""
    svc = services(request)
    session, form = await checked_form(request)
    site = await svc.catalog.site(session.site_id)
    item_id = request.path_params["item"]
    await catalog.put_item(
        svc.store,
        site,
        item_id,
        title=form.get("title", ""),
        price=whole_number(form.get("price", ""), "price"),
        content_html=form.get("content") or None,
        pass_hours=whole_number(form["pass_hours"], "pass_hours") if form.get("pass_hours") else None,
        max_content_bytes=svc.settings.max_content_bytes,
        now_ms=svc.clock.now_ms(),
    )
    svc.catalog.invalidate(site.id)
    return see_other(f"/dashboard/items/{item_id}?saved=1")


@shown_as_page
async def archive_item(request: Request) -> Response:
    svc = services(request)
    session, form = await checked_form(request)
    item_id = request.path_params["item"]
    archived = form.get("archived") == "1"
    await listings.set_archived(svc.store, svc.catalog, session.site_id, item_id, archived, now_ms=svc.clock.now_ms())
    return see_other(f"/dashboard/items/{item_id}")


@shown_as_page
async def vouchers_page(request: Request) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    q = request.query_params
    found, cursor = await vouchers.list_vouchers(
        svc.store, site.id, limit=listings.page_size(q.get("limit")), cursor=q.get("cursor") or None
    )
    created = q.get("created", "")
    return page(
        request,
        "vouchers",
        page_context(request, session, site, vouchers=found, cursor=cursor, created=created, nav="vouchers"),
    )


@shown_as_page
async def create_voucher(request: Request) -> Response:
    """The same ``vouchers.create_voucher`` as ``POST /v1/admin/vouchers``."""
    svc = services(request)
    session, form = await checked_form(request)
    site = await svc.catalog.site(session.site_id)
    voucher = await vouchers.create_voucher(
        svc.store,
        site,
        amount=whole_number(form.get("amount", ""), "amount"),
        uses=whole_number(form.get("uses") or "1", "uses"),
        code=form.get("code") or None,
        now_ms=svc.clock.now_ms(),
    )
    return see_other(f"/dashboard/vouchers?created={voucher.code}")


@shown_as_page
async def ledger_page(request: Request) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    _, end = statements.days_asked(site, None, None, now_ms=svc.clock.now_ms())
    start = end - timedelta(days=29)  # the form starts with the last 30 days
    return page(
        request,
        "ledger",
        page_context(request, session, site, first=start.isoformat(), last=end.isoformat(), nav="ledger"),
    )


@shown_as_page
async def export_ledger(request: Request) -> Response:
    """The ledger export (as ``GET /v1/admin/ledger``) of the site's days ``from`` to ``to``, as a download."""
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    q = request.query_params
    fmt = q.get("format", "csv")
    if fmt not in statements.FORMATS:
        raise InvalidQuery(f"format {fmt!r} must be 'jsonl' or 'csv'", field="format")
    start, end = statements.days_asked(site, q.get("from"), q.get("to"), now_ms=svc.clock.now_ms())
    body = await statements.export(
        svc.store,
        site.id,
        fmt,
        svc.unlock_tokens.pseudonym,
        since_ms=day_at(site.timezone, start).starts_ms,
        until_ms=day_at(site.timezone, end).ends_ms,
    )
    name = f"coinslot-{site.id}-{start}-{end}.{fmt}"
    headers = {**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
    return PlainTextResponse(body, media_type=EXPORT_MEDIA_TYPES[fmt], headers=headers)
