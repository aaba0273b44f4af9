"""The ledger: every movement of money, as double-entry postings kept beside each wallet.

Each wallet's list holds entries whose postings name both sides (``wallet:<id>`` and the
counter account: ``site:<id>:revenue``, ``site:<id>:promotions``, ``topup:clearing`` — refunds
go back there — and ``topup:disputes``; all named in ``coinslot.keyspace``), so
the accounts of sites and of the payment clearing are derived by summing wallet entries.
``reconcile`` replays every wallet and reports any difference from the stored balances, and any
refund debited twice or given back (``refund-failed``) twice, before its debit or by another amount.
What a publisher sees of the ledger (its export and stats) is in ``coinslot.statements``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from coinslot import keyspace
from coinslot.store import Store


@dataclass
class Report:
    wallets: int = 0
    expired: int = 0  # index entries of wallets gone without a ledger, dropped by this run
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    accounts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    @property
    def clean(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "wallets": self.wallets,
            "expired": self.expired,
            "entries": self.entries,
            "problems": self.problems,
            "accounts": {a: dict(c) for a, c in sorted(self.accounts.items())},
        }


async def wallet_ids(store: Store) -> AsyncIterator[str]:
    async for wallet_id in store.redis.sscan_iter(keyspace.WALLET_INDEX, count=500):
        yield wallet_id


async def _load(store: Store, wallet_id: str) -> tuple[dict[str, str], list[str]]:
    k = keyspace.wallet_keys(wallet_id)
    # One script, so a concurrent unlock cannot land between the balance and the list.
    flat, entries = await store.run("snapshot", [k.wallet, k.ledger], [])
    return dict(zip(flat[::2], flat[1::2], strict=True)), entries


def _parse_entry(raw: str) -> dict[str, Any] | None:
    """The entry if it has the shape the scripts write (integer amounts included), else None."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("postings"), list) or not entry["postings"]:
        return None
    for name in ("seq", "balance"):
        if type(entry.get(name)) is not int:
            return None
    if not isinstance(entry.get("currency"), str):
        return None
    for p in entry["postings"]:
        if not isinstance(p, dict) or not isinstance(p.get("account"), str) or type(p.get("amount")) is not int:
            return None
    return entry


def check_wallet(wallet_id: str, wallet: dict[str, str], raw_entries: list[str], report: Report) -> None:
    """Replay one wallet's entries against its stored balance; add any problem to ``report``."""
    account = keyspace.wallet_account(wallet_id)
    if not wallet:
        if raw_entries:
            report.problems.append(f"{account}: {len(raw_entries)} ledger entries but no wallet")
        return
    currency = wallet["currency"]
    running = 0
    refunds: dict[str, int] = {}  # refund ref -> what its debit took from the wallet (a negative amount)
    for expected_seq, raw in enumerate(raw_entries, start=1):
        report.entries += 1
        entry = _parse_entry(raw)
        if entry is None:
            report.problems.append(f"{account} entry {expected_seq}: not a well-formed ledger entry: {raw[:200]!r}")
            continue
        seq, postings = entry["seq"], entry["postings"]
        total = sum(p["amount"] for p in postings)
        if total != 0:
            report.problems.append(f"{account} entry {seq}: postings sum to {total}, not 0")
        if seq != expected_seq:
            report.problems.append(f"{account} entry {seq}: expected sequence number {expected_seq}")
        if entry["currency"] != currency:
            report.problems.append(f"{account} entry {seq}: currency {entry['currency']} != {currency}")
        for p in postings:
            side = "wallets" if p["account"].startswith(keyspace.WALLET_ACCOUNT_PREFIX) else p["account"]
            report.accounts[side][currency] += p["amount"]
            if p["account"] == account:
                running += p["amount"]
        mine = sum(p["amount"] for p in postings if p["account"] == account)
        _check_refund(account, entry, mine, refunds, report)
        if entry["balance"] != running:
            report.problems.append(f"{account} entry {seq}: recorded balance {entry['balance']} != replayed {running}")
    stored = int(wallet["balance"])
    if stored != running:
        report.problems.append(f"{account}: stored balance {stored} != replayed ledger {running} ({currency})")
    if wallet.get("frozen") == "1" and stored >= 0:
        # Only a refund or dispute freezes, only below zero; money that brings it back thaws it.
        report.problems.append(f"{account}: frozen at balance {stored} >= 0")
    if int(wallet.get("seq", 0)) != len(raw_entries):
        report.problems.append(f"{account}: sequence counter {wallet.get('seq')} != {len(raw_entries)} entries")


def _check_refund(account: str, entry: dict[str, Any], mine: int, refunds: dict[str, int], report: Report) -> None:
    """A refund is debited (or a purchase refunded) at most once; a give-back (``refund-failed``) follows its debit
    once, for the same amount.

    ``refunds`` maps each refund or give-back ref seen so far to what it moved on the wallet.
    """
    kind, ref, seq = entry.get("kind"), entry.get("ref"), entry["seq"]
    if not isinstance(ref, str) or kind not in ("refund", "refund-failed", "purchase-refund"):
        return
    if ref in refunds:
        report.problems.append(f"{account} entry {seq}: {kind} {ref} posted more than once")
    elif kind == "refund-failed":
        debit = refunds.get(ref.removesuffix(keyspace.GIVE_BACK_SUFFIX))
        if debit is None:
            report.problems.append(f"{account} entry {seq}: {ref} gives back a refund not debited before it")
        elif mine != -debit:
            report.problems.append(f"{account} entry {seq}: {ref} gives back {mine}, its refund took {-debit}")
    refunds[ref] = mine


async def reconcile(store: Store) -> Report:
    """Replay every wallet's ledger; ``Report.clean`` is False on any difference.

    A wallet gone with no ledger expired empty (or was erased before money moved): its id
    leaves the index, and ``Report.expired`` counts it.
    """
    report = Report()
    async for wallet_id in wallet_ids(store):
        wallet, entries = await _load(store, wallet_id)
        if not wallet and not entries:
            report.expired += 1
            await store.redis.srem(keyspace.WALLET_INDEX, wallet_id)
            continue
        report.wallets += 1
        check_wallet(wallet_id, wallet, entries, report)
    return report
