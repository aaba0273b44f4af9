"""Bad input gets a problem document with a stable type: never a 500, never a moved cent."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.datastructures import Headers
from starlette.types import Message, Scope

from coinslot.clock import FrozenClock
from coinslot.http.problems import _IndexedHeaders
from coinslot.store import Store

from api import Api, auth

PROBLEM = "application/problem+json"


@pytest.fixture
def client(standalone_client: httpx.AsyncClient) -> httpx.AsyncClient:
    return standalone_client


@pytest.fixture
def api(standalone_client: httpx.AsyncClient, standalone_store: Store, clock: FrozenClock) -> Api:
    return Api(standalone_client, standalone_store, clock)


async def test_unknown_field_is_422_naming_it(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 10)
    wallet = await api.wallet()

    r = await api.unlock(wallet, site[0], "a", amount=10)

    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/invalid-body")
    assert [e["field"] for e in r.json()["errors"]] == ["amount"]


@pytest.mark.parametrize("currency", ["XXX", "XTS", "ZZZ", "DEM"])
async def test_a_wallet_holds_only_a_currency_in_use(client: httpx.AsyncClient, currency: str) -> None:
    r = await client.post("/v1/wallets", json={"currency": currency})
    assert r.status_code == 400
    assert r.json()["type"].endswith("/bad-request") and "currency in use" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"site": "s", "item": "a", "price": "19"}, "price"),
        ({"site": "s", "item": "a", "price": 19.0}, "price"),
        ({"site": "s", "item": "a", "price": True}, "price"),
        ({"site": "s", "item": "a", "price": -1}, "price"),
        ({"site": 7, "item": "a"}, "site"),
        ({"item": "a"}, "site"),
    ],
)
async def test_wrong_types_are_422_naming_the_field(api: Api, body: dict[str, object], field: str) -> None:
    wallet = await api.wallet()
    r = await api.client.post("/v1/unlocks", json=body, headers=auth(wallet))
    assert r.status_code == 422
    assert field in [e["field"] for e in r.json()["errors"]]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b"null", b"\xff\xfe", b'"text"', b'{"site": "a", "item": "b"} trailing'],
)
async def test_malformed_json_is_422(api: Api, raw: bytes) -> None:
    wallet = await api.wallet()
    r = await api.client.post("/v1/unlocks", content=raw, headers={**auth(wallet), "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM


async def test_other_content_type_is_422(api: Api) -> None:
    r = await api.client.post(
        "/v1/wallets", content=b"currency=EUR", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 422


async def test_body_over_the_limit_is_413(api: Api) -> None:
    wallet = await api.wallet()
    big = b'{"site": "' + b"x" * 20_000 + b'", "item": "a"}'
    r = await api.client.post("/v1/unlocks", content=big, headers={**auth(wallet), "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["type"].endswith("/body-too-large")


async def test_body_over_the_limit_without_content_length_is_413(api: Api) -> None:
    wallet = await api.wallet()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 1024

    r = await api.client.post(
        "/v1/unlocks", content=chunks(), headers={**auth(wallet), "Content-Type": "application/json"}
    )
    assert r.status_code == 413


@pytest.mark.parametrize("path", ["/v1/unlocks", "/v1/wallets", "/v1/topups", "/v1/vouchers/redeem"])
async def test_a_client_gone_mid_body_is_a_line_of_info_not_an_error(
    api: Api, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A phone losing its signal mid-upload is routine: no ERROR record, no traceback, no 500."""
    wallet = await api.wallet()
    messages: list[Message] = [
        {"type": "http.request", "body": b'{"site": "site_x", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", b"200"),
            (b"authorization", f"Bearer {wallet}".encode()),
        ],
        "client": ("203.0.113.7", 5555),
        "server": ("127.0.0.1", 8000),
    }
    with caplog.at_level(logging.INFO):
        await api.client.app(scope, receive, send)  # type: ignore[attr-defined]

    assert sent[0]["status"] == 400
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("closed the connection" in r.getMessage() for r in caplog.records)


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert (r.status_code, r.headers["content-type"]) == (404, PROBLEM)
    r = await client.delete("/v1/unlocks")
    assert (r.status_code, r.headers["content-type"]) == (405, PROBLEM)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/offers"),
        ("GET", "/v1/offers?site=site_x"),
        ("GET", "/v1/offers?site=../../etc&items=a"),
        ("GET", "/v1/offers?site=site_nope&items=" + ",".join("a" * 300 for _ in range(3))),
        ("GET", "/v1/content/site_nope/%00"),
        ("GET", "/v1/content/site_x/a?token=not-a-jwt"),
        ("GET", "/v1/topups/tu_nope"),
        ("GET", "/topup/garbage"),
        ("GET", "/checkout/test/cs_nope"),
        ("POST", "/checkout/test/cs_nope"),
        ("GET", "/v1/wallet"),
        ("GET", "/v1/admin/ledger"),
        ("PUT", "/v1/admin/items/a"),
    ],
)
async def test_garbage_never_gives_a_500(client: httpx.AsyncClient, method: str, path: str) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer sk_forged"},
    ):
        r = await client.request(method, path, headers=headers)
        assert 400 <= r.status_code < 500, (path, headers, r.status_code, r.text)
        if r.headers["content-type"] == "application/problem+json":
            assert r.headers["x-content-type-options"] == "nosniff", (path, r.status_code)


