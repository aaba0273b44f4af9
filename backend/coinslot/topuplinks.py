"""Top-up links: ready URLs, bound to one wallet, that a 402 offers so a card can open the
checkout window synchronously on the reader's click.

A link is signed (itsdangerous, its own salt) and carries the wallet, its generation, the
amount and the top-up id chosen in advance, so opening it twice opens one checkout; and the site
whose 402 offered it, which hears of the payment (``topup.paid``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import URLSafeTimedSerializer

from coinslot.ids import new_id
from coinslot.tokens import WalletRef

LINK_MAX_AGE_S = 15 * 60


@dataclass(frozen=True, slots=True)
class TopupLink:
    wallet: WalletRef
    amount: int  # minor units
    topup_id: str
    issued_ms: int
    site: str | None = None  # the site whose 402 offered the link


class TopupLinks:
    """Makes and reads top-up links; ``allowed`` gives the amounts a currency may be topped up by."""

    def __init__(
        self, serializer: URLSafeTimedSerializer, public_url: str, allowed: Callable[[str], tuple[int, ...]]
    ) -> None:
        self._serializer = serializer
        self._public_url = public_url
        self._allowed = allowed

    def options(self, wallet: WalletRef, shortfall: int, currency: str, site: str) -> list[dict[str, Any]]:
        """Links for the amounts that cover ``shortfall`` (or the largest allowed), smallest first,
        offered by ``site``."""
        allowed = self._allowed(currency)
        enough = [a for a in allowed if a >= shortfall] or [max(allowed)]
        options = []
        for amount in enough:
            topup_id = new_id("tu")
            signed = self._serializer.dumps([wallet.wallet_id, wallet.generation, amount, topup_id, site])
            options.append(
                {
                    "amount": amount,
                    "currency": currency,
                    "topup_id": topup_id,
                    "url": f"{self._public_url}/topup/{signed}",
                }
            )
        return options

    def read(self, link: str) -> TopupLink:
        """The link's content; raises itsdangerous' ``SignatureExpired`` after 15 minutes and
        ``BadData`` (or ``ValueError``/``TypeError`` for a signed but malformed payload) otherwise."""
        payload, signed_at = self._serializer.loads(link, max_age=LINK_MAX_AGE_S, return_timestamp=True)
        # Links signed before they named their site (at most 15 minutes old) have four parts.
        wallet_id, generation, amount, topup_id, *site = payload
        issued_ms = int(signed_at.timestamp() * 1000)
        return TopupLink(WalletRef(wallet_id, generation), amount, topup_id, issued_ms, site[0] if site else None)
