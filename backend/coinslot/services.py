"""Everything a request needs, built once by ``create_app`` and shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import URLSafeTimedSerializer
from starlette.requests import Request

from coinslot.addresses import Addresses
from coinslot.catalog import Catalog
from coinslot.clock import Clock
from coinslot.keyring import KeyRing
from coinslot.payments import Payments
from coinslot.settings import Settings
from coinslot.store import Store
from coinslot.tokens import UnlockTokens, WalletTokens


@dataclass
class Services:
    settings: Settings
    public_url: str  # the backend's own origin: token issuer, return URLs, origin checks
    store: Store
    catalog: Catalog
    clock: Clock
    wallet_tokens: WalletTokens
    keyring: KeyRing
    unlock_tokens: UnlockTokens
    payments: Payments
    topup_links: URLSafeTimedSerializer
    addresses: Addresses  # client addresses as per-address limits may keep them


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
