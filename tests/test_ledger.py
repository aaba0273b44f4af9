"""The ledger: double-entry postings, ``reconcile`` and its command, the publisher's export (money rule 10)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import cli, ledger
from coinslot import keyspace as keys
from coinslot.clock import FrozenClock
from coinslot.keyring import KeyRing
from coinslot.ledger import parse_entry
from coinslot.store import Store

from api import Api, auth
from conftest import make_settings, running_app


@pytest.fixture
def api(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> Api:
    return Api(client, store, clock)


async def top_up(client: httpx.AsyncClient, token: str, amount: int) -> str:
    """Open a test-mode checkout and pay it; returns the checkout session id."""
    r = await client.post("/v1/topups", json={"amount": amount}, headers=auth(token))
    assert r.status_code == 201, r.text
    session: str = r.json()["checkout_url"].rsplit("/", 1)[-1]
    paid = await client.post(f"/checkout/test/{session}")
    assert paid.status_code == 200, paid.text
    return session


async def entries(store: Store, wid: str) -> list[dict[str, Any]]:
    return [parse_entry(raw, wid) or {} for raw in await store.redis.lrange(keys.wallet_keys(wid).ledger, 0, -1)]


async def test_every_kind_of_entry_carries_both_sides_and_sums_to_zero(
    api: Api, client: httpx.AsyncClient, store: Store
) -> None:
    site = await api.site()
    await api.item(site, "article-42", 19)
    token = await api.wallet()
    wid = await api.wallet_id(token)
    code = await api.voucher(site, 100)
    assert (await api.redeem(token, code)).status_code == 200
    session = await top_up(client, token, 500)
    assert (await api.unlock(token, site[0], "article-42")).status_code == 200

    voucher, topup, unlock = await entries(store, wid)

    me = "wallet:" + wid
    assert (voucher["kind"], voucher["site"], voucher["balance"]) == ("voucher", site[0], 100)
    assert voucher["postings"] == [
        {"account": me, "amount": 100},
        {"account": f"site:{site[0]}:promotions", "amount": -100},
    ]
    assert (topup["kind"], topup["ref"], topup["balance"]) == ("topup", "cs:" + session, 600)
    assert topup["postings"] == [{"account": me, "amount": 500}, {"account": "topup:clearing", "amount": -500}]
    assert (unlock["kind"], unlock["site"], unlock["item"], unlock["balance"]) == ("unlock", site[0], "article-42", 581)
    assert unlock["postings"] == [{"account": me, "amount": -19}, {"account": f"site:{site[0]}:revenue", "amount": 19}]
    for entry in (voucher, topup, unlock):
        assert sum(p["amount"] for p in entry["postings"]) == 0
        assert all(type(p["amount"]) is int for p in entry["postings"])
        assert entry["currency"] == "EUR"
    assert [e["seq"] for e in (voucher, topup, unlock)] == [1, 2, 3]


async def test_reconcile_is_clean_after_normal_traffic(api: Api, client: httpx.AsyncClient, store: Store) -> None:
    site = await api.site(tab_limit=100)
    other = await api.site()
    for name, price in (("a", 19), ("b", 60), ("free", 0)):
        await api.item(site, name, price)
    await api.item(other, "x", 30)
    one, two, idle = await api.wallet(), await api.wallet(), await api.wallet()
    await api.fund(site, one, 50)
    session = await top_up(client, one, 200)
    assert (await client.post(f"/checkout/test/{session}")).status_code == 200  # paid twice, credited once
    assert (await api.unlock(one, site[0], "a", key="k1")).json()["charged"] == 19
    assert (await api.unlock(one, site[0], "a", key="k1")).json()["charged"] == 19  # replay
    assert (await api.unlock(one, site[0], "a")).json()["charged"] == 0  # owned
    assert (await api.unlock(one, site[0], "free")).json()["charged"] == 0
    assert (await api.unlock(one, other[0], "x")).json()["charged"] == 30
    assert (await api.unlock(two, site[0], "b")).json()["balance"] == -60  # on tab
    assert (await api.unlock(two, other[0], "x")).status_code == 402

    report = await ledger.reconcile(store)

    assert report.clean, report.problems
    assert (report.wallets, report.entries) == (3, 6)
    assert report.accounts[f"site:{site[0]}:revenue"]["EUR"] == 19 + 0 + 60
    assert report.accounts[f"site:{other[0]}:revenue"]["EUR"] == 30
    assert report.accounts[f"site:{site[0]}:promotions"]["EUR"] == -50
    assert report.accounts["topup:clearing"]["EUR"] == -200
    balances = [await api.balance(w) for w in (one, two, idle)]
    assert balances == [50 + 200 - 19 - 30, -60, 0]
    assert report.accounts["wallets"]["EUR"] == sum(balances)
    assert sum(sum(by_currency.values()) for by_currency in report.accounts.values()) == 0


async def _change_balance(store: Store, wid: str) -> None:
    await store.redis.hincrby(keys.wallet_key(wid), "balance", 7)


async def _remove_entry(store: Store, wid: str) -> None:
    await store.redis.lpop(keys.wallet_keys(wid).ledger)


async def _unbalance_entry(store: Store, wid: str) -> None:
    led = keys.wallet_keys(wid).ledger
    # Written out as JSON: an unlock's compact line implies balanced postings, a JSON entry may not.
    entry = ledger.parse_entry(await store.redis.lindex(led, -1), wid) or {}
    entry["postings"][1]["amount"] += 1  # the site's side only: the wallet's own replay still matches
    await store.redis.lset(led, -1, json.dumps(entry))


TAMPERINGS: dict[str, Callable[[Store, str], Any]] = {
    "balance changed behind the ledger": _change_balance,
    "entry removed": _remove_entry,
    "postings not summing to zero": _unbalance_entry,
}


async def _two_wallets_with_traffic(api: Api) -> tuple[str, str]:
    site = await api.site()
    await api.item(site, "a", 19)
    wallets = []
    for _ in range(2):
        token = await api.wallet()
        await api.fund(site, token, 50)
        assert (await api.unlock(token, site[0], "a")).status_code == 200
        wallets.append(await api.wallet_id(token))
    return wallets[0], wallets[1]


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
async def test_reconcile_reports_tampering_naming_the_wallet(
    api: Api, store: Store, tamper: Callable[[Store, str], Any]
) -> None:
    victim, bystander = await _two_wallets_with_traffic(api)
    assert (await ledger.reconcile(store)).clean

    await tamper(store, victim)
    report = await ledger.reconcile(store)

    assert not report.clean
    assert report.as_dict()["clean"] is False
    assert report.problems
    assert all(p.startswith(f"wallet:{victim}") for p in report.problems), report.problems
    assert not any(bystander in p for p in report.problems)


GARBLED = {"amount as a string": None, "not JSON": "{not json", "unlock line cut short": "u|2|31|1700000000000|pur_x"}


@pytest.mark.parametrize("garble", GARBLED)
async def test_reconcile_reports_a_garbled_entry_instead_of_crashing(api: Api, store: Store, garble: str) -> None:
    victim, _ = await _two_wallets_with_traffic(api)
    led = keys.wallet_keys(victim).ledger
    entry = ledger.parse_entry(await store.redis.lindex(led, -1), victim) or {}
    entry["postings"][1]["amount"] = str(entry["postings"][1]["amount"])
    await store.redis.lset(led, -1, GARBLED[garble] or json.dumps(entry))

    report = await ledger.reconcile(store)

    assert not report.clean
    assert any(p.startswith(f"wallet:{victim}") for p in report.problems)


@pytest.fixture
async def standalone_api(
    tmp_path: Path, standalone_store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[Api]:
    async with running_app(make_settings(tmp_path), standalone_store, clock, keyring) as c:
        yield Api(c, standalone_store, clock)


async def run_reconcile_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, url: str
) -> tuple[int, dict[str, Any]]:
    monkeypatch.setenv("COINSLOT_REDIS_URL", url)
    monkeypatch.chdir(tmp_path)  # no stray .env
    capsys.readouterr()
    # The command runs its own event loop, so it gets a thread of its own.
    code = await asyncio.to_thread(cli.main, ["reconcile"])
    out = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out)
    return code, report


async def test_reconcile_command_exits_0_when_clean_and_1_after_tampering(
    standalone_api: Api,
    standalone_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    victim, _ = await _two_wallets_with_traffic(standalone_api)

    code, report = await run_reconcile_command(monkeypatch, capsys, tmp_path, standalone_url)
    assert code == 0
    assert (report["clean"], report["wallets"], report["entries"], report["problems"]) == (True, 2, 4, [])

    await _change_balance(standalone_api.store, victim)
    code, report = await run_reconcile_command(monkeypatch, capsys, tmp_path, standalone_url)
    assert code == 1
    assert report["clean"] is False
    assert report["problems"] and all(victim in p for p in report["problems"])


async def _export(client: httpx.AsyncClient, site: tuple[str, str], fmt: str) -> httpx.Response:
    r = await client.get("/v1/admin/ledger", params={"format": fmt}, headers={"Authorization": f"Bearer {site[1]}"})
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    return r


async def test_ledger_export_has_the_sites_entries_only_under_a_pseudonym(api: Api, client: httpx.AsyncClient) -> None:
    site, other = await api.site(), await api.site()
    for s in (site, other):
        await api.item(s, "a", 19)
        await api.item(s, "b", 31)
    reader = await api.wallet()
    wid = await api.wallet_id(reader)
    await api.fund(site, reader, 100)
    await api.fund(other, reader, 100)
    await top_up(client, reader, 200)
    for s in (site, other):
        for name in ("a", "b"):
            assert (await api.unlock(reader, s[0], name)).status_code == 200

    jsonl = await _export(client, site, "jsonl")
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    as_csv = await _export(client, site, "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))

    assert jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert sorted(e["kind"] for e in lines) == ["unlock", "unlock", "voucher"]
    for text in (jsonl.text, as_csv.text):
        assert wid not in text
        assert reader not in text
        assert other[0] not in text
        assert "topup:clearing" not in text
    aliases = {e["wallet"] for e in lines}
    assert len(aliases) == 1
    (alias,) = aliases
    for e in lines:
        assert {p["account"] for p in e["postings"]} <= {alias, f"site:{site[0]}:revenue", f"site:{site[0]}:promotions"}
        assert sum(p["amount"] for p in e["postings"]) == 0
        assert "balance" not in e
    assert {r["wallet"] for r in rows} == {alias}
    other_alias = {json.loads(line)["wallet"] for line in (await _export(client, other, "jsonl")).text.splitlines()}
    assert other_alias.isdisjoint(aliases)  # one reader, unlinkable across publishers

    revenue = sum(int(r["amount"]) for r in rows if r["account"] == f"site:{site[0]}:revenue")
    promotions = sum(int(r["amount"]) for r in rows if r["account"] == f"site:{site[0]}:promotions")
    assert revenue == 19 + 31
    stats = await client.get("/v1/admin/stats", headers={"Authorization": f"Bearer {site[1]}"})
    assert stats.status_code == 200, stats.text
    assert stats.json() == {
        "site": site[0],
        "currency": "EUR",
        "revenue": revenue,
        "promotions": promotions,
        "unlocks": 2,
        "refunds": 0,
        "items": {"a": {"unlocks": 1, "refunds": 0, "revenue": 19}, "b": {"unlocks": 1, "refunds": 0, "revenue": 31}},
    }
    assert promotions == -100
