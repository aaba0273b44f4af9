"""Which provider a deployment takes money through (``COINSLOT_PAYMENTS``)."""

from __future__ import annotations

from coinslot.payments import Payments
from coinslot.settings import Settings


def from_settings(settings: Settings, public_url: str) -> Payments:
    """The provider the settings choose (``COINSLOT_PAYMENTS``)."""
    if settings.payments == "stripe":
        # Imported only when chosen: the Stripe library takes a while to load.
        from coinslot.payments.stripe import StripeCheckout

        return StripeCheckout.from_settings(settings, public_url)
    from coinslot.payments.testmode import BuiltinCheckout

    return BuiltinCheckout(public_url)
