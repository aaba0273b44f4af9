"""Ways money enters a wallet from outside: the built-in test checkout, and Stripe.

A provider turns what it knows into the plain reports below, so the domain modules
(``topups``, ``chargebacks``) never see a provider's own objects. Which provider a
deployment uses is ``payments/choice.py``'s answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    session_id: str  # the provider's id; the key that makes its credit happen at most once
    url: str  # where the reader's browser goes to pay
    expires_ms: int


@dataclass(frozen=True, slots=True)
class SessionReport:
    """What the provider says about one checkout session."""

    session_id: str
    # 'paid' | 'awaiting' (completed, a delayed payment such as SEPA under way) | 'failed'
    # (that delayed payment failed) | 'expired' | 'open'
    state: str
    amount: int  # minor units the provider will take or took
    currency: str  # ISO 4217, upper case
    payment_intent: str | None
    topup_id: str | None  # from our metadata; None for a session some other integration made
    created_s: int = 0


# A refund's statuses, as Stripe names them: while one of TAKEN the money is (being) sent back to
# the payer, so the wallet is debited; once RETURNED it came back to the account, so the wallet is given it back.
REFUND_TAKEN = ("pending", "requires_action", "succeeded")
REFUND_RETURNED = ("failed", "canceled")


@dataclass(frozen=True, slots=True)
class RefundReport:
    """One refund of a payment, reported under its own id; ``status`` is one of REFUND_TAKEN or REFUND_RETURNED."""

    refund_id: str
    payment_intent: str
    amount: int  # minor units this refund sends back
    currency: str
    status: str


@dataclass(frozen=True, slots=True)
class ChargeRefunds:
    """The refunds a charge carries in its own object (older API versions); empty when it carries none."""

    charge_id: str
    refunds: tuple[RefundReport, ...]


@dataclass(frozen=True, slots=True)
class DisputeReport:
    """A chargeback: ``status`` 'open' (funds withdrawn), 'won', 'lost' or 'inquiry' (no funds moved)."""

    dispute_id: str
    payment_intent: str
    amount: int
    currency: str
    status: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event this deployment does not act on (answered 200 so the provider stops sending it)."""

    kind: str


PaymentEvent = SessionReport | RefundReport | ChargeRefunds | DisputeReport | Ignored


class Payments(Protocol):
    name: str
    livemode: bool

    async def create_checkout(
        self, *, topup_id: str, wallet_id: str, amount: int, currency: str, now_ms: int
    ) -> CheckoutSession:
        """Open a checkout; ``topup_id`` is the idempotency key, so asking twice opens one session."""
        ...

    async def retrieve_session(self, session_id: str) -> SessionReport:
        """Ask the provider about one session (the reader's return page; never the webhook)."""
        ...

    def recent_sessions(self, *, since_s: int) -> AsyncIterator[SessionReport]:
        """Every session created since ``since_s`` (Unix seconds), all pages of them."""
        ...

    def parse_event(self, payload: bytes, signature: str | None) -> PaymentEvent:
        """Verify a webhook on its raw body and translate it; raises ``BadWebhook`` if not authentic."""
        ...

    async def aclose(self) -> None: ...
