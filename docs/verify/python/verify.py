"""Verify a Coinslot unlock token with PyJWT 2.10 or later (pip install "pyjwt[crypto]").

    python verify.py JWKS_URL ISSUER SITE ITEM TOKEN

Prints the token's claims and exits 0 when the token lets a reader see ITEM of SITE now;
otherwise exits 1 with one line saying why. The JWKS is kept in a temporary file for five
minutes and fetched again at once when a token names a key it lacks (the keys were rotated).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt

CACHE_S = 300  # as long as the server's Cache-Control lets the JWKS be kept
LEEWAY_S = 30  # the issuer's clock and ours may differ this much
CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp", "livemode", "wlt"]


def signing_key(jwks_url: str, kid: str) -> jwt.PyJWK:
    name = hashlib.sha256(jwks_url.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"coinslot-jwks-{name}.json"
    stale = not cache.exists() or time.time() - cache.stat().st_mtime >= CACHE_S
    if stale:
        fetch(jwks_url, cache)
    key = find(cache, kid)
    if key is None and not stale:  # a key we have not seen: the keys were rotated since we fetched them
        fetch(jwks_url, cache)
        key = find(cache, kid)
    if key is None:
        raise jwt.InvalidTokenError(f"no key {kid!r} in {jwks_url}")
    return key


def fetch(jwks_url: str, cache: Path) -> None:
    with urllib.request.urlopen(jwks_url, timeout=5) as response:
        body = response.read()
    temporary = cache.with_suffix(f".{os.getpid()}")
    temporary.write_bytes(body)
    temporary.replace(cache)  # whole or not at all, for a verifier running beside this one


def find(cache: Path, kid: str) -> jwt.PyJWK | None:
    return next((key for key in jwt.PyJWKSet.from_json(cache.read_text()).keys if key.key_id == kid), None)


def verify(jwks_url: str, issuer: str, site: str, item: str, token: str) -> dict[str, object]:
    kid = jwt.get_unverified_header(token).get("kid")
    if not isinstance(kid, str):
        raise jwt.InvalidTokenError("the token's header names no kid")
    claims: dict[str, object] = jwt.decode(
        token,
        signing_key(jwks_url, kid),
        algorithms=["EdDSA"],  # never what the token's header asks for
        issuer=issuer,
        audience=site,
        subject=item,
        options={"require": CLAIMS, "strict_aud": True},
        leeway=LEEWAY_S,
    )
    return claims


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        claims = verify(*argv)
    except (jwt.PyJWTError, OSError, ValueError) as exc:
        print(f"refused: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
