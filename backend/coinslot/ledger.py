"""The ledger: every movement of money, as double-entry postings kept beside each wallet.

Each wallet's list holds entries whose postings name both sides (``wallet:<id>`` and the
counter account: ``site:<id>:revenue``, ``site:<id>:promotions``, ``topup:clearing`` — refunds
go back there — and ``topup:disputes``; all named in ``coinslot.keyspace``), so
the accounts of sites and of the payment clearing are derived by summing wallet entries.
``reconcile`` replays every wallet and reports any difference from the stored balances, and any
refund debited twice or given back (``refund-failed``) twice, before its debit or by another amount.
What a publisher sees of the ledger (its export and stats) is in ``coinslot.statements``.

A purchase's bytes are what a million wallets multiply, so a purchase writes its facts once:

- Entries are JSON objects, except an unlock's, the entry wallets make most, which is one line:
  ``u|<seq>|<balance after>|<at ms>|<purchase id>|<site>|<item>|<currency>|<charged>``. Its postings
  (the wallet's account -charged, the site's revenue +charged) are implied; ``parse_entry`` spells
  them out for every reader. Ids never contain ``|`` (``catalog.SITE_ID``, ``ITEM_ID``).
- A receipt, in the wallet's purchases hash, is the sequence number of its purchase's line as a
  JSON number; or, when there is more to say, a JSON object with ``seq`` and what the line does not
  hold: ``price`` (when the daily cap took part of it), ``expires_at`` (a pass), ``day`` (a capped
  site's day), ``served_at`` (a pass first used), ``refunded_at`` and ``refunded_by``. Short values
  keep the hash a listpack; ``purchase_record`` joins a receipt and its line.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from coinslot import keyspace
from coinslot.catalog import KIND_ITEM, KIND_PASS
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


def parse_entry(raw: str, wallet_id: str) -> dict[str, Any] | None:
    """An entry of ``wallet_id``'s ledger with its postings spelled out, if it has the shape the scripts
    write (integer amounts included), else None. An unlock's compact line (``keyspace``) reads as the
    JSON object it stands for."""
    if raw.startswith(keyspace.UNLOCK_LINE_TAG):
        return _unlock_entry(raw, wallet_id)
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


def _unlock_entry(raw: str, wallet_id: str) -> dict[str, Any] | None:
    parts = raw[len(keyspace.UNLOCK_LINE_TAG) :].split("|")
    if len(parts) != 8 or not all(parts[3:7]):
        return None
    seq, balance, at, ref, site, item, currency, charged = parts
    try:
        amount = int(charged)
        numbers = int(seq), int(balance), int(at)
    except ValueError:
        return None
    return {
        "seq": numbers[0],
        "balance": numbers[1],
        "at": numbers[2],
        "kind": "unlock",
        "ref": ref,
        "site": site,
        "item": item,
        "currency": currency,
        "postings": [
            {"account": keyspace.wallet_account(wallet_id), "amount": -amount},
            {"account": keyspace.site_revenue_account(site), "amount": amount},
        ],
    }


def receipt_seq(raw_receipt: str) -> int | None:
    """The ledger sequence number of a purchase's line, from its receipt; None for a receipt written
    before receipts named their line, which holds the whole record itself."""
    value = json.loads(raw_receipt)
    return value if isinstance(value, int) else value.get("seq")


def purchase_record(purchase_id: str, raw_receipt: str, raw_line: str | None, wallet_id: str) -> dict[str, Any]:
    """A purchase as a reader's receipt shows it: its ledger line's facts and its receipt's state."""
    value = json.loads(raw_receipt)
    if isinstance(value, dict) and "seq" not in value:
        return {**value, "id": purchase_id}  # written whole, before receipts named their line
    extra: dict[str, Any] = {} if isinstance(value, int) else {k: v for k, v in value.items() if k != "seq"}
    entry = parse_entry(raw_line, wallet_id) if raw_line else None
    if entry is None or entry["ref"] != purchase_id:
        raise LookupError(f"purchase {purchase_id} of wallet {wallet_id} has no ledger line")
    charged = -entry["postings"][0]["amount"]
    return {
        "id": purchase_id,
        "site": entry["site"],
        "item": entry["item"],
        "kind": KIND_PASS if "expires_at" in extra else KIND_ITEM,
        "price": extra.pop("price", charged),
        "charged": charged,
        "currency": entry["currency"],
        "at": entry["at"],
        **extra,
    }


async def purchase_records(store: Store, wallet_id: str, receipts: dict[str, str]) -> list[dict[str, Any]]:
    """The receipts of ``receipts`` (purchase id → stored receipt), each with its ledger line's facts."""
    seqs = {pid: seq for pid, raw in receipts.items() if (seq := receipt_seq(raw)) is not None}
    led = keyspace.wallet_keys(wallet_id).ledger
    lines: dict[int, str] = {}
    if len(seqs) == 1:
        lines = {seq: await store.redis.lindex(led, seq - 1) for seq in seqs.values()}
    elif seqs:
        first, last = min(seqs.values()), max(seqs.values())
        lines = dict(enumerate(await store.redis.lrange(led, first - 1, last - 1), start=first))
    return [purchase_record(pid, raw, lines.get(seqs.get(pid, 0)), wallet_id) for pid, raw in receipts.items()]


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
        entry = parse_entry(raw, wallet_id)
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
