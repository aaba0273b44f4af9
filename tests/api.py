"""Test helpers that speak the HTTP API the way a client would."""

from __future__ import annotations

from typing import Any

import httpx

from coinslot import catalog
from coinslot.clock import FrozenClock
from coinslot.store import Store

from conftest import unique


class Api:
    def __init__(self, client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> None:
        self.client = client
        self.store = store
        self.clock = clock

    async def site(self, **options: Any) -> tuple[str, str]:
        """A new site; returns (site_id, secret_key)."""
        options.setdefault("origins", ["http://localhost:8001"])
        options.setdefault("name", "Daily Planet")
        site, secret = await catalog.create_site(
            self.store, site_id=unique("site_t"), now_ms=self.clock.now_ms(), **options
        )
        return site.id, secret

    async def item(self, site: tuple[str, str], item: str, price: int, **extra: Any) -> dict[str, Any]:
        r = await self.client.put(
            f"/v1/admin/items/{item}",
            json={"title": extra.pop("title", f"Title of {item}"), "price": price, **extra},
            headers={"Authorization": f"Bearer {site[1]}"},
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def wallet(self, currency: str = "EUR") -> str:
        r = await self.client.post("/v1/wallets", json={"currency": currency})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    async def voucher(self, site: tuple[str, str], amount: int, uses: int = 1) -> str:
        r = await self.client.post(
            "/v1/admin/vouchers", json={"amount": amount, "uses": uses}, headers={"Authorization": f"Bearer {site[1]}"}
        )
        assert r.status_code == 201, r.text
        code: str = r.json()["code"]
        return code

    async def redeem(self, wallet: str, code: str) -> httpx.Response:
        return await self.client.post("/v1/vouchers/redeem", json={"code": code}, headers=auth(wallet))

    async def fund(self, site: tuple[str, str], wallet: str, amount: int) -> None:
        r = await self.redeem(wallet, await self.voucher(site, amount))
        assert r.status_code == 200, r.text

    async def unlock(self, wallet: str, site: str, item: str, key: str | None = None, **body: Any) -> httpx.Response:
        headers = auth(wallet)
        if key is not None:
            headers["Idempotency-Key"] = key
        return await self.client.post("/v1/unlocks", json={"site": site, "item": item, **body}, headers=headers)

    async def wallet_id(self, wallet: str) -> str:
        r = await self.client.get("/v1/wallet", headers=auth(wallet))
        assert r.status_code == 200, r.text
        wallet_id: str = r.json()["wallet_id"]
        return wallet_id

    async def balance(self, wallet: str) -> int:
        r = await self.client.get("/v1/wallet", headers=auth(wallet))
        assert r.status_code == 200, r.text
        balance: int = r.json()["balance"]
        return balance


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
