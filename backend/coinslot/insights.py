"""What a publisher learns about its items, counted without cookies and without personal data.

Per site, item and site day (``sitedays``), in one hash per day under the site's tag: the card
shown (once per page view), the button pressed, a 402 offered, a top-up started and paid, an
unlock by its access (charged, owned, pass, cap), a refund, and the money charged and given back.
Readers are counted per day in a HyperLogLog of their per-site pseudonym (``UnlockTokens.pseudonym``,
as the ledger export names them): Redis never sees a wallet id or an address here. Every day's keys
expire ``retention_days`` after the day ends.

Counting never holds a reader up: a handler hands a ``Note`` to ``Insights.note``, which only puts it
on a bounded queue (no Redis, no await); a task in each server process takes what gathered over
``GATHER_S``, tallies it per kind and minute, and adds the counts of each site's day in one script
call (``lua/insights_add.lua``). When the queue is full, or Redis fails, notes are dropped and
logged: the money has moved already, and the numbers are a view of it, not its record (the ledger is).

Beside the days, each site has the running sums of its tab (``coinslot.tabs``): an unlock that went below
zero notes what it lent; a credit that found the balance below zero (a paid top-up, a voucher, a refund)
is looked up in its wallet's ledger by the writer, which adds what it repaid to each site.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta

from coinslot import keyspace, tabs
from coinslot.catalog import Catalog, Site
from coinslot.errors import NotFound
from coinslot.refunds import Refunded
from coinslot.scripts import Script
from coinslot.sitedays import SiteDay, site_day
from coinslot.store import Store
from coinslot.tokens import Pseudonym

log = logging.getLogger("coinslot.insights")

DAY_S = 24 * 60 * 60
QUEUE_SIZE = 200_000  # notes waiting to be written (tens of MB at most); beyond, new ones are dropped (and logged)
# Notes gather this long before a write: under load one pipeline then carries thousands of notes,
# whose counts add up in memory first. Written note by note, counting halved unlocks per second.
GATHER_S = 0.2
COMMANDS_A_TRIP = 500  # counts added by one script call
ADD = Script("insights_add")
YIELD_EVERY = 200  # notes (or pseudonyms) handled between two turns of the event loop
MINUTE_MS = 60_000  # notes are tallied per minute: a site's day starts on a whole minute
TOPUP_ATTRIBUTION_S = 2 * DAY_S  # a checkout paid later than this (slow bank transfers) counts nowhere

SHOWN, PRESSED, OFFERED = "shown", "pressed", "offered"
TOPUP_STARTED, TOPUP_PAID = "topup_started", "topup_paid"
UNLOCKED, REFUNDED = "unlocked", "refunded"
TAB_LENT, CREDITED = "tab_lent", "credited"  # the tab's running sums (coinslot.tabs), not a day's counts
REVENUE, REFUNDED_AMOUNT = "revenue", "refunded_amount"  # minor units of the site's currency
ACCESSES = ("charged", "owned", "pass", "cap")  # what an unlock was: a sale, owned before, a pass, the cap
FUNNEL = (SHOWN, PRESSED, TOPUP_STARTED, TOPUP_PAID, UNLOCKED, REFUNDED)
COUNTS = (SHOWN, PRESSED, OFFERED, TOPUP_STARTED, TOPUP_PAID, UNLOCKED, REFUNDED, REVENUE, REFUNDED_AMOUNT) + tuple(
    f"{UNLOCKED}:{a}" for a in ACCESSES
)
TESTED = (SHOWN, PRESSED, UNLOCKED, REFUNDED)  # what a price test counts per variant (with revenue and refunds)
RARE = (TOPUP_STARTED, TOPUP_PAID, OFFERED, TAB_LENT, CREDITED)  # notes written one by one, not tallied
ITEM_SEPARATOR = "|"  # item ids never hold one (catalog.ITEM_ID)


@dataclass(frozen=True, slots=True)
class Note:
    """One thing that happened, as a handler saw it. ``wallet_id`` never leaves this process:
    the writer turns it into the site's pseudonym. A top-up names its site and item later, by
    ``topup_id`` (or its checkout ``session_id``), from the 402 that offered it, or else the site it was
    started from (item ""). A credit names its wallet's ledger entry by ``ref``."""

    event: str
    now_ms: int
    site: str = ""
    item: str = ""
    amount: int = 0
    access: str = ""
    wallet_id: str | None = None
    topup_id: str = ""
    session_id: str = ""
    offered_topups: tuple[str, ...] = ()
    ref: str = ""
    variant: str = ""  # the reader's variant of the item's price test (coinslot.pricetests), if it is under one
    test: int = 0  # that test's start (ms), which names its counts


