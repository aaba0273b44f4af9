"""Refunds and disputes: money the payment provider takes back from a credited top-up.

Each is posted as a compensating ledger entry by one script on the wallet's own keys
(``lua/chargeback.lua``), keyed by the provider's own ids so that however often and in
whatever order the events arrive, each amount is taken (or given back) once. A wallet left
below zero is frozen: it cannot unlock until a top-up brings it back to zero or more.
"""

from __future__ import annotations

import logging

from coinslot import keyspace
from coinslot.errors import PaymentNotYetKnown
from coinslot.metrics import ALERTS, CHARGEBACKS
from coinslot.payments import ChargeRefunds, DisputeReport, RefundReport
from coinslot.store import Store

log = logging.getLogger("coinslot.chargebacks")


async def _run(
    store: Store, payment_id: str, *, op: str, ref_id: str, amount: int, currency: str, status: str, now_ms: int
) -> str:
    raw = await store.redis.get(keyspace.payment_key(payment_id))
    if raw is None:
        # The session's credit (webhook, return page or reconcile --stripe) has not run yet.
        raise PaymentNotYetKnown(f"payment {payment_id} is not credited here yet; the provider will retry this event")
    wallet_id, topup_id, session_id, stored_amount, stored_currency = raw.split(" ")
    k = keyspace.wallet_keys(wallet_id)
    result = await store.run(
        "chargeback",
        [k.wallet, k.credited, k.ledger, k.chargebacks],
        [
            now_ms,
            op,
            keyspace.checkout_credit_ref(session_id),
            currency,
            stored_amount,
            stored_currency,
            topup_id,
            ref_id,
            amount,
            status,
        ],
    )
    outcome = str(result[0])
    CHARGEBACKS.labels(op, outcome).inc()
    if outcome == "not-credited":
        raise PaymentNotYetKnown(f"top-up {topup_id} (payment {payment_id}) is not credited yet; retry later")
    if outcome == "mismatch":
        ALERTS.labels(f"{op}-mismatch").inc()
        log.error(
            "ALERT %s %s on payment %s reports %s %s, but top-up %s was %s %s (%s of it refunded before); "
            "nothing posted (wallet %s)",
            op,
            ref_id,
            payment_id,
            result[1],
            result[2],
            topup_id,
            stored_amount,
            stored_currency,
            result[3],
            wallet_id,
        )
    elif outcome == "ok" and int(result[2]) == 1:
        log.warning("wallet %s frozen at balance %s after %s %s", wallet_id, result[1], op, ref_id)
    return outcome


async def refund(store: Store, report: RefundReport, *, now_ms: int) -> str:
    """Debit a refund once, by its id; give it back once if it later fails or is cancelled.

    The first report of a refund that is pending, awaits action or succeeded debits its amount
    (``refund``); a report that it failed or was cancelled then credits that amount back
    (``refund-failed``). One that failed before any debit is recorded as void, so a stale earlier
    report of it posts nothing. The top-up's live refunds together never exceed its amount.
    Returns ``ok``, ``duplicate`` (nothing new), ``void`` (a dead refund; nothing posted) or
    ``mismatch`` (alerted); raises ``PaymentNotYetKnown`` while the top-up is not credited.
    """
    return await _run(
        store,
        report.payment_intent,
        op="refund",
        ref_id=report.refund_id,
        amount=report.amount,
        currency=report.currency,
        status=report.status,
        now_ms=now_ms,
    )


async def charge_refunds(store: Store, report: ChargeRefunds, *, now_ms: int) -> list[str]:
    """Each refund a charge carries, exactly as if it came in its own event; one outcome per refund."""
    return [await refund(store, r, now_ms=now_ms) for r in report.refunds]


async def dispute(store: Store, report: DisputeReport, *, now_ms: int) -> str:
    """Debit a disputed amount once (``dispute``), and credit it back once if the dispute is won.

    Inquiries and early warnings move no funds and post nothing.
    """
    if report.status == "inquiry":
        return "inquiry"
    return await _run(
        store,
        report.payment_intent,
        op="dispute",
        ref_id=report.dispute_id,
        amount=report.amount,
        currency=report.currency,
        status=report.status,
        now_ms=now_ms,
    )
