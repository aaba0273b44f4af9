"""Calls that a wallet makes: create, read, unlock, top up, redeem a voucher."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from coinslot import privacy, recovery, refunds, topups, vouchers, wallets
from coinslot.errors import CoinslotError
from coinslot.http import counting
from coinslot.http.context import services
from coinslot.http.credentials import (
    clear_wallet_cookie,
    client_address,
    client_ip,
    require_wallet,
    set_wallet_cookie,
    uses_cookie,
)
from coinslot.http.problems import PrivateJSONResponse, read_json
from coinslot.http.schemas import RecoverBody, RedeemBody, TopupBody, UnlockBody, WalletCreate, WalletSettings
from coinslot.idempotency import Idempotency
from coinslot.pricetests import wallet_id_check
from coinslot.ratelimit import PerAddress

DAY_S = 24 * 60 * 60


def private_json(body: Any, status_code: int = 200) -> Response:
    return PrivateJSONResponse(body, status_code)


async def create_wallet(request: Request) -> Response:
    svc = services(request)
    body, _ = await read_json(request, WalletCreate, svc.settings.max_body_bytes)
    now_ms = svc.clock.now_ms()
    limit = PerAddress(await client_address(request, now_ms), svc.settings.wallets_per_ip_per_hour)
    ref = await wallets.create_wallet(
        svc.store,
        currency=body.currency or "EUR",
        now_ms=now_ms,
        limit=limit,
        empty_ttl_s=svc.settings.empty_wallet_days * DAY_S,
        id_check=wallet_id_check(body.site, body.variant, svc.unlock_tokens.pseudonym)
        if body.site and body.variant
        else None,
    )
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
    ref = require_wallet(request)
    return private_json(await wallets.wallet_view(svc.store, ref, catalog=svc.catalog, now_ms=svc.clock.now_ms()))


async def set_budget(request: Request) -> Response:
    """The one-click budget and the daily limit; ``"daily_limit": null`` removes the limit, as 0 does."""
    svc = services(request)
    ref = require_wallet(request)
    body, _ = await read_json(request, WalletSettings, svc.settings.max_body_bytes)
    limit = (body.daily_limit or 0) if "daily_limit" in body.model_fields_set else None
    settings = await wallets.update_settings(
        svc.store, ref, budget=body.budget, daily_limit=limit, now_ms=svc.clock.now_ms()
    )
    return private_json(settings)


async def undo_purchase(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    purchase_id = request.path_params["purchase_id"]
    now_ms = svc.clock.now_ms()
    done = await refunds.reader_undo(svc.store, svc.catalog, ref, purchase_id, now_ms=now_ms)
    counting.refunded(svc, done, now_ms)
    return private_json(done.public())


async def export_wallet(request: Request) -> Response:
    svc = services(request)
    return private_json(await privacy.export(svc.store, require_wallet(request), now_ms=svc.clock.now_ms()))


async def erase_wallet(request: Request) -> Response:
    svc = services(request)
    response = private_json(await privacy.erase(svc.store, require_wallet(request), now_ms=svc.clock.now_ms()))
    if uses_cookie(request, svc):
        clear_wallet_cookie(response)
    return response


async def unlock(request: Request) -> Response:
    svc = services(request)
    ref = require_wallet(request)
    body, raw = await read_json(request, UnlockBody, svc.settings.max_body_bytes)
    key = request.headers.get("idempotency-key")
    now_ms = svc.clock.now_ms()
    try:
        granted = await svc.unlocks.unlock(
            ref,
            site_id=body.site,
            item_id=body.item,
            shown_price=body.price,
            idempotency=Idempotency.for_body(key, raw) if key is not None else None,
            now_ms=now_ms,
            client_ip=client_ip(request, svc.settings.trusted_proxy_hops),
        )
    except CoinslotError as exc:
        counting.unlock_refused(svc, body.site, body.item, ref, now_ms, exc)
        raise
    counting.unlocked(svc, body.site, body.item, ref, now_ms, granted)
    response = private_json(granted.public())
    if granted.replayed:
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
        site_id=body.site,
        catalog=svc.catalog,
    )
    counting.topup_started(svc, topup.id, now_ms, topup.site)
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
    tries = PerAddress(await client_address(request, now_ms), svc.settings.failed_redeems_per_ip_per_hour)
    amount, balance, currency = await vouchers.redeem(svc.store, ref, body.code, now_ms=now_ms, tries=tries)
    counting.voucher_redeemed(svc, ref, body.code, amount, balance, now_ms)
    return private_json({"credited": amount, "balance": balance, "currency": currency})


async def issue_recovery_code(request: Request) -> Response:
    svc = services(request)
    issued = await svc.recovery.issue(require_wallet(request), now_ms=svc.clock.now_ms())
    return private_json(issued.public(), status_code=201)


async def recover_wallet(request: Request) -> Response:
    """No credential: the code is one. The card gets the new token as its cookie only, never in
    the body its script reads; any other caller gets it in the body."""
    svc = services(request)
    body, _ = await read_json(request, RecoverBody, svc.settings.max_body_bytes)
    now_ms = svc.clock.now_ms()
    limits = recovery.Limits(
        await client_address(request, now_ms),
        per_address=svc.settings.failed_recoveries_per_ip_per_hour,
        per_prefix=svc.settings.failed_recoveries_per_prefix_per_hour,
    )
    recovered = await svc.recovery.recover(body.code, now_ms=now_ms, limits=limits)
    token = svc.wallet_tokens.sign(recovered.ref)
    if uses_cookie(request, svc):
        response = private_json(recovered.public())
        set_wallet_cookie(response, token)
        return response
    return private_json({**recovered.public(), "token": token})