@dataclass
class _Batch:
    counts: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    readers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    expire_at: dict[str, int] = field(default_factory=dict)
    attributions: dict[str, str] = field(default_factory=dict)
    tab: Counter[tuple[str, str]] = field(default_factory=Counter)  # (site, lent or repaid field): amount


class Insights:
    def __init__(self, store: Store, catalog: Catalog, pseudonym: Pseudonym, *, retention_days: int) -> None:
        self.store = store
        self.catalog = catalog
        self.pseudonym = pseudonym
        self.retention_s = retention_days * DAY_S
        self.queue: asyncio.Queue[Note] = asyncio.Queue(QUEUE_SIZE)
        self.dropped = 0

    def note(self, note: Note) -> None:
        """Count ``note`` soon; never waits, never raises."""
        try:
            self.queue.put_nowait(note)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:  # a line per thousand, not a flood while Redis is slow
                log.warning("insights queue full: %d notes dropped so far", self.dropped)

    async def run(self) -> None:
        """Write notes as they come, in batches, until cancelled."""
        while True:
            notes = [await self.queue.get()]
            await asyncio.sleep(GATHER_S)
            while not self.queue.empty():
                notes.append(self.queue.get_nowait())
            try:
                await self.write(notes)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("insights: %d notes could not be written; they are lost", len(notes))
            finally:
                for _ in notes:
                    self.queue.task_done()

    async def flush(self) -> None:
        """Wait until every note queued so far is written (tests, and a server shutting down)."""
        await self.queue.join()

    async def write(self, notes: Iterable[Note]) -> None:
        # Under load a write carries thousands of notes of a few kinds: they are tallied first (a
        # dict increment each), and the catalog, the site's day and the pseudonyms are looked up
        # once per kind, minute and reader.
        tally: Counter[tuple[str, str, str, str, int, str, int]] = Counter()
        amounts: Counter[tuple[str, str, str, str, int, str, int]] = Counter()
        wallets: dict[tuple[str, int], set[str]] = defaultdict(set)
        rare: list[Note] = []
        for n, note in enumerate(notes, start=1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # a long tally must not hold up the requests this process serves
            if note.event in RARE:
                rare.append(note)
                continue
            kind = (note.event, note.site, note.item, note.access, note.now_ms // MINUTE_MS, note.variant, note.test)
            tally[kind] += 1
            if note.amount:
                amounts[kind] += note.amount
            if note.wallet_id is not None:
                wallets[note.site, kind[4]].add(note.wallet_id)
        batch = _Batch()
        for note in rare:
            if note.event in (TAB_LENT, CREDITED):
                await self._tab(batch, note)
                continue
            if note.event in (TOPUP_STARTED, TOPUP_PAID):
                note = await self._attributed(note, batch)
            if (site := await self._known(note.site, note.item)) is not None:
                self._add(batch, site, note, 1)
        for kind, times in tally.items():
            event, site_id, item, access, minute, variant, test = kind
            if (site := await self._known(site_id, item)) is not None:
                note = Note(event, minute * MINUTE_MS, site_id, item, amounts[kind], access, variant=variant, test=test)
                self._add(batch, site, note, times)
        for (site_id, minute), ids in wallets.items():
            if (site := await self._known(site_id, "")) is not None:
                day = site_day(site.timezone, minute * MINUTE_MS)
                readers = keyspace.insights_readers_key(site.id, day.day)
                for n, wallet_id in enumerate(ids, start=1):
                    if n % YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    batch.readers[readers].add(self.pseudonym(site.id, wallet_id))
                batch.expire_at[readers] = self._expiry(day)
        for key, fields in _by_key(batch.counts).items():
            # One script call per day and a few hundred fields: no long hold on Redis or the loop.
            for i in range(0, len(fields), COMMANDS_A_TRIP):
                chunk = [part for pair in fields[i : i + COMMANDS_A_TRIP] for part in pair]
                await ADD(self.store.redis, [key], [batch.expire_at[key], *chunk])
        async with self.store.redis.pipeline(transaction=False) as pipe:
            for key, members in batch.readers.items():
                pipe.pfadd(key, *members)
                pipe.expireat(key, batch.expire_at[key])
            for topup_id, where in batch.attributions.items():
                pipe.set(keyspace.insights_topup_key(topup_id), where, ex=TOPUP_ATTRIBUTION_S)
            for (site_id, name), amount in batch.tab.items():
                pipe.hincrby(keyspace.insights_tab_key(site_id), name, amount)  # a running sum: no expiry
            await pipe.execute()

    async def _known(self, site_id: str, item_id: str) -> Site | None:
        """The site, if it and the item exist: only what the catalog knows is counted (made-up ids
        must not grow Redis)."""
        if not site_id:
            return None
        try:
            site = await self.catalog.site(site_id)
            if item_id:
                await self.catalog.item(site_id, item_id)
        except NotFound:
            return None
        return site

    def _add(self, batch: _Batch, site: Site, note: Note, times: int) -> None:
        """Count ``note`` ``times`` (its amount is theirs together)."""
        day = site_day(site.timezone, note.now_ms)
        key = keyspace.insights_day_key(site.id, day.day)
        batch.expire_at[key] = self._expiry(day)
        counted: Counter[str] = Counter()
        if note.event == UNLOCKED:
            counted.update({UNLOCKED: times, f"{UNLOCKED}:{note.access}": times})
            if note.amount:
                counted[REVENUE] += note.amount
        elif note.event == REFUNDED:
            counted.update({REFUNDED: times, REFUNDED_AMOUNT: note.amount})
        else:
            counted[note.event] += times
        if note.event == OFFERED:
            for topup_id in note.offered_topups:
                batch.attributions[topup_id] = site.id + ITEM_SEPARATOR + note.item
        batch.counts[key, ""].update(counted)
        if note.item:
            batch.counts[key, note.item].update(counted)
        if note.variant and note.test and note.event in TESTED:
            # A test's counts live as long as a day's do, from the day of their last count.
            test = keyspace.price_test_key(site.id, note.item, note.test)
            batch.expire_at[test] = batch.expire_at[key]
            batch.counts[test, ""].update(
                {f"{note.variant}:{name}": n for name, n in counted.items() if ":" not in name}
            )

    def _expiry(self, day: SiteDay) -> int:
        return day.ends_ms // 1000 + self.retention_s

    async def _tab(self, batch: _Batch, note: Note) -> None:
        """Add what an unlock lent, or what a credit repaid (read from its wallet's ledger), to the tab's sums."""
        if note.event == TAB_LENT:
            if await self._known(note.site, "") is not None:
                batch.tab[note.site, keyspace.TAB_LENT_FIELD] += note.amount
            return
        if note.wallet_id is None:
            return
        for site_id, amount in (await tabs.repaid(self.store, note.wallet_id, note.ref)).items():
            if await self._known(site_id, "") is not None:
                batch.tab[site_id, keyspace.TAB_REPAID_FIELD] += amount

    async def _attributed(self, note: Note, batch: _Batch) -> Note:
        """The note with the site and item whose 402 offered its top-up; if no 402 did, the site the top-up
        was started from (item ""), if any. ``batch`` holds what this write attributes and has not stored
        yet. A paid top-up also repays the tab of a wallet below zero (``_tab``)."""
        topup_id, wallet_id = note.topup_id, note.wallet_id
        if note.session_id:
            found = await self.store.redis.get(keyspace.checkout_session_key(note.session_id))
            if found:
                wallet_id, topup_id = found.split(" ")
                paid = keyspace.checkout_credit_ref(note.session_id)
                await self._tab(batch, Note(CREDITED, note.now_ms, wallet_id=wallet_id, ref=paid))
        where = batch.attributions.get(topup_id) if topup_id else None
        if where is None and topup_id:
            where = await self.store.redis.get(keyspace.insights_topup_key(topup_id))
        if where is not None:
            site, _, item = where.partition(ITEM_SEPARATOR)
            return Note(note.event, note.now_ms, site, item)
        site = note.site
        if not site and wallet_id is not None and topup_id:
            site = await self.store.redis.hget(keyspace.wallet_keys(wallet_id).topup(topup_id), "site") or ""
        return Note(note.event, note.now_ms, site)


def refund_notes(done: Refunded, now_ms: int, variant: str = "", test: int = 0) -> list[Note]:
    """A refund's notes: its count (in a price test's too, with ``variant`` and ``test``), and when it
    found its wallet below zero, the tab it repaid."""
    notes = [Note(REFUNDED, now_ms, done.site, done.item, done.refunded, variant=variant, test=test)]
    if done.wallet_id and done.balance - done.refunded < 0:
        notes.append(Note(CREDITED, now_ms, wallet_id=done.wallet_id, ref=done.purchase_id))
    return notes


# Reading, for the dashboard ---------------------------------------------------------------


def _by_key(counts: dict[tuple[str, str], Counter[str]]) -> dict[str, list[tuple[str, int]]]:
    """Each day key's fields and increments: a site's total, and each item's (``name|item``)."""
    fields: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (key, item), counted in counts.items():
        fields[key] += [(name if not item else name + ITEM_SEPARATOR + item, n) for name, n in counted.items()]
    return fields


def last_days(site: Site, n: int, *, now_ms: int) -> list[str]:
    """The site's last ``n`` days, oldest first, today included (ISO dates)."""
    today = date.fromisoformat(site_day(site.timezone, now_ms).day)
    return [(today - timedelta(days=i)).isoformat() for i in range(n - 1, -1, -1)]


@dataclass(frozen=True, slots=True)
class Day:
    day: str
    counts: dict[str, int]  # by COUNTS name, for the whole site
    readers: int  # distinct readers that day (HyperLogLog: within about 1 %)


async def site_days(store: Store, site: Site, days: list[str]) -> list[Day]:
    """The site's totals on each of ``days``: one HMGET and one PFCOUNT a day, in one pipeline."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hmget(keyspace.insights_day_key(site.id, day), list(COUNTS))
            # execute_command: redis-py refuses pfcount by name in a Cluster pipeline, as it may span slots.
            pipe.execute_command("PFCOUNT", keyspace.insights_readers_key(site.id, day))
        replies = await pipe.execute()
    return [
        Day(day, {name: int(v or 0) for name, v in zip(COUNTS, replies[2 * i], strict=True)}, int(replies[2 * i + 1]))
        for i, day in enumerate(days)
    ]


async def readers_over(store: Store, site: Site, days: list[str]) -> int:
    """Distinct readers over ``days`` together (a reader of several days counts once)."""
    # One tag for every day of the site, so a Cluster answers the union on one node.
    return int(await store.redis.pfcount(*(keyspace.insights_readers_key(site.id, d) for d in days)))


async def item_totals(store: Store, site: Site, days: list[str]) -> dict[str, Counter[str]]:
    """Each item's counts summed over ``days`` (items with no count at all are absent)."""
    async with store.redis.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(keyspace.insights_day_key(site.id, day))
        replies = await pipe.execute()
    totals: dict[str, Counter[str]] = defaultdict(Counter)
    for fields in replies:
        for name, value in fields.items():
            counted, sep, item = name.partition(ITEM_SEPARATOR)
            if sep:
                totals[item][counted] += int(value)
    return totals
