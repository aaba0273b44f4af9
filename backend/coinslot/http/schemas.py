"""Request bodies and queries. Unknown fields and loose types are refused (422 naming the field)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from coinslot.catalog import MAX_PRICE
from coinslot.dailylimit import MAX_DAILY_LIMIT
from coinslot.errors import InvalidQuery
from coinslot.vouchers import MAX_VOUCHER
from coinslot.wallets import MAX_BUDGET

Strict = ConfigDict(extra="forbid", strict=True)
MAX_OFFER_ITEMS = 50


class WalletCreate(BaseModel):
    model_config = Strict
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$", description="ISO 4217, default EUR")
    site: str | None = Field(
        default=None, pattern=r"^site_[A-Za-z0-9_]{1,48}$", description="with variant: the site of a price test"
    )
    variant: Literal["a", "b"] | None = Field(
        default=None, description="the price test's variant the card showed this reader before the wallet existed"
    )


class UnlockBody(BaseModel):
    model_config = Strict
    site: str = Field(min_length=1, max_length=64)
    item: str = Field(min_length=1, max_length=64)
    price: int | None = Field(default=None, ge=0, le=MAX_PRICE, description="the price the reader was shown")


class WalletSettings(BaseModel):
    model_config = Strict
    budget: int | None = Field(
        default=None, ge=0, le=MAX_BUDGET, description="minor units one click may pay without asking again"
    )
    daily_limit: int | None = Field(
        default=None,
        ge=0,
        le=MAX_DAILY_LIMIT,
        description="minor units unlocks may charge the wallet per UTC day; 0 or null = no limit",
    )


class TopupBody(BaseModel):
    model_config = Strict
    amount: int = Field(gt=0, description="minor units; one of the allowed amounts")
    site: str | None = Field(
        default=None, min_length=1, max_length=64, description="the site the top-up is for: it hears of the payment"
    )


class RedeemBody(BaseModel):
    model_config = Strict
    code: str = Field(min_length=1, max_length=64)


class ItemPut(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"title": "How the bridge was built", "price": 19, "content_html": "<p>…</p>"}]
        },
    )
    title: str = Field(min_length=1, max_length=200)
    price: int = Field(ge=0, le=MAX_PRICE, description="minor units of the site's currency")
    content_html: str | None = Field(default=None, description="sanitized with an allow-list when stored")
    pass_hours: int | None = Field(default=None, ge=1, le=24 * 366, description="makes the item a pass")


class VoucherCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"amount": 500, "uses": 100, "code": "SPRING-2026"}]},
    )
    amount: int = Field(gt=0, le=MAX_VOUCHER, description="minor units of the site's currency")
    uses: int = Field(default=1, ge=1, le=1_000_000)
    code: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 -]{4,62}[A-Za-z0-9]$",
        description="letters and digits (dashes and spaces ignored); random with 80 bits when omitted",
    )


class RecoverBody(BaseModel):
    model_config = Strict
    code: str = Field(min_length=1, max_length=64, description="the recovery code; case, spaces and dashes ignored")


def requested_items(request: Request) -> list[str]:
    """The ``items`` query parameter: 1 to 50 item ids, comma-separated, each once."""
    names = [n for n in dict.fromkeys(request.query_params.get("items", "").split(",")) if n]
    if not names:
        raise InvalidQuery("query parameter 'items' must name at least one item", field="items")
    if len(names) > MAX_OFFER_ITEMS:
        raise InvalidQuery(f"{len(names)} items asked, at most {MAX_OFFER_ITEMS}", field="items")
    return names
