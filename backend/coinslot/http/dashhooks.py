"""The dashboard's webhooks page: a site's endpoints registered, pinged and removed, and its recent
deliveries, through the same ``coinslot.hooks`` functions as ``/v1/admin/webhooks``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coinslot import hookevents, hooks
from coinslot.http.context import services
from coinslot.http.dashsession import checked_form, current_session, page, page_context, see_other, shown_as_page

RECENT_EVENTS = 20


async def _page(request: Request, *, secret: str = "", status: int = 200) -> Response:
    svc = services(request)
    session = await current_session(request)
    site = await svc.catalog.site(session.site_id)
    endpoints = await hooks.list_endpoints(svc.store, site.id)
    events = await hookevents.event_log(
        svc.store, site.id, svc.unlock_tokens.pseudonym, svc.payments.livemode, limit=RECENT_EVENTS
    )
    context = page_context(request, session, site, endpoints=endpoints, events=events, secret=secret, nav="webhooks")
    return page(request, "webhooks", context, status=status)


@shown_as_page
async def webhooks_page(request: Request) -> Response:
    return await _page(request)


@shown_as_page
async def add_webhook(request: Request) -> Response:
    """Registered for every event; its signing secret is shown on this answer only, never again."""
    svc = services(request)
    session, form = await checked_form(request)
    _endpoint, secret = await hooks.add_endpoint(
        svc.store,
        session.site_id,
        form.get("url", "").strip(),
        None,
        allow_private=svc.settings.webhooks_allow_private,
        now_ms=svc.clock.now_ms(),
    )
    return await _page(request, secret=secret, status=201)


@shown_as_page
async def ping_webhook(request: Request) -> Response:
    svc = services(request)
    session, _form = await checked_form(request)
    await hookevents.ping(svc.store, session.site_id, request.path_params["endpoint"], now_ms=svc.clock.now_ms())
    return see_other("/dashboard/webhooks")


@shown_as_page
async def remove_webhook(request: Request) -> Response:
    svc = services(request)
    session, _form = await checked_form(request)
    await hooks.remove_endpoint(svc.store, session.site_id, request.path_params["endpoint"])
    return see_other("/dashboard/webhooks")
