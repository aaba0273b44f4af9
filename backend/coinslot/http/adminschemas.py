"""The admin API's bodies and answers, with the examples /openapi.json shows for each.

Requests refuse unknown fields and loose types (422 naming the field); answers are described
so that clients (and the fuzzer in tests/test_fuzz.py) can check what they get.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from coinslot.sitesettings import MAX_AMOUNT, MAX_ORIGINS, MAX_REFUND_WINDOW_S


def with_example(example: dict[str, Any], *, strict: bool = False) -> ConfigDict:
    if strict:
        return ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [example]})
    return ConfigDict(json_schema_extra={"examples": [example]})


SITE_EXAMPLE = {
    "site_id": "site_daily_planet",
    "name": "Daily Planet",
    "currency": "EUR",
    "origins": ["https://www.dailyplanet.example"],
    "timezone": "Europe/Berlin",
    "tab_limit": 100,
    "daily_cap": 300,
    "refund_window": 600,
    "pass_item": "day-pass",
}
ITEM_EXAMPLE = {
    "item": "article-42",
    "title": "How the bridge was built",
    "price": 19,
    "currency": "EUR",
    "kind": "item",
    "archived": False,
    "has_content": True,
}
VOUCHER_EXAMPLE = {
    "code": "SPRING-2026",
    "site": "site_daily_planet",
    "amount": 500,
    "currency": "EUR",
    "uses": 100,
    "uses_left": 63,
    "disabled": False,
    "created_at": 1772323200000,
}
SALE_EXAMPLE = {
    "at": 1772380800000,
    "day": "2026-03-01",
    "kind": "purchase",
    "purchase_id": "pur_3kq9z2m8x1",
    "item": "article-42",
    "amount": 19,
    "currency": "EUR",
    "wallet": "wallet:Qm9vZ2xlU2l0ZQ",
}


class SiteUpdate(BaseModel):
    """Only the settings named change; currency and name are fixed."""

    model_config = with_example({"origins": ["https://www.dailyplanet.example"], "daily_cap": 300}, strict=True)
    origins: list[str] | None = Field(default=None, min_length=1, max_length=MAX_ORIGINS)
    timezone: str | None = Field(default=None, min_length=1, max_length=64, description="IANA, e.g. Europe/Berlin")
    tab_limit: int | None = Field(default=None, ge=0, le=MAX_AMOUNT, description="minor units a wallet may owe")
    daily_cap: int | None = Field(default=None, ge=0, le=MAX_AMOUNT, description="minor units per site day, 0 = none")
    refund_window: int | None = Field(default=None, ge=0, le=MAX_REFUND_WINDOW_S, description="seconds to undo")


class SiteOut(BaseModel):
    model_config = with_example(SITE_EXAMPLE)
    site_id: str
    name: str
    currency: str
    origins: list[str]
    timezone: str
    tab_limit: int
    daily_cap: int
    refund_window: int
    pass_item: str | None


class KeyRotated(BaseModel):
    model_config = with_example(
        {"site_id": "site_daily_planet", "secret_key": "sk_new…", "previous_keys_valid_until": 1772467200000}
    )
    site_id: str
    secret_key: str = Field(description="shown once; stored only as a digest")
    previous_keys_valid_until: int = Field(description="ms; the keys issued before this one work until then")


class ItemOut(BaseModel):
    model_config = with_example(ITEM_EXAMPLE)
    item: str
    title: str
    price: int
    currency: str
    kind: str = Field(description="item or pass")
    pass_hours: int | None = None
    archived: bool
    has_content: bool
    test_price: int | None = Field(default=None, description="the second price under test (/price-test), if any")


class ItemPage(BaseModel):
    model_config = with_example({"items": [ITEM_EXAMPLE], "next_cursor": "article-42"})
    items: list[ItemOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class VoucherOut(BaseModel):
    model_config = with_example(VOUCHER_EXAMPLE)
    code: str
    site: str
    amount: int
    currency: str
    uses: int
    uses_left: int
    disabled: bool
    created_at: int


class VoucherPage(BaseModel):
    model_config = with_example({"vouchers": [VOUCHER_EXAMPLE], "next_cursor": None})
    vouchers: list[VoucherOut]
    next_cursor: str | None


class Sale(BaseModel):
    model_config = with_example(SALE_EXAMPLE)
    at: int
    day: str = Field(description="the site's day (its time zone)")
    kind: str = Field(description="purchase or refund")
    purchase_id: str
    item: str | None
    amount: int = Field(description="minor units into the site's revenue; negative for a refund")
    currency: str
    wallet: str = Field(description="the reader, under the site's own pseudonym")
    refunded_by: str | None = Field(default=None, description="reader or publisher, for a refund")


class Sales(BaseModel):
    model_config = with_example(
        {"site": "site_daily_planet", "from": "2026-03-01", "to": "2026-03-31", "sales": [SALE_EXAMPLE]}
    )
    site: str
    from_: str = Field(alias="from")
    to: str
    sales: list[Sale]


class VoucherCreated(BaseModel):
    model_config = with_example(
        {"code": "SPRING-2026", "site": "site_daily_planet", "amount": 500, "currency": "EUR", "uses": 100}
    )
    code: str = Field(description="as chosen, or 16 random characters in groups of four")
    site: str
    amount: int
    currency: str
    uses: int


class RefundDone(BaseModel):
    model_config = with_example({"purchase_id": "pur_3kq9z2m8x1", "refunded": 19, "currency": "EUR"})
    purchase_id: str
    refunded: int = Field(description="minor units given back to the reader (whose balance is theirs alone)")
    currency: str


class Stats(BaseModel):
    model_config = with_example(
        {
            "site": "site_daily_planet",
            "currency": "EUR",
            "revenue": 1880,
            "promotions": -500,
            "unlocks": 101,
            "refunds": 2,
            "items": {"article-42": {"unlocks": 101, "refunds": 2, "revenue": 1880}},
        }
    )
    site: str
    currency: str
    revenue: int = Field(description="minor units, net of refunds")
    promotions: int = Field(description="minor units given in vouchers (negative)")
    unlocks: int
    refunds: int
    items: dict[str, dict[str, int]]
