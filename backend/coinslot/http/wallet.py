"""Calls that a wallet makes: create, read, unlock, top up, redeem a voucher."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coinslot import catalog, keyspace, ratelimit, topups, unlocks, vouchers, wallets
from coinslot.errors import InsufficientFunds
from coinslot.http.credentials import client_address, require_wallet, set_wallet_cookie, uses_cookie
from coinslot.http.problems import PrivateJSONResponse, read_json
from coinslot.http.schemas import RedeemBody, TopupBody, UnlockBody, WalletCreate
from coinslot.idempotency import Idempotency
from coinslot.ids import new_id
from coinslot.services import Services, services
from coinslot.wallets import WalletRef


def private_json(body: Any, status_code: int = 200) -> Response:
    return PrivateJSONResponse(body, status_code)


async def create_wallet(request: Request) -> Response:
    svc = services(request)
    body, _ = await read_json(request, WalletCreate, svc.settings.max_body_bytes)
    now_ms = svc.clock.now_ms()
    address = await client_address(request, now_ms)
    await ratelimit.hit(
        svc.store,
        keyspace.new_wallets_bucket(address),
        limit=svc.settings.wallets_per_ip_per_hour,
        window_s=3600,
        now_ms=now_ms,
        what="new wallets from this address",
    )
    ref = await wallets.create_wallet(svc.store, currency=body.currency or "EUR", now_ms=now_ms)
    token = svc.wallet_tokens.sign(ref)
    response = private_json(
        {"wallet_id": ref.wallet_id, "token": token, "balance": 0, "currency": (body.currency or "EUR").upper()},
        status_code=201,
    )
    if uses_cookie(request, svc):
        set_wallet_cookie(response, token)
    return response


async def get_wallet(request: Request) -> Response:
    svc = services(request)
    return private_json(await wallets.wallet_view(svc.store, require_wallet(request)))


def topup_options(svc: Services, ref: WalletRef, shortfall: int, currency: str) -> list[dict[str, Any]]:
    """Ready top-up links bound to this wallet (valid 15 min), smallest sufficient first."""
    allowed = svc.settings.allowed_topups(currency)
    enough = [a for a in allowed if a >= shortfall] or [max(allowed)]
    options = []
    for amount in enough:
        topup_id = new_id("tu")
        signed = svc.topup_links.dumps([ref.wallet_id, ref.generation, amount, topup_id])
        options.append(
            {"amount": amount, "currency": currency, "topup_id": topup_id, "url": f"{svc.public_url}/topup/{signed}"}
        )
    return options


async def unlock(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    body, raw = await read_json(request, UnlockBody, svc.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    idem = Idempotency.for_body(key, raw) if key is not None else None
    now_ms = svc.clock.now_ms()
    item_id = catalog.check_item_id(body.item)
    purchase_id = unlocks.new_purchase_id()
    # The token of the purchase this request will most likely make is signed while Redis
    # decides; it is thrown away unless that very purchase is what the script reports.
    claims = svc.unlock_tokens.claims(
        site=body.site, item=item_id, purchase_id=purchase_id, wallet_id=ref.wallet_id, now_s=now_ms // 1000
    )
    pending = svc.unlock_tokens.sign_soon(claims)
    try:
        done = await unlocks.unlock(
            svc.store,
            svc.catalog,
            ref,
            site_id=body.site,
            item_id=item_id,
            shown_price=body.price,
            idempotency=idem,
            now_ms=now_ms,
            client_address_of=lambda: client_address(request, now_ms),
            tab_wallets_per_ip=svc.settings.tab_wallets_per_ip,
            purchase_id=purchase_id,
        )
    except InsufficientFunds as exc:
        shortfall = exc.price - exc.balance
        exc.extra["topup_options"] = topup_options(svc, ref, shortfall, exc.currency)
        raise
    if done.purchase_id != purchase_id or done.site.id != body.site or done.item.id != item_id:
        # Owned before, or a replay of an earlier request: the token names that purchase.
        claims = svc.unlock_tokens.claims(
            site=done.site.id,
            item=done.item.id,
            purchase_id=done.purchase_id,
            wallet_id=ref.wallet_id,
            now_s=now_ms // 1000,
        )
        pending = svc.unlock_tokens.sign_soon(claims)
    out: dict[str, Any] = {
        "token": await pending.token(),
        "expires_at": claims["exp"],
        "balance": done.balance,
        "charged": done.charged,
        "purchase_id": done.purchase_id,
        "currency": done.site.currency,
    }
    if done.item.has_content:
        out["content"] = await catalog.item_content(svc.store, done.site.id, done.item.id)
    response = private_json(out)
    if done.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


async def create_topup(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    body, raw = await read_json(request, TopupBody, svc.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    now_ms = svc.clock.now_ms()
    topup = await topups.create_topup(
        svc.store,
        svc.payments,
        ref,
        amount=body.amount,
        allowed=svc.settings.allowed_topups,
        now_ms=now_ms,
        limits=topups.TopupLimits(
            per_wallet=svc.settings.topups_per_wallet_per_hour,
            per_ip=svc.settings.topups_per_ip_per_hour,
            address=await client_address(request, now_ms),
        ),
        idempotency=Idempotency.for_body(key, raw) if key is not None else None,
    )
    return private_json(topup.public(), status_code=201)


async def get_topup(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    topup = await topups.get_topup(svc.store, ref, request.path_params["topup_id"], now_ms=svc.clock.now_ms())
    return private_json(topup.public())


async def redeem_voucher(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    body, _ = await read_json(request, RedeemBody, svc.settings.max_body_bytes)
    now_ms = svc.clock.now_ms()
    # Guessing codes must be slow: every try is counted before it is checked, in one atomic
    # step, so parallel guesses cannot slip past the limit; only a credited code is uncounted.
    bucket = keyspace.redeem_tries_bucket(await client_address(request, now_ms))
    await ratelimit.hit(
        svc.store,
        bucket,
        limit=svc.settings.failed_redeems_per_ip_per_hour,
        window_s=3600,
        now_ms=now_ms,
        what="voucher code tries",
    )
    amount, balance, currency = await vouchers.redeem(svc.store, ref, body.code, now_ms=now_ms)
    await ratelimit.give_back(svc.store, bucket, window_s=3600, now_ms=now_ms)
    return private_json({"credited": amount, "balance": balance, "currency": currency})
