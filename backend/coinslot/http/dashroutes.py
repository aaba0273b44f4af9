"""The dashboard's rows of the route table (``routes.API``): HTML pages for a signed-in publisher."""

from __future__ import annotations

from typing import Any

from coinslot.http import dashboard, dashhooks, dashprices
from coinslot.http.openapi import Doc


def _page(summary: str, *statuses: int) -> Doc:
    responses = {status: "" for status in statuses}
    return Doc(summary, responses=responses or {200: ""}, tags=("dashboard",), page=True)


# A form's answer is 303 to the next page; any refusal (no session, wrong origin or CSRF token,
# a value out of bounds) is a page with the error's status.
_FORM = (303, 400, 401, 403, 404, 413, 422, 429)

DASHBOARD: list[tuple[str, str, Any, Doc]] = [
    ("GET", "/dashboard", dashboard.overview, _page("Overview: revenue, unlocks, readers, the funnel", 200, 303)),
    (
        "GET",
        "/dashboard/signin",
        dashboard.signin_page,
        Doc(
            "Sign-in form (with ?token=, the printed link's button)",
            query=("token", "lang"),
            tags=("dashboard",),
            page=True,
        ),
    ),
    (
        "POST",
        "/dashboard/signin",
        dashboard.signin,
        _page("Sign in with a one-time link's token or the secret key", *_FORM),
    ),
    ("POST", "/dashboard/signout", dashboard.signout, _page("Sign out: the session ends on the server", *_FORM)),
    (
        "GET",
        "/dashboard/items",
        dashboard.items,
        Doc(
            "Items with views, presses, unlocks, conversion, revenue per 1,000 views, refunds",
            query=("sort", "days", "page", "limit", "lang"),
            responses={200: "", 303: "", 422: ""},
            tags=("dashboard",),
            page=True,
        ),
    ),
    ("GET", "/dashboard/items/{item}", dashboard.item_page, _page("One item's edit form", 200, 303, 404)),
    ("POST", "/dashboard/items/{item}", dashboard.save_item, _page("Save an item (as PUT /v1/admin/items)", *_FORM)),
    (
        "POST",
        "/dashboard/items/{item}/archive",
        dashboard.archive_item,
        _page("Take an item off sale (archived=1) or put it back (archived=0)", *_FORM),
    ),
    (
        "POST",
        "/dashboard/items/{item}/price-test",
        dashprices.start_test,
        _page("Start a price test of a second price (as POST /v1/admin/items/{item}/price-test)", *_FORM),
    ),
    (
        "POST",
        "/dashboard/items/{item}/price-test/keep",
        dashprices.keep_price,
        _page("End the price test with one of its two prices", *_FORM),
    ),
    ("GET", "/dashboard/vouchers", dashboard.vouchers_page, _page("Vouchers with their uses left", 200, 303, 422)),
    ("POST", "/dashboard/vouchers", dashboard.create_voucher, _page("Create a voucher", *_FORM)),
    ("GET", "/dashboard/webhooks", dashhooks.webhooks_page, _page("Webhook endpoints and recent deliveries", 200, 303)),
    (
        "POST",
        "/dashboard/webhooks",
        dashhooks.add_webhook,
        _page("Add an endpoint (secret shown once)", 201, *_FORM),
    ),
    ("POST", "/dashboard/webhooks/{endpoint}/ping", dashhooks.ping_webhook, _page("Send it a test.ping", *_FORM)),
    ("POST", "/dashboard/webhooks/{endpoint}/remove", dashhooks.remove_webhook, _page("Remove an endpoint", *_FORM)),
    ("GET", "/dashboard/ledger", dashboard.ledger_page, _page("The ledger export's form", 200, 303)),
    (
        "GET",
        "/dashboard/ledger/export",
        dashboard.export_ledger,
        Doc(
            "The site's ledger lines between two of its days, as CSV or JSON lines (a download)",
            query=("format", "from", "to"),
            responses={200: "CSV or JSON lines", 303: "", 422: ""},
            described={
                200: {
                    "description": "CSV or JSON lines, as a download",
                    "content": {"text/csv": {}, "application/x-ndjson": {}},
                }
            },
            tags=("dashboard",),
            page=True,
        ),
    ),
    (
        "GET",
        "/dashboard/dashboard.css",
        dashboard.stylesheet,
        Doc(
            "The dashboard's stylesheet",
            tags=("dashboard",),
            described={200: {"description": "CSS", "content": {"text/css": {}}}},
        ),
    ),
]
