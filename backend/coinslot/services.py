"""Everything a request needs, built once by ``create_app`` and shared by the handlers (see http/context.py)."""

from __future__ import annotations

from dataclasses import dataclass

from coinslot.addresses import Addresses
from coinslot.cardreads import CardReads
from coinslot.catalog import Catalog
from coinslot.clock import Clock
from coinslot.dashauth import DashboardAuth
from coinslot.insights import Insights
from coinslot.keyring import KeyRing
from coinslot.payments import Payments
from coinslot.paywall import Paywall
from coinslot.recovery import RecoveryCodes
from coinslot.settings import Settings
from coinslot.store import Store
from coinslot.tokens import UnlockTokens, WalletTokens
from coinslot.topuplinks import TopupLinks
from coinslot.unlocks import Unlocks


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
    topup_links: TopupLinks
    addresses: Addresses  # client addresses as per-address limits may keep them
    unlocks: Unlocks
    card_reads: CardReads
    recovery: RecoveryCodes
    paywall: Paywall  # GET /v1/content: content, or the 402 offer
    insights: Insights  # counts for the publisher's dashboard, written after the response
    dashboard: DashboardAuth
