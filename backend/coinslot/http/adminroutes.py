"""The admin API's rows of the route table (``routes.API``): a site's own calls, with its secret key."""

from __future__ import annotations

from typing import Any

from coinslot.http import admin
from coinslot.http.adminschemas import (
    ItemOut,
    ItemPage,
    KeyRotated,
    RefundDone,
    Sales,
    SiteOut,
    SiteUpdate,
    Stats,
    VoucherCreated,
    VoucherOut,
    VoucherPage,
)
from coinslot.http.openapi import Doc
from coinslot.http.schemas import ItemPut, VoucherCreate


def _doc(summary: str, responses: dict[int, str], **more: Any) -> Doc:
    return Doc(summary, auth="secret", responses={**responses, 401: ""}, tags=("admin",), **more)


ADMIN: list[tuple[str, str, Any, Doc]] = [
    ("GET", "/v1/admin/site", admin.get_site, _doc("The site of this secret key", {200: "the site"}, response=SiteOut)),
    (
        "PATCH",
        "/v1/admin/site",
        admin.update_site,
        _doc(
            "Change the site's origins, time zone, tab limit, daily cap or refund window (only those named; "
            "checked as at creation). Cards, offers and unlocks use them at once.",
            {200: "the site as it is now", 400: "a setting out of bounds (invalid-setting)", 413: "", 422: ""},
            body=SiteUpdate,
            response=SiteOut,
        ),
    ),
    (
        "POST",
        "/v1/admin/site/rotate-key",
        admin.rotate_key,
        _doc(
            "Issue a new secret key, shown once; every earlier key keeps working for 24 hours, then stops",
            {201: "the new key"},
            response=KeyRotated,
        ),
    ),
    (
        "GET",
        "/v1/admin/items",
        admin.list_items,
        _doc(
            "The site's items in id order, a page at a time (limit 1-200, default 50; cursor from next_cursor)",
            {200: "a page of items", 422: ""},
            query=("limit", "cursor"),
            response=ItemPage,
        ),
    ),
    (
        "PUT",
        "/v1/admin/items/{item}",
        admin.put_item,
        _doc(
            "Create or replace an item (an archived item stays archived)",
            {200: "item", 413: "", 422: ""},
            body=ItemPut,
            response=ItemOut,
        ),
    ),
    (
        "POST",
        "/v1/admin/items/{item}/archive",
        admin.archive_item,
        _doc(
            "Take an item off sale: unlocks answer 410 item-archived, while readers who bought it keep it",
            {200: "the item", 404: ""},
            response=ItemOut,
        ),
    ),
    (
        "POST",
        "/v1/admin/items/{item}/restore",
        admin.restore_item,
        _doc("Put an archived item back on sale", {200: "the item", 404: ""}, response=ItemOut),
    ),
    (
        "POST",
        "/v1/admin/purchases/{purchase_id}/refund",
        admin.refund_purchase,
        _doc(
            "Refund a purchase made on the site, as goodwill (any time; not counted against the reader's undos)",
            {200: "refunded", 404: "not a purchase on this site", 409: "already refunded"},
            response=RefundDone,
        ),
    ),
    (
        "GET",
        "/v1/admin/purchases",
        admin.purchases,
        _doc(
            "Purchases and refunds from one day to another (YYYY-MM-DD, the site's time zone, both included; "
            "default today; at most 366 days), readers under the site's pseudonyms",
            {200: "sales by time", 422: ""},
            query=("from", "to"),
            response=Sales,
        ),
    ),
    (
        "POST",
        "/v1/admin/vouchers",
        admin.create_voucher,
        _doc(
            "Issue a voucher paid from the site's promotions",
            {201: "voucher with its code", 409: "", 413: "", 422: ""},
            body=VoucherCreate,
            response=VoucherCreated,
        ),
    ),
    (
        "GET",
        "/v1/admin/vouchers",
        admin.list_vouchers,
        _doc(
            "The site's vouchers in code order with the uses left, a page at a time (limit, cursor)",
            {200: "a page of vouchers", 422: ""},
            query=("limit", "cursor"),
            response=VoucherPage,
        ),
    ),
    (
        "POST",
        "/v1/admin/vouchers/{code}/disable",
        admin.disable_voucher,
        _doc(
            "Disable a voucher: further redeems answer 409 voucher-disabled; credit already given stays",
            {200: "the voucher", 404: ""},
            response=VoucherOut,
        ),
    ),
    (
        "GET",
        "/v1/admin/ledger",
        admin.export_ledger,
        _doc(
            "Ledger entries that touch the site, as JSON lines or CSV",
            {200: "application/x-ndjson or text/csv", 422: ""},
            query=("format",),
        ),
    ),
    (
        "GET",
        "/v1/admin/stats",
        admin.stats,
        _doc("Revenue, promotions and unlocks per item", {200: "the sums"}, response=Stats),
    ),
]
