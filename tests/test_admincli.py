"""The admin commands (coinslot.admincli) against a real `coinslot serve`: what they print is what the
admin API answers, on the same data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from receiver import receiver

from test_cli import run_cli, serving


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serving(tmp_path) as (url, data, _):
        yield url, data


def cli(args: list[str], data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    code, out = run_cli(args, data, monkeypatch, capsys)
    assert code == 0, out
    return json.loads(out)


def test_the_admin_commands_do_what_the_admin_api_does(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, data = server

    def run(*args: str) -> Any:
        return cli(list(args), data, monkeypatch, capsys)

    secret = run("site", "create", "--name", "P", "--origin", "http://localhost:8001", "--id", "site_adm")["secret_key"]
    admin = {"Authorization": f"Bearer {secret}"}
    for name, price in (("b", 30), ("a", 19), ("c", 10)):
        run("item", "put", "site_adm", name, "--title", name.upper(), "--price", str(price))

    changed = run("site", "update", "site_adm", "--origin", "https://news.example", "--daily-cap", "300")
    assert changed["origins"] == ["https://news.example"] and changed["daily_cap"] == 300
    assert run("site", "show", "site_adm") == httpx.get(f"{url}/v1/admin/site", headers=admin).json() == changed
    code, out = run_cli(["site", "update", "site_adm", "--timezone", "Nowhere/Else"], data, monkeypatch, capsys)
    assert code == 2 and "IANA" in out

    first = run("item", "list", "site_adm", "--limit", "2")
    assert [i["item"] for i in first["items"]] == ["a", "b"] and first["next_cursor"] == "b"
    rest = run("item", "list", "site_adm", "--cursor", "b")
    assert [i["item"] for i in rest["items"]] == ["c"] and rest["next_cursor"] is None
    assert first == httpx.get(f"{url}/v1/admin/items?limit=2", headers=admin).json()

    code = run("voucher", "create", "site_adm", "--amount", "100", "--uses", "2")["code"]
    token = httpx.post(f"{url}/v1/wallets", json={}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{url}/v1/vouchers/redeem", json={"code": code}, headers=bearer).raise_for_status()
    listed = run("voucher", "list", "site_adm")["vouchers"]
    assert [(v["code"], v["uses_left"], v["disabled"]) for v in listed] == [(code, 1, False)]
    assert run("voucher", "disable", "site_adm", code)["disabled"] is True
    other = httpx.post(f"{url}/v1/wallets", json={}).json()["token"]
    refused = httpx.post(f"{url}/v1/vouchers/redeem", json={"code": code}, headers={"Authorization": f"Bearer {other}"})
    assert refused.status_code == 409 and refused.json()["type"].endswith("/voucher-disabled")

    assert run("item", "archive", "site_adm", "a")["archived"] is True
    unlock = {"site": "site_adm", "item": "a"}
    assert httpx.post(f"{url}/v1/unlocks", json=unlock, headers=bearer).status_code == 410
    assert run("item", "restore", "site_adm", "a")["archived"] is False
    assert httpx.post(f"{url}/v1/unlocks", json=unlock, headers=bearer).json()["charged"] == 19

    # The same readers' pseudonyms as the server gives: the command derives them from the same secret.
    sales = run("purchases", "site_adm")
    assert [(s["kind"], s["item"], s["amount"]) for s in sales["sales"]] == [("purchase", "a", 19)]
    assert sales == httpx.get(f"{url}/v1/admin/purchases", headers=admin).json()

    # A price test started by the command is the one the server shows and charges.
    started = run("item", "price-test", "site_adm", "c", "--start", "15")
    assert started["running"] is True and started["test_price"] == 15
    shown = run("item", "price-test", "site_adm", "c")
    assert shown == httpx.get(f"{url}/v1/admin/items/c/price-test", headers=admin).json()
    price = httpx.get(f"{url}/v1/offers?site=site_adm&items=c", headers=bearer).json()["items"][0]["price"]
    bought = httpx.post(f"{url}/v1/unlocks", json={"site": "site_adm", "item": "c", "price": price}, headers=bearer)
    assert price in (10, 15) and bought.json()["charged"] == price
    assert run("item", "price-test", "site_adm", "c", "--keep", "15") == {"item": "c", "running": False, "price": 15}
    code, out = run_cli(["item", "price-test", "site_adm", "c", "--keep", "15"], data, monkeypatch, capsys)
    assert code != 0 and "not under a price test" in out


def test_the_webhook_commands_do_what_the_webhook_api_does(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, data = server

    def run(*args: str) -> Any:
        return cli(list(args), data, monkeypatch, capsys)

    secret = run("site", "create", "--name", "H", "--origin", "http://localhost:8001", "--id", "site_hk")["secret_key"]
    admin = {"Authorization": f"Bearer {secret}"}
    with receiver() as rx:
        added = run("webhook", "add", "site_hk", rx.url, "--event", "test.ping")
        assert added["secret"].startswith("whsec_") and added["events"] == ["test.ping"]
        listed = run("webhook", "list", "site_hk")
        assert listed == httpx.get(f"{url}/v1/admin/webhooks", headers=admin).json()
        assert "secret" not in json.dumps(listed["endpoints"])  # a secret is shown once, when made

        # Queued by the command, posted by the running server's worker.
        event = run("webhook", "ping", "site_hk", added["id"])["event_id"]
        deadline = time.monotonic() + 10
        while event not in rx.ids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rx.ids() == [event]
        resent = run("webhook", "resend", "site_hk", event)
        assert resent == {"event_id": event, "endpoints": [added["id"]]}
        while len(rx.ids()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rx.ids() == [event, event]  # the same event id again: receivers de-duplicate by it

        logged = run("webhook", "log", "site_hk")["events"]
        assert [e["id"] for e in logged] == [event] and logged[0]["type"] == "test.ping"
        assert run("webhook", "remove", "site_hk", added["id"]) == {"id": added["id"], "deleted": True}
        assert run("webhook", "list", "site_hk") == {"endpoints": []}
