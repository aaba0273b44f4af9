"""Ways money enters a wallet from outside: the built-in test checkout, later Stripe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    session_id: str  # the provider's id; the key that makes its credit happen at most once
    url: str  # where the reader's browser goes to pay
    expires_ms: int


class Payments(Protocol):
    name: str
    livemode: bool

    async def create_checkout(
        self, *, topup_id: str, wallet_id: str, amount: int, currency: str, now_ms: int
    ) -> CheckoutSession: ...
