"""Publisher calls for webhooks (``coinslot.hooks``), authenticated by the site's secret key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coinslot import hookevents, hooks
from coinslot.errors import InvalidQuery
from coinslot.http.context import services
from coinslot.http.credentials import require_site
from coinslot.http.problems import read_json

NO_STORE = {"Cache-Control": "no-store"}


class WebhookCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"url": "https://news.example.com/coinslot-events", "events": ["unlock.created"]}]
        },
    )
    url: str = Field(min_length=1, max_length=hooks.MAX_URL_CHARS, description="https URL (http only on loopback)")
    events: list[str] | None = Field(
        default=None, max_length=len(hooks.EVENT_TYPES), description="event types; default: every one but test.ping"
    )


async def add_endpoint(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, WebhookCreate, svc.settings.max_body_bytes)
    endpoint, secret = await hooks.add_endpoint(
        svc.store,
        site.id,
        body.url,
        body.events,
        allow_private=svc.settings.webhooks_allow_private,
        now_ms=svc.clock.now_ms(),
    )
    return JSONResponse({**endpoint.public(), "secret": secret}, status_code=201, headers=NO_STORE)


async def list_endpoints(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    found = await hooks.list_endpoints(svc.store, site.id)
    return JSONResponse({"endpoints": [e.public() for e in found]}, headers=NO_STORE)


async def remove_endpoint(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    await hooks.remove_endpoint(svc.store, site.id, request.path_params["endpoint_id"])
    return JSONResponse({"id": request.path_params["endpoint_id"], "deleted": True}, headers=NO_STORE)


async def rotate_secret(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    endpoint, secret, until = await hooks.rotate_secret(
        svc.store, site.id, request.path_params["endpoint_id"], now_ms=svc.clock.now_ms()
    )
    body = {**endpoint.public(), "secret": secret, "previous_secret_signs_until": until // 1000}
    return JSONResponse(body, headers=NO_STORE)


async def ping(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    event_id = await hookevents.ping(svc.store, site.id, request.path_params["endpoint_id"], now_ms=svc.clock.now_ms())
    return JSONResponse({"event_id": event_id}, status_code=202, headers=NO_STORE)


async def event_log(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 200:
        raise InvalidQuery(f"limit {raw!r} must be a whole number from 1 to 200", field="limit")
    events = await hookevents.event_log(
        svc.store, site.id, svc.unlock_tokens.pseudonym, svc.payments.livemode, limit=int(raw)
    )
    return JSONResponse({"events": events}, headers=NO_STORE)


async def resend(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    event_id = request.path_params["event_id"]
    sent_to = await hookevents.resend(svc.store, site.id, event_id, now_ms=svc.clock.now_ms())
    return JSONResponse({"event_id": event_id, "endpoints": sent_to}, status_code=202, headers=NO_STORE)
