"""Publisher webhooks in one server process: signatures, retries, the log, SSRF, and the unlock's speed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from coinslot import hookevents, hooks
from coinslot.clock import FrozenClock
from coinslot.hookdelivery import Deliverer
from coinslot.keyring import KeyRing
from coinslot.store import Store
from receiver import Post, receiver

from api import Api, auth
from conftest import make_settings, running_app


@pytest.fixture
async def hook_client(
    tmp_path: Path, store: Store, clock: FrozenClock, keyring: KeyRing
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with loopback endpoints allowed (as in test mode) and retries 50 ms apart on its clock."""
    settings = make_settings(tmp_path, webhooks_allow_private=True, webhook_first_retry=0.05)
    async with running_app(settings, store, clock, keyring) as c:
        yield c


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def verify(post: Post, secret: str, tolerance_s: int | None = None) -> bool:
    """Stripe's scheme, checked here without coinslot's code: HMAC-SHA256 of "t.body" in any v1."""
    pairs = [part.split("=", 1) for part in post.headers["coinslot-signature"].split(",")]
    timestamp = next(v for k, v in pairs if k == "t")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + post.body, hashlib.sha256).hexdigest()
    if tolerance_s is not None and abs(time.time() - int(timestamp)) > tolerance_s:
        return False
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in pairs)


