"""Unlock-token checks as a FastAPI dependency, or a call in a Starlette endpoint.

    verified = UnlockTokenVerifier(
        "https://pay.example.com/.well-known/jwks.json", issuer="https://pay.example.com", site="site_…"
    )

    @app.get("/articles/{item}")                                   # FastAPI
    def article(item: str, unlock: dict = Depends(verified)): ...

    async def article(request):                                     # Starlette
        unlock = await run_in_threadpool(verified, request)

The token comes as ``Authorization: Bearer <unlock token>``; the item is the path's ``item``.
A request without a valid token for that item of the site ends in a 401.
"""

from __future__ import annotations

from typing import Any

import jwt
from starlette.exceptions import HTTPException
from starlette.requests import Request

CLAIMS = ["iss", "aud", "sub", "jti", "iat", "exp", "livemode", "wlt"]


class UnlockTokenVerifier:
    def __init__(self, jwks_url: str, *, issuer: str, site: str, item_param: str = "item") -> None:
        # One client for the process: it keeps the JWKS for five minutes and fetches it again
        # when a token names a kid it lacks. Its fetch blocks, so FastAPI must run this in a
        # thread: __call__ is a plain def on purpose.
        self.keys = jwt.PyJWKClient(jwks_url, lifespan=300, timeout=5)
        self.issuer, self.site, self.item_param = issuer, site, item_param

    def __call__(self, request: Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "an unlock token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.keys.get_signing_key_from_jwt(token),
                algorithms=["EdDSA"],
                issuer=self.issuer,
                audience=self.site,
                subject=request.path_params[self.item_param],
                options={"require": CLAIMS, "strict_aud": True},
                leeway=30,  # seconds the issuer's clock and ours may differ
            )
        except jwt.PyJWKClientConnectionError:
            raise  # a JWKS we cannot fetch is our problem, not the reader's: a 500
        except jwt.PyJWTError as exc:
            raise HTTPException(
                401, f"unlock token refused: {exc}", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from exc
        return claims
