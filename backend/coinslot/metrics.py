"""Prometheus metrics: what an operator watches and alerts on.

Counters live in the default registry; ``/metrics`` renders it. With several worker
processes, each exposes its own counters (scrape each, or run one worker per host).
"""

from __future__ import annotations

from prometheus_client import Counter

# By the unlock script's outcome: ok, replay, pass (granted under a pass), capfree (free under the daily
# cap), insufficient, tab-quota, frozen, price-changed, currency, idem-conflict, rate-limited, stale,
# no-wallet (a tab-quota followed by a granted retry counts both).
UNLOCKS = Counter("coinslot_unlocks", "Unlock attempts by outcome", ["outcome"])
CREDITS = Counter("coinslot_credits", "Credits to wallets by kind and outcome", ["kind", "outcome"])
CREDITED_MINOR_UNITS = Counter("coinslot_credited_minor_units", "Money credited to wallets", ["kind", "currency"])
ALERTS = Counter(
    "coinslot_alerts",
    "Events that need an operator: a paid amount that differs from the stored one, an unknown paid session",
    ["kind"],
)
CHARGEBACKS = Counter("coinslot_chargebacks", "Refund and dispute events by kind and outcome", ["kind", "outcome"])
# Refunds of purchases by who asked (reader, publisher) and the refund script's outcome (ok, already,
# window-closed, limit, pass-used, cap-day, unknown, stale, no-wallet).
PURCHASE_REFUNDS = Counter(
    "coinslot_purchase_refunds", "Refunds of purchases by who asked and outcome", ["by", "outcome"]
)
