"""What readers owe a site for what they unlocked on its tab: a view of the ledger, kept as two running
sums per site, for the dashboard.

A wallet may unlock while ``balance − charge ≥ −tab_limit`` (DESIGN.md, "tab"). An unlock that leaves it
below zero lends the site ``min(charged, −balance after)``: what was below zero before it, earlier unlocks
lent. Money that then raises a negative balance (a top-up, a voucher, a refunded purchase) repays
``min(credit, −balance before)`` of the debt, to the sites whose unlocks made it, oldest first; a refunded
purchase repays its own site first, since the debt it cancels is that site's. A site's tab outstanding is
what it lent less what was repaid to it, never below zero.

Debt that is no site's tab — a top-up's money the bank took back after it was spent (a refund or a
dispute, ``coinslot.chargebacks``; such a wallet is frozen) — waits in the same line under no site:
money paying it off repays no site, and money the bank gives back pays its own debit first.

Which sites a credit repaid is read from the wallet's ledger after the credit, off the request path:
its entries since the balance was last at or above zero are replayed (``repaid``). Only a credit that
finds the balance below zero needs it, which is rare. Lending needs no read: the unlock's answer says
what it charged and the balance after (``lent``).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from coinslot import keyspace
from coinslot.ledger import parse_entry
from coinslot.store import Store

log = logging.getLogger("coinslot.tabs")

NO_SITE = ""  # the debt a bank's refund or dispute made: no site lent it
BANK_GIVE_BACKS = ("refund-failed", "dispute-won")  # money a bank's refund or dispute took, given back
PAGES = (32, 512, 8192)  # ledger entries read from the end, until the credit and its debts' start are in


def lent(charged: int, balance_after: int) -> int:
    """What an unlock lent its site: the part of ``charged`` below zero."""
    return min(charged, max(0, -balance_after))


def outstanding(lent_sum: int, repaid_sum: int) -> int:
    return max(0, lent_sum - repaid_sum)


async def owed(store: Store, site_id: str) -> int:
    """What readers owe ``site_id`` for unlocks on its tab now: one HMGET."""
    lent_sum, repaid_sum = await store.redis.hmget(
        keyspace.insights_tab_key(site_id), [keyspace.TAB_LENT_FIELD, keyspace.TAB_REPAID_FIELD]
    )
    return outstanding(int(lent_sum or 0), int(repaid_sum or 0))


async def repaid(store: Store, wallet_id: str, ref: str) -> dict[str, int]:
    """The sites the credit ``ref`` of ``wallet_id`` repaid, and how much each (empty when it found the
    balance at or above zero)."""
    ledger = keyspace.wallet_keys(wallet_id).ledger
    account = keyspace.wallet_account(wallet_id)
    for n in PAGES:
        raw = await store.redis.lrange(ledger, -n, -1)
        whole = len(raw) < n  # the list from its first entry
        entries = [parse_entry(r, wallet_id) for r in raw]
        credit = next(
            (i for i in range(len(entries) - 1, -1, -1) if _is_credit(entries[i], ref, account)),
            None,
        )
        if credit is None:
            if whole:
                break
            continue
        start = next((i for i in range(credit - 1, -1, -1) if (e := entries[i]) and e["balance"] >= 0), None)
        if start is None and not whole:
            continue
        segment = [e for e in entries[0 if start is None else start + 1 : credit + 1] if e is not None]
        return {site: amount for site, amount in replay(segment, account).items() if site != NO_SITE}
    log.warning("tab: credit %s not found in the last %d entries of its wallet's ledger; not counted", ref, n)
    return {}


def _is_credit(entry: dict[str, Any] | None, ref: str, account: str) -> bool:
    return entry is not None and entry.get("ref") == ref and _moved(entry, account) > 0


def _moved(entry: dict[str, Any], account: str) -> int:
    return sum(int(p["amount"]) for p in entry["postings"] if p["account"] == account)


def replay(entries: list[dict[str, Any]], account: str) -> Counter[str]:
    """Whom the last of ``entries`` repaid (by site, ``NO_SITE`` included), replaying them from a balance
    at or above zero: each debit below zero joins the line of debts, each credit pays the line."""
    line: list[list[Any]] = []  # [site, amount still owed], oldest first
    paid: Counter[str] = Counter()
    for entry in entries:
        after = entry["balance"]
        owed_before, owed_after = max(0, _moved(entry, account) - after), max(0, -after)
        paid = Counter()
        if owed_after > owed_before:
            site = entry["site"] if entry.get("kind") == "unlock" else NO_SITE
            line.append([site, owed_after - owed_before])
        elif owed_before > owed_after:
            paid = _pay(line, owed_before - owed_after, _undoes(entry))
    return paid


def _undoes(entry: dict[str, Any]) -> str | None:
    """Whose debt a credit pays first, when it undoes a debit: a refunded purchase its site's, money a bank
    gives back the bank's. Any other credit (None) pays strictly oldest first."""
    if entry.get("kind") == "purchase-refund":
        return str(entry.get("site", NO_SITE))
    return NO_SITE if entry.get("kind") in BANK_GIVE_BACKS else None


def _pay(line: list[list[Any]], amount: int, first: str | None) -> Counter[str]:
    """Take ``amount`` off the debts in ``line``: ``first``'s oldest first, then everyone's oldest first."""
    paid: Counter[str] = Counter()
    order = [d for d in line if d[0] == first] + [d for d in line if d[0] != first] if first is not None else line
    for debt in order:
        if amount == 0:
            break
        part = min(amount, debt[1])
        debt[1] -= part
        amount -= part
        paid[debt[0]] += part
    line[:] = [d for d in line if d[1] > 0]
    return paid