async def test_admin_put_item_validates_and_sanitizes(api: Api) -> None:
    site = await api.site()
    headers = {"Authorization": f"Bearer {site[1]}"}
    bad_id = await api.client.put("/v1/admin/items/bad%20id", json={"title": "t", "price": 1}, headers=headers)
    assert bad_id.status_code == 400
    for trailing in ("art%0A", "art%0D%0A"):  # "$" would let a final newline through into the key
        r = await api.client.put(f"/v1/admin/items/{trailing}", json={"title": "t", "price": 1}, headers=headers)
        assert r.status_code == 400, trailing
        assert r.json()["type"].endswith("/bad-request")
    huge = await api.client.put("/v1/admin/items/a", json={"title": "t", "price": 10**9}, headers=headers)
    assert huge.status_code == 422

    body = await api.item(site, "a", 19, content_html='<p onclick="x()">Hi<script>alert(1)</script></p>')

    assert body["has_content"] is True
    wallet = await api.wallet()
    await api.fund(site, wallet, 100)
    html = (await api.unlock(wallet, site[0], "a")).json()["content"]
    assert html == "<p>Hi</p>"


async def test_deeply_nested_json_is_422_not_500(api: Api) -> None:
    wallet = await api.wallet()
    deep = b"[" * 5000 + b"]" * 5000
    r = await api.client.post("/v1/unlocks", content=deep, headers={**auth(wallet), "Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["type"].endswith("/invalid-body")


async def test_the_unlock_fast_lane_renders_problems_like_every_route(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site = await api.site()
    await api.item(site, "a", 10)
    wallet = await api.wallet()

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("coinslot.unlocks.purchase", broken)
    r = await api.unlock(wallet, site[0], "a")

    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["type"].endswith("/internal")
    assert "boom" not in r.text
    assert "unhandled error on POST /v1/unlocks" in caplog.text
    # The lane is POST only: another method still meets the router's 405 problem.
    r = await api.client.get("/v1/unlocks")
    assert r.status_code == 405 and r.headers["content-type"] == PROBLEM


def test_the_fast_lane_reads_headers_as_starlette_does() -> None:
    raw = [(b"authorization", b"Bearer a"), (b"x-dup", b"first"), (b"x-dup", b"second"), (b"content-type", b"t/\xe9")]
    fast, plain = _IndexedHeaders({"headers": raw}), Headers(scope={"headers": raw})
    for name in ("authorization", "Authorization", "x-dup", "content-type", "idempotency-key"):
        assert fast.get(name) == plain.get(name)
        assert fast.get(name, "-") == plain.get(name, "-")
        assert (name in fast) == (name in plain)
        if name in plain:
            assert fast[name] == plain[name]
        else:
            with pytest.raises(KeyError):
                fast[name]
    assert fast.getlist("x-dup") == ["first", "second"]


def test_the_fast_lanes_match_paths_as_the_router_would() -> None:
    from coinslot.http.lanes import Lanes
    from coinslot.http.routes import API

    lanes = Lanes(API)
    unlock = lanes.match("POST", "/v1/unlocks")
    assert unlock is not None and unlock[1] is None
    card = lanes.match("GET", "/embed/site_a/article-1")
    assert card is not None and card[1] == {"site": "site_a", "item": "article-1"}
    read = lanes.match("GET", "/v1/card/site_a/article-1")
    assert read is not None and read[1] == {"site": "site_a", "item": "article-1"}
    # Anything the router would treat otherwise goes to it: an empty segment, a trailing slash,
    # another method, an extra segment, a path that is not a lane.
    for method, path in [
        ("GET", "/embed//article-1"),
        ("GET", "/embed/site_a/article-1/"),
        ("HEAD", "/embed/site_a/article-1"),
        ("POST", "/embed/site_a/article-1"),
        ("GET", "/embed/site_a/article-1/more"),
        ("GET", "/v1/offers"),
        ("GET", "/"),
        ("GET", ""),
    ]:
        assert lanes.match(method, path) is None, (method, path)


async def test_a_card_page_on_the_fast_lane_still_answers_head_and_unknown_paths(api: Api) -> None:
    site = await api.site()
    await api.item(site, "a", 19)
    params = {"origin": "http://localhost:8001"}
    assert (await api.client.get(f"/embed/{site[0]}/a", params=params)).status_code == 200
    assert (await api.client.head(f"/embed/{site[0]}/a", params=params)).status_code == 200
    missing = await api.client.get(f"/v1/card/{site[0]}/nope")
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
