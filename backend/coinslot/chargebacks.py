"""Refunds and disputes: money the payment provider takes back from a credited top-up.

Each is posted as a compensating ledger entry by one script on the wallet's own keys
(``lua/chargeback.lua``), keyed by the provider's own ids so that however often and in
whatever order the events arrive, each amount is taken (or given back) once. A wallet left
below zero is frozen: it cannot unlock until a top-up brings it back to zero or more.
"""

from __future__ import annotations

import logging

from coinslot import store as keys
from coinslot.errors import PaymentNotYetKnown
from coinslot.metrics import ALERTS, CHARGEBACKS
from coinslot.payments import DisputeReport, RefundFailed, RefundReport
from coinslot.store import Store

log = logging.getLogger("coinslot.chargebacks")


async def _run(
    store: Store, payment_id: str, *, op: str, ref_id: str, amount: int, currency: str, status: str, now_ms: int
) -> str:
    raw = await store.redis.get(keys.payment_key(payment_id))
    if raw is None:
        # The session's credit (webhook, return page or reconcile --stripe) has not run yet.
        raise PaymentNotYetKnown(f"payment {payment_id} is not credited here yet; the provider will retry this event")
    wallet_id, topup_id, session_id, stored_amount, stored_currency = raw.split(" ")
    k = keys.wallet_keys(wallet_id)
    result = await store.run(
        "chargeback",
        [k.wallet, k.credited, k.ledger, k.chargebacks],
        [
            now_ms,
            op,
            "cs:" + session_id,
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
            "ALERT %s %s on payment %s reports %s %s, but top-up %s was %s %s; nothing posted (wallet %s)",
            op,
            ref_id,
            payment_id,
            result[1],
            result[2],
            topup_id,
            stored_amount,
            stored_currency,
            wallet_id,
        )
    elif outcome == "ok" and int(result[2]) == 1:
        log.warning("wallet %s frozen at balance %s after %s %s", wallet_id, result[1], op, ref_id)
    return outcome


async def refund(store: Store, report: RefundReport, *, now_ms: int) -> str:
    """Post the part of the charge's refunded total not posted yet, as one entry (``refund``).

    Returns ``ok`` or ``duplicate`` (nothing new), or ``mismatch`` (alerted); raises
    ``PaymentNotYetKnown`` while the top-up is not credited, so the provider retries.
    """
    return await _run(
        store,
        report.payment_intent,
        op="refund",
        ref_id=report.charge_id,
        amount=report.refunded_total,
        currency=report.currency,
        status="",
        now_ms=now_ms,
    )


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


async def refund_failed(store: Store, report: RefundFailed) -> str:
    """Alert the operator, once per refund, that a refund of a top-up failed after it was posted.

    Nothing is posted: refunds are posted from the charge's cumulative refunded total (``refund``),
    and an earlier ``charge.refunded`` may still be delivered again, so a give-back here could count twice.
    Returns ``alerted``, ``duplicate`` (alerted before) or ``ignored`` (not a Coinslot payment).
    """
    raw = await store.redis.get(keys.payment_key(report.payment_intent))
    if raw is None:
        return "ignored"
    wallet_id, topup_id = raw.split(" ")[:2]
    if not await store.redis.set(keys.payment_key(report.payment_intent) + ":failed:" + report.refund_id, 1, nx=True):
        return "duplicate"
    ALERTS.labels("refund-failed").inc()
    log.error(
        "ALERT refund %s of %s %s on payment %s failed or was cancelled: wallet %s was debited for it "
        "(top-up %s) while the money went back to the Stripe account; settle it by hand",
        report.refund_id,
        report.amount,
        report.currency,
        report.payment_intent,
        wallet_id,
        topup_id,
    )
    return "alerted"
