"""The verifier examples in docs/verify/, each run as a publisher would run it, against tokens
from a real `coinslot serve`: a fresh token passes; a tampered one, one for another site or
item, and an expired one do not; a rotated key is fetched when a token names it.

Node and PHP are Debian's (`make verifiers` installs them, and jose with `npm ci`); without
them these tests skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from coinslot.keyring import KeyRing

from test_cli import free_port, serving

DOCS = Path(__file__).resolve().parent.parent / "docs" / "verify"
VERIFIERS = {
    "python": [sys.executable, str(DOCS / "python" / "verify.py")],
    "node": ["node", str(DOCS / "node" / "verify.mjs")],
    "php": ["php", str(DOCS / "php" / "verify.php")],
}


def missing(verifier: str) -> str | None:
    """Why ``verifier`` cannot run here, or None."""
    if verifier == "node":
        if shutil.which("node") is None:
            return "no node on PATH (make verifiers installs Debian's nodejs)"
        version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
        if int(version.lstrip("v").split(".")[0]) < 20:
            return f"node {version} is older than 20, which jose 6 needs"
        if not (DOCS / "node" / "node_modules" / "jose").is_dir():
            return "no jose in docs/verify/node (make verifiers runs npm ci)"
    if verifier == "php" and shutil.which("php") is None:
        return "no php on PATH (make verifiers installs Debian's php-cli)"
    return None


@pytest.fixture(params=list(VERIFIERS))
def verifier(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    reason = missing(name)
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the {name} verifier must run in CI: {reason}")
        pytest.skip(reason)
    return name


@dataclass
class Server:
    url: str
    data: Path

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

    def site(self, site_id: str) -> str:
        """A new site with an item "a" at 19 cents and a voucher; its secret key."""
        env = {**os.environ, "COINSLOT_DATA_DIR": str(self.data)}
        created = subprocess.run(
            [sys.executable, "-m", "coinslot.cli", "site", "create", "--name", site_id, "--origin",
             "http://localhost:8001", "--id", site_id],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        secret: str = json.loads(created.stdout)["secret_key"]
        admin = {"Authorization": f"Bearer {secret}"}
        put = httpx.put(f"{self.url}/v1/admin/items/a", json={"title": "A", "price": 19}, headers=admin)
        assert put.is_success, put.text
        return secret

    def wallet(self, site_secret: str) -> str:
        """A wallet holding a voucher of the site with that secret key."""
        admin = {"Authorization": f"Bearer {site_secret}"}
        code = httpx.post(f"{self.url}/v1/admin/vouchers", json={"amount": 100}, headers=admin).json()["code"]
        wallet: str = httpx.post(f"{self.url}/v1/wallets", json={}).json()["token"]
        redeemed = httpx.post(
            f"{self.url}/v1/vouchers/redeem", json={"code": code}, headers={"Authorization": f"Bearer {wallet}"}
        )
        assert redeemed.is_success, redeemed.text
        return wallet

    def unlock(self, wallet: str, site_id: str, item: str = "a") -> str:
        response = httpx.post(
            f"{self.url}/v1/unlocks",
            json={"site": site_id, "item": item},
            headers={"Authorization": f"Bearer {wallet}"},
        )
        assert response.is_success, response.text
        token: str = response.json()["token"]
        return token


@dataclass
class Tokens:
    server: Server
    fresh: str  # for item "a" of site_a
    other_site: str  # for item "a" of site_b


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tokens]:
    with serving(tmp_path_factory.mktemp("verifiers")) as (url, data, _):
        server = Server(url, data)
        wallet = server.wallet(server.site("site_a"))
        server.site("site_b")
        yield Tokens(server, server.unlock(wallet, "site_a"), server.unlock(wallet, "site_b"))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def run(
    verifier: str,
    server: Server,
    token: str,
    *,
    cache: Path,
    issuer: str | None = None,
    site: str = "site_a",
    item: str = "a",
) -> subprocess.CompletedProcess[str]:
    """The verifier's exit status, stdout and stderr; ``cache`` is its temporary directory, where the JWKS is kept."""
    return subprocess.run(
        [*VERIFIERS[verifier], server.jwks_url, issuer or server.url, site, item, token],
        env={**os.environ, "TMPDIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_fresh_token_is_accepted_and_its_claims_printed(verifier: str, tokens: Tokens, tmp_path: Path) -> None:
    done = run(verifier, tokens.server, tokens.fresh, cache=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == claims_of(tokens.fresh)
    assert claims_of(tokens.fresh)["iss"] == tokens.server.url


def tampered(token: str) -> str:
    """The token claiming item "b" instead of "a": one byte of the payload changed, signature kept."""
    header, payload, signature = token.split(".")
    claims = json.dumps(claims_of(token), separators=(",", ":"))
    changed = claims.replace('"sub":"a"', '"sub":"b"')
    assert changed != claims
    return f"{header}.{b64url(changed.encode())}.{signature}"


def expired(server: Server, token: str) -> str:
    """The token as the server's own key would sign it, had it been issued 11 minutes ago."""
    now = int(time.time())
    claims = {**claims_of(token), "iat": now - 660, "exp": now - 60}
    return KeyRing.load(server.data).sign(claims)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "signature"),
        ("other site", "aud"),
        ("other item", "sub"),
        ("other issuer", "iss"),
        ("expired", "expired"),
    ],
)
def test_a_bad_token_is_refused_with_a_one_line_reason(
    verifier: str, tokens: Tokens, tmp_path: Path, case: str, reason: str
) -> None:
    token, item = {
        "tampered": (tampered(tokens.fresh), "b"),  # asks for the item the forged claim names
        "other site": (tokens.other_site, "a"),
        "other item": (tokens.fresh, "b"),
        "other issuer": (tokens.fresh, "a"),
        "expired": (expired(tokens.server, tokens.fresh), "a"),
    }[case]
    issuer = "https://pay.example.com" if case == "other issuer" else None
    done = run(verifier, tokens.server, token, cache=tmp_path, issuer=issuer, item=item)
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert re.fullmatch(r"refused: [^\n]+\n", done.stderr), done.stderr
    assert reason in done.stderr.lower(), done.stderr