async def add_endpoint(client: httpx.AsyncClient, secret_key: str, url: str, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/admin/webhooks", json={"url": url, **body}, headers=auth(secret_key))
    assert r.status_code == 201, r.text
    endpoint: dict[str, Any] = r.json()
    return endpoint


async def events(client: httpx.AsyncClient, secret_key: str) -> list[dict[str, Any]]:
    r = await client.get("/v1/admin/webhooks/events", headers=auth(secret_key))
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    return found


async def test_unlocks_and_refunds_are_posted_signed_and_name_the_reader_only_by_pseudonym(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site = await api.site(refund_window=600)
    await api.item(site, "a1", 19)
    await api.item(site, "a2", 25)
    wallet = await api.wallet()
    wallet_id = await api.wallet_id(wallet)
    await api.fund(site, wallet, 100)
    with receiver() as rx:
        endpoint = await add_endpoint(hook_client, site[1], rx.url)
        assert set(endpoint) == {"id", "url", "events", "created", "secret"}
        bought = (await api.unlock(wallet, site[0], "a1", price=19)).json()
        await until(lambda: len(rx.posts) == 1)
        post = rx.posts[0]
        assert verify(post, endpoint["secret"])
        assert not verify(post, endpoint["secret"] + "x")
        assert post.headers["content-type"] == "application/json"
        assert post.headers["coinslot-event-id"] == post.event["id"]
        assert post.event["type"] == "unlock.created"
        assert post.event["livemode"] is False
        data = post.event["data"]
        assert (data["purchase_id"], data["site"], data["item"], data["charged"], data["currency"]) == (
            bought["purchase_id"],
            site[0],
            "a1",
            19,
            "EUR",
        )
        assert data["access"] == "purchase" and data["wallet"]
        assert wallet_id not in post.body.decode()

        # Rotation: for a day both secrets sign, each in a v1 of its own.
        r = await hook_client.post(f"/v1/admin/webhooks/{endpoint['id']}/rotate-secret", headers=auth(site[1]))
        assert r.status_code == 200, r.text
        new_secret = r.json()["secret"]
        assert r.json()["previous_secret_signs_until"] == clock.now_ms() // 1000 + 24 * 3600
        await api.unlock(wallet, site[0], "a2", price=25)
        await until(lambda: len(rx.posts) == 2)
        assert verify(rx.posts[1], new_secret) and verify(rx.posts[1], endpoint["secret"])
        assert rx.posts[1].event["data"]["wallet"] == data["wallet"]  # the same reader, the same pseudonym

        r = await hook_client.post(f"/v1/purchases/{bought['purchase_id']}/refund", headers=auth(wallet))
        assert r.status_code == 200, r.text
        await until(lambda: len(rx.posts) == 3)
        refunded = rx.posts[2].event
        assert refunded["type"] == "purchase.refunded"
        assert refunded["data"]["purchase_id"] == bought["purchase_id"] and refunded["data"]["refunded"] == 19
        clock.advance(24 * 3600 + 1)  # the old secret has stopped signing
        r = await hook_client.post(f"/v1/admin/webhooks/{endpoint['id']}/ping", headers=auth(site[1]))
        assert r.status_code == 202
        await until(lambda: len(rx.posts) == 4)
        assert verify(rx.posts[3], new_secret) and not verify(rx.posts[3], endpoint["secret"])
        assert rx.posts[3].event["type"] == "test.ping"


async def test_a_receiver_that_fails_three_times_gets_the_event_once_per_attempt_and_the_log_shows_them(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site = await api.site()
    with receiver(fail_first=3) as rx:
        endpoint = await add_endpoint(hook_client, site[1], rx.url)
        r = await hook_client.post(f"/v1/admin/webhooks/{endpoint['id']}/ping", headers=auth(site[1]))
        event_id = r.json()["event_id"]
        for n in range(1, 5):
            await until(lambda n=n: len(rx.posts) == n)  # type: ignore[misc]
            while len((await events(hook_client, site[1]))[0]["attempts"]) < n:  # the retry is scheduled
                await asyncio.sleep(0.02)
            clock.advance(1)  # and now due (0.05 s × 2^(n-1))
        await asyncio.sleep(0.3)
        assert rx.ids() == [event_id] * 4  # once per attempt, the same id each time
        [logged] = await events(hook_client, site[1])
        assert logged["id"] == event_id and logged["deliveries"] == {endpoint["id"]: "delivered"}
        attempts = logged["attempts"]
        assert [(a["attempt"], a["status"], a["outcome"]) for a in attempts] == [
            (1, 500, "retrying"),
            (2, 500, "retrying"),
            (3, 500, "retrying"),
            (4, 200, "delivered"),
        ]
        assert all(a["endpoint"] == endpoint["id"] for a in attempts)
        assert attempts[0]["next_attempt_at"] >= attempts[0]["at"]

        # Send again: the same event, the same id, one attempt more in the log.
        r = await hook_client.post(f"/v1/admin/webhooks/events/{event_id}/resend", headers=auth(site[1]))
        assert r.status_code == 202 and r.json()["endpoints"] == [endpoint["id"]]
        await until(lambda: len(rx.posts) == 5)
        assert rx.posts[4].body == rx.posts[3].body
        [logged] = await events(hook_client, site[1])
        assert [a["attempt"] for a in logged["attempts"]] == [1, 2, 3, 4, 5]
    r = await hook_client.post("/v1/admin/webhooks/events/evt_nope/resend", headers=auth(site[1]))
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-webhook-event")


async def test_a_delivery_is_retried_for_24_hours_then_marked_failed(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site = await api.site()
    with receiver(fail_first=1000) as rx:
        endpoint = await add_endpoint(hook_client, site[1], rx.url)
        await hook_client.post(f"/v1/admin/webhooks/{endpoint['id']}/ping", headers=auth(site[1]))
        await until(lambda: len(rx.posts) == 1)
        for _ in range(50):  # the log records the first attempt just after the post
            logged = await events(hook_client, site[1])
            if logged[0]["attempts"]:
                break
            await asyncio.sleep(0.02)
        assert logged[0]["deliveries"] == {endpoint["id"]: "retrying"}
        clock.advance(24 * 3600 - 0.05)  # the retry is due; the one after it (0.1 s later) would come too late
        await until(lambda: len(rx.posts) == 2)
        for _ in range(50):
            logged = await events(hook_client, site[1])
            if len(logged[0]["attempts"]) == 2:
                break
            await asyncio.sleep(0.02)
        assert logged[0]["deliveries"] == {endpoint["id"]: "failed"}
        assert [a["outcome"] for a in logged[0]["attempts"]] == ["retrying", "failed"]
        clock.advance(3600)
        await asyncio.sleep(0.3)
        assert len(rx.posts) == 2


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hooks",  # loopback
        "https://localhost/hooks",  # a name for loopback
        "https://10.1.2.3/hooks",  # private
        "https://169.254.169.254/latest/meta-data",  # link-local: a cloud's metadata service
        "https://[::1]/hooks",
        "https://[::ffff:192.168.0.1]/hooks",  # IPv4-mapped private
        "http://example.com/hooks",  # http beyond loopback
        "ftp://example.com/hooks",
        "https://user:pw@example.com/hooks",
    ],
)
async def test_an_endpoint_on_a_private_address_or_without_https_is_refused(
    standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock, url: str
) -> None:
    api = Api(standalone_client, standalone_store, clock)
    site = await api.site()
    r = await standalone_client.post("/v1/admin/webhooks", json={"url": url}, headers=auth(site[1]))
    assert r.status_code == 422, r.text
    assert r.json()["type"].endswith("/webhook-url-refused")
    assert (await standalone_client.get("/v1/admin/webhooks", headers=auth(site[1]))).json() == {"endpoints": []}


def test_only_global_unicast_addresses_are_public() -> None:
    inward = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0"]
    inward += ["224.0.0.1", "::1", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::"]
    assert [a for a in inward if hooks.is_public_address(a)] == []
    assert all(hooks.is_public_address(a) for a in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])


async def test_the_address_is_checked_again_at_delivery(standalone_store: Store, clock: FrozenClock) -> None:
    """An endpoint that passed when registered but resolves inward now (DNS rebinding) is not posted to."""
    with receiver() as rx:
        endpoint, _secret = await hooks.add_endpoint(
            standalone_store, "site_x", rx.url, None, allow_private=True, now_ms=clock.now_ms()
        )
        strict = Deliverer(
            standalone_store,
            clock,
            lambda site, wallet: "p",
            livemode=False,
            allow_private=False,
            first_retry_s=1,
            timeout_s=2,
        )
        try:
            outcome = await strict.post(endpoint, b"{}", "evt_x")
        finally:
            await strict.close()
        assert not outcome.ok and outcome.status is None and "loopback" in (outcome.error or "")
        assert rx.posts == []


async def test_a_receiver_that_hangs_does_not_slow_unlocks(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site = await api.site()
    for n in range(10):
        await api.item(site, f"i{n}", 10)
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    with receiver(hang_s=30) as rx:
        await add_endpoint(hook_client, site[1], rx.url)
        timings = []
        for n in range(10):
            started = time.monotonic()
            r = await api.unlock(wallet, site[0], f"i{n}")
            timings.append(time.monotonic() - started)
            assert r.status_code == 200, r.text
            if n == 0:
                await until(lambda: rx.arrived.is_set())  # the first delivery now hangs in the receiver
        assert len(rx.posts) >= 1 and not rx.released.is_set()
        assert max(timings) < 0.5, timings
        assert (
            await hookevents.emit(store, "site_without_endpoints", "unlock.created", {}, wallet_id=None, now_ms=0)
            is None
        )


async def test_endpoints_are_listed_without_secrets_and_removed(
    hook_client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    api = Api(hook_client, store, clock)
    site, other = await api.site(), await api.site()
    endpoint = await add_endpoint(hook_client, site[1], "http://127.0.0.1:9/a", events=["topup.paid"])
    assert endpoint["events"] == ["topup.paid"]
    listed = (await hook_client.get("/v1/admin/webhooks", headers=auth(site[1]))).json()["endpoints"]
    assert listed == [{k: v for k, v in endpoint.items() if k != "secret"}]
    r = await hook_client.delete(f"/v1/admin/webhooks/{endpoint['id']}", headers=auth(other[1]))
    assert r.status_code == 404 and r.json()["type"].endswith("/unknown-webhook-endpoint")
    r = await hook_client.delete(f"/v1/admin/webhooks/{endpoint['id']}", headers=auth(site[1]))
    assert r.status_code == 200
    assert (await hook_client.get("/v1/admin/webhooks", headers=auth(site[1]))).json() == {"endpoints": []}
    r = await hook_client.post(
        "/v1/admin/webhooks", json={"url": "http://127.0.0.1:9/", "events": ["x"]}, headers=auth(site[1])
    )
    assert r.status_code == 422
