"""The built-in test checkout: a page on the backend, marked TEST MODE, with one Pay button.

It credits through the same exactly-once path as a real provider: the session id keys the
credit, and the amount is the one stored when the session was created.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from coinslot.errors import NotFound
from coinslot.ids import new_id
from coinslot.payments import CheckoutSession, PaymentEvent, SessionReport

SESSION_LIFETIME_MS = 24 * 60 * 60 * 1000  # as long as a Stripe Checkout Session


class BuiltinCheckout:
    name = "test"
    livemode = False

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url

    async def create_checkout(
        self, *, topup_id: str, wallet_id: str, amount: int, currency: str, now_ms: int
    ) -> CheckoutSession:
        session_id = new_id("cs_test", 16)
        return CheckoutSession(
            session_id=session_id,
            url=f"{self.public_url}/checkout/test/{session_id}",
            expires_ms=now_ms + SESSION_LIFETIME_MS,
        )

    async def retrieve_session(self, session_id: str) -> SessionReport:
        # Test sessions are settled on their own page; there is no provider to ask.
        raise NotFound("test checkout sessions are paid on /checkout/test/{session}")

    async def recent_sessions(self, *, since_s: int) -> AsyncIterator[SessionReport]:
        return
        yield  # an async generator that yields nothing: the test checkout has no remote record

    def parse_event(self, payload: bytes, signature: str | None) -> PaymentEvent:
        raise NotFound("webhooks are off: payments are taken by the built-in test checkout")

    async def aclose(self) -> None:
        pass