def test_the_jwks_is_cached_and_fetched_again_for_a_rotated_key(verifier: str, tmp_path: Path) -> None:
    port, cache = free_port(), tmp_path / "cache"
    cache.mkdir()
    with serving(tmp_path, port=port) as (url, data, _):
        server = Server(url, data)
        wallet = server.wallet(server.site("site_a"))
        before = server.unlock(wallet, "site_a")
        assert run(verifier, server, before, cache=cache).returncode == 0
    (cached,) = cache.glob("coinslot-jwks-*.json")
    assert [key["kid"] for key in json.loads(cached.read_text())["keys"]] == [json.loads(_header(before))["kid"]]

    # The server is down: only the cache can vouch for the key.
    down = run(verifier, server, before, cache=cache)
    assert down.returncode == 0, down.stderr

    env = {**os.environ, "COINSLOT_DATA_DIR": str(data)}
    rotate = [sys.executable, "-m", "coinslot.cli", "keys", "rotate"]
    kid = json.loads(subprocess.run(rotate, env=env, capture_output=True, text=True, check=True).stdout)["signing_kid"]
    with serving(tmp_path, port=port) as (url, _, _):
        after = server.unlock(wallet, "site_a")  # owned already: a fresh token, signed with the new key
        assert json.loads(_header(after))["kid"] == kid
        done = run(verifier, server, after, cache=cache)
        assert done.returncode == 0, done.stderr
    assert kid in [key["kid"] for key in json.loads(cached.read_text())["keys"]]


def _header(token: str) -> bytes:
    segment = token.split(".")[0]
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


async def test_the_starlette_dependency_lets_only_the_items_token_through(tokens: Tokens) -> None:
    spec = importlib.util.spec_from_file_location("starlette_dependency", DOCS / "python" / "starlette_dependency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    verified = module.UnlockTokenVerifier(tokens.server.jwks_url, issuer=tokens.server.url, site="site_a")

    async def article(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(verified, request))

    app = Starlette(routes=[Route("/articles/{item}", article)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://publisher") as client:

        async def get(item: str, token: str | None) -> httpx.Response:
            return await client.get(f"/articles/{item}", headers={"Authorization": f"Bearer {token}"} if token else {})

        assert (await get("a", tokens.fresh)).json() == claims_of(tokens.fresh)
        refused = [
            await get("a", None),
            await get("a", tokens.other_site),
            await get("b", tokens.fresh),
            await get("b", tampered(tokens.fresh)),
        ]
    assert [r.status_code for r in refused] == [401] * 4
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in refused)
