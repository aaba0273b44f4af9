"""Price tests through the admin API (coinslot.pricetests): start one, read it, keep a price.

The dashboard's item page offers the same three, through the same domain functions.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coinslot import pricetests
from coinslot.catalog import MAX_PRICE
from coinslot.http.adminschemas import with_example
from coinslot.http.context import services
from coinslot.http.credentials import require_site
from coinslot.http.openapi import Doc
from coinslot.http.problems import read_json

NO_STORE = {"Cache-Control": "no-store"}

RESULT_EXAMPLE = {
    "item": "article-42",
    "running": True,
    "since": 1767225600000,
    "price": 19,
    "test_price": 29,
    "arms": [
        {
            "variant": "a",
            "price": 19,
            "views": 1200,
            "presses": 80,
            "sales": 60,
            "revenue": 1140,
            "refunds": 1,
            "conversion": 0.05,
            "conversion_95": [0.03906, 0.0639],
            "revenue_per_1000_views": 950.0,
            "revenue_per_1000_views_95": [742.14, 1214.1],
        },
        {
            "variant": "b",
            "price": 29,
            "views": 1180,
            "presses": 61,
            "sales": 47,
            "revenue": 1363,
            "refunds": 0,
            "conversion": 0.03983,
            "conversion_95": [0.03008, 0.05256],
            "revenue_per_1000_views": 1155.08,
            "revenue_per_1000_views_95": [872.32, 1524.24],
        },
    ],
    "difference_95": [-113.55, 523.71],
    "enough_views": True,
    "ahead": None,
}


class PriceTestStart(BaseModel):
    model_config = with_example({"test_price": 29}, strict=True)
    test_price: int = Field(ge=0, le=MAX_PRICE, description="the second price, shown to half of the readers")


class PriceKeep(BaseModel):
    model_config = with_example({"price": 29}, strict=True)
    price: int = Field(ge=0, le=MAX_PRICE, description="the item's price or its test price: everybody's from now")


class PriceTestOut(BaseModel):
    model_config = with_example(RESULT_EXAMPLE)
    item: str
    running: bool
    price: int
    since: int | None = Field(default=None, description="when the test started (ms since 1970)")
    test_price: int | None = None
    arms: list[dict[str, Any]] | None = Field(
        default=None,
        description="per price (variant a: the item's, b: the test's): cards shown, presses, sales, revenue net "
        "of refunds (minor units), refunds, conversion and revenue per 1,000 views with their 95 % intervals",
    )
    difference_95: list[float] | None = Field(
        default=None, description="revenue per 1,000 views of b minus a: 95 % interval"
    )
    enough_views: bool | None = Field(default=None, description="each price was shown to 100 readers or more")
    ahead: str | None = Field(default=None, description="the variant ahead with 95 % confidence, if one is")


async def start(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, PriceTestStart, svc.settings.max_body_bytes)
    item = await pricetests.start(
        svc.store, site, request.path_params["item"], body.test_price, now_ms=svc.clock.now_ms()
    )
    svc.catalog.invalidate(site.id)
    return JSONResponse(pricetests.public(item, await pricetests.results(svc.store, item)), 201, headers=NO_STORE)


async def results(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    item = await svc.catalog.item(site.id, request.path_params["item"])
    return JSONResponse(pricetests.public(item, await pricetests.results(svc.store, item)), headers=NO_STORE)


async def keep(request: Request) -> Response:
    svc = services(request)
    site = await require_site(request)
    body, _ = await read_json(request, PriceKeep, svc.settings.max_body_bytes)
    item = await pricetests.keep(svc.store, site, request.path_params["item"], body.price, now_ms=svc.clock.now_ms())
    svc.catalog.invalidate(site.id)
    return JSONResponse(pricetests.public(item, None), headers=NO_STORE)


def _doc(summary: str, responses: dict[int, str], **more: Any) -> Doc:
    return Doc(summary, auth="secret", responses={**responses, 401: ""}, tags=("admin",), **more)


PRICE_TESTS: list[tuple[str, str, Any, Doc]] = [
    (
        "POST",
        "/v1/admin/items/{item}/price-test",
        start,
        _doc(
            "Start a price test: from now half of the site's readers (each keeps their half) are shown and "
            "charged test_price for this item",
            {
                201: "the test, with no counts yet",
                404: "",
                409: "a test is running (price-test-running)",
                413: "",
                422: "a pass, an archived item, or test_price equal to the price",
            },
            body=PriceTestStart,
            response=PriceTestOut,
        ),
    ),
    (
        "GET",
        "/v1/admin/items/{item}/price-test",
        results,
        _doc(
            "The running test per price: views, presses, sales, revenue, conversion and revenue per 1,000 views "
            "with 95 % intervals, and which price is ahead with confidence (running: false without a test)",
            {200: "the test", 404: ""},
            response=PriceTestOut,
        ),
    ),
    (
        "POST",
        "/v1/admin/items/{item}/price-test/keep",
        keep,
        _doc(
            "End the test: price (one of the two) becomes everybody's price",
            {200: "the item's price now", 404: "", 409: "no test is running (no-price-test)", 413: "", 422: ""},
            body=PriceKeep,
            response=PriceTestOut,
        ),
    ),
]
