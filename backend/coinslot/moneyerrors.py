"""What a client is told when money says no: a wallet that cannot pay (each 402 carrying ready
top-up links), content asked for without paying, and a refund that the rules refuse (money rule 8).

Part of the one hierarchy in ``coinslot.errors``, kept apart by what the refusals are about.
"""

from __future__ import annotations

from typing import Any

from coinslot.errors import CoinslotError, Conflict, NotFound


class UnknownPurchase(NotFound):
    type = "unknown-purchase"
    title = "Unknown purchase"


class RefundRefused(Conflict):
    """Money rule 8 refuses this undo; ``type`` says which part of it."""

    type = "refund-refused"
    title = "This purchase cannot be undone"


class RefundWindowClosed(RefundRefused):
    type = "refund-window-closed"
    title = "The time to undo this purchase has passed"


class RefundLimitReached(RefundRefused):
    type = "refund-limit-reached"
    title = "Too many undos in 30 days"


class RefundPassUsed(RefundRefused):
    type = "refund-pass-used"
    title = "This pass has been used"


class RefundCapDay(RefundRefused):
    type = "refund-cap-day"
    title = "Items were free under the daily cap that day"


class AlreadyRefunded(RefundRefused):
    type = "already-refunded"
    title = "This purchase was already refunded"


class InsufficientFunds(CoinslotError):
    """The wallet cannot pay: balance minus price would fall below the site's tab limit.

    Carries ready top-up links (``topup_options``), so the card can open a checkout on the click.
    """

    status = 402
    type = "insufficient-funds"
    title = "Insufficient funds"

    def __init__(
        self, balance: int, price: int, currency: str, tab_limit: int, *, topup_options: list[dict[str, Any]]
    ) -> None:
        self._init(
            f"wallet balance {balance} - price {price} < -tab limit {tab_limit} ({currency} minor units)",
            balance,
            price,
            currency,
            topup_options,
        )

    def _init(
        self, detail: str, balance: int, price: int, currency: str, topup_options: list[dict[str, Any]], **extra: Any
    ) -> None:
        CoinslotError.__init__(
            self, detail, balance=balance, price=price, currency=currency, **extra, topup_options=topup_options
        )
        self.balance = balance
        self.price = price
        self.currency = currency


class TabQuotaReached(InsufficientFunds):
    """The site runs a tab, but this wallet's address has opened as many today as the site allows."""

    def __init__(
        self,
        balance: int,
        price: int,
        currency: str,
        tab_limit: int,
        per_ip: int,
        *,
        topup_options: list[dict[str, Any]],
    ) -> None:
        self._init(
            f"wallet balance {balance} - price {price} < 0 and no tab for this wallet: the site's tab (limit"
            f" {tab_limit}) opens for at most {per_ip} new wallets per address and day ({currency} minor units)",
            balance,
            price,
            currency,
            topup_options,
            tab="quota-reached",
        )


class WalletFrozen(InsufficientFunds):
    """A refund or dispute pushed the balance below zero: no unlock until a top-up brings it to >= 0.

    A 402 like ``InsufficientFunds``, so the card offers the top-up that thaws the wallet.
    """

    type = "wallet-frozen"
    title = "Wallet frozen"

    def __init__(self, balance: int, price: int, currency: str, *, topup_options: list[dict[str, Any]]) -> None:
        self._init(
            f"wallet frozen: balance {balance} < 0 after a refund or dispute; a top-up that brings it to >= 0 "
            f"unfreezes it ({currency} minor units)",
            balance,
            price,
            currency,
            topup_options,
        )


class PaymentRequired(CoinslotError):
    """Content asked for without a valid unlock token; carries a machine-readable offer."""

    status = 402
    type = "payment-required"
    title = "Payment required"
