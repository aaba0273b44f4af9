"""Tokens, both kinds: the unlock token a publisher verifies, the wallet token a reader holds.

Where is a token verified? Here. ``UnlockTokens.verify`` checks an unlock token's signature,
claims and times; ``WalletTokens.verify`` checks a wallet token's signature and format
(http/credentials.py only finds the credential in the request and hands it here). What no
signature can tell is whether a wallet token is still current: recovery revokes a wallet's
older tokens by replacing the generation kept in Redis, so whatever uses the wallet compares the
token's generation with that one. The unlock script does so in the same atomic step that debits,
the reads in wallets.py in the same round trip that reads the wallet; a voucher or a top-up asks
``wallets.check_wallet`` before it acts. (A top-up link names a wallet and generation too; it is
a signed link, not a credential, made and read by topuplinks.py.)

Unlock tokens are EdDSA-signed JWTs a publisher verifies offline with the JWKS (keyring.py holds
the keys and builds the JWS). A token proves that one wallet may read one item of one site until
``exp``. It names the wallet only by a per-site pseudonym, so two publishers cannot join their
readers.

Wallet tokens are ``[wallet_id, generation]`` signed with itsdangerous. Both kinds draw on the
server secrets: wallet tokens under their own salt, pseudonyms under a key ``derive``d from one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from itsdangerous import BadSignature, URLSafeSerializer

from coinslot.errors import ConfigurationError, Unauthorized, UnlockTokenExpired, UnlockTokenInvalid
from coinslot.keyring import ALGORITHM, KeyRing, PendingToken, b64url
from coinslot.signer import SigningProcess

CLAIMS = ("iss", "aud", "sub", "jti", "iat", "exp", "livemode", "wlt")
# Tokens are checked on other hosts than the one that issued them; their clocks may differ.
CLOCK_SKEW_S = 30
MIN_PSEUDONYM_SECRET_BYTES = 32
# (site id, wallet id) → the wallet as that site knows it: ``UnlockTokens.pseudonym``, as its callers pass it on.
Pseudonym = Callable[[str, str], str]
PSEUDONYM_CHARS = 22  # 132 bits of the HMAC
# Pseudonyms remembered, so the readers active now skip the HMAC (~3 µs) on every unlock.
PSEUDONYMS_KEPT = 50_000
VERIFIED_CACHE_SIZE = 100_000  # wallet tokens remembered as verified, per worker (~25 MB at most)


def derive(secret: bytes, purpose: str) -> bytes:
    """A separate key per purpose, so one use can never be replayed as another."""
    return hmac.new(secret, b"coinslot:" + purpose.encode(), hashlib.sha256).digest()


def _unverified_kid(token: str) -> object:
    """The header's kid, only to pick a key: jwt.decode then checks the whole token strictly.

    Not jwt.get_unverified_header, which validates every segment and so doubles PyJWT's cost per call.
    """
    segment = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except ValueError as exc:  # binascii, Unicode and JSON errors all derive from it
        raise UnlockTokenInvalid("token header is not base64url JSON") from exc
    return header.get("kid") if isinstance(header, dict) else None


class UnlockTokens:
    """Issues and verifies unlock tokens; ``now_s`` is always passed in, never read here."""

    def __init__(
        self,
        keyring: KeyRing,
        *,
        issuer: str,
        pseudonym_secret: bytes,
        livemode: bool,
        ttl_s: int = 600,
        signer: SigningProcess | None = None,
    ) -> None:
        if not issuer:
            raise ConfigurationError("unlock tokens need an issuer (the public URL)")
        if len(pseudonym_secret) < MIN_PSEUDONYM_SECRET_BYTES:
            raise ConfigurationError(
                f"pseudonym secret has {len(pseudonym_secret)} bytes, needs >= {MIN_PSEUDONYM_SECRET_BYTES}"
            )
        if ttl_s <= 0:
            raise ConfigurationError(f"unlock token ttl {ttl_s} s must be > 0")
        self.keyring = keyring
        self.issuer = issuer
        self.livemode = livemode
        self.ttl_s = ttl_s
        self._pseudonym_secret = pseudonym_secret
        self.signer = signer
        self._pseudonyms: dict[tuple[str, str], str] = {}

    def pseudonym(self, site: str, wallet_id: str) -> str:
        """Stable per (site, wallet), unlinkable across sites without the secret."""
        known = self._pseudonyms.get((site, wallet_id))
        if known is not None:
            return known
        digest = hmac.digest(self._pseudonym_secret, f"{site}\x00{wallet_id}".encode(), "sha256")
        if len(self._pseudonyms) >= PSEUDONYMS_KEPT:
            self._pseudonyms.clear()  # a reader's next token costs one HMAC again: cheaper than an LRU
        pseudonym = self._pseudonyms[site, wallet_id] = b64url(digest)[:PSEUDONYM_CHARS]
        return pseudonym

    def claims(
        self, *, site: str, item: str, purchase_id: str, wallet_id: str, now_s: int, access_until_s: int | None = None
    ) -> dict[str, Any]:
        """The claims of a token for ``item`` of ``site``; ``exp`` never outlives ``access_until_s``."""
        exp = now_s + self.ttl_s
        if access_until_s is not None:
            if access_until_s <= now_s:
                raise ValueError(f"access ended at {access_until_s}, not after now {now_s}")
            exp = min(exp, access_until_s)
        return {
            "iss": self.issuer,
            "aud": site,
            "sub": item,
            "jti": purchase_id,
            "iat": now_s,
            "exp": exp,
            "livemode": self.livemode,
            "wlt": self.pseudonym(site, wallet_id),
        }

    def issue(
        self, *, site: str, item: str, purchase_id: str, wallet_id: str, now_s: int, access_until_s: int | None = None
    ) -> tuple[str, int]:
        """A token and its ``exp``, signed on this thread."""
        claims = self.claims(
            site=site,
            item=item,
            purchase_id=purchase_id,
            wallet_id=wallet_id,
            now_s=now_s,
            access_until_s=access_until_s,
        )
        return self.keyring.sign(claims), claims["exp"]

    async def sign(self, claims: dict[str, Any]) -> str:
        """The token of ``claims``, signed beside the event loop when there is a signing process."""
        return await self.sign_soon(claims).token()

    def sign_soon(self, claims: dict[str, Any]) -> PendingToken:
        """Start signing ``claims`` now, so the signature is made while the caller waits for Redis."""
        return self.keyring.sign_beside(claims, self.signer)

    def verify(self, token: str, *, site: str, item: str | None = None, now_s: int) -> dict[str, Any]:
        """The claims of a token this server issued for ``site`` (and ``item``), valid at ``now_s``."""
        kid = _unverified_kid(token)
        if not isinstance(kid, str):
            raise UnlockTokenInvalid(f"token header kid {kid!r} is not a string")
        key = self.keyring.public_key(kid)
        if key is None:
            raise UnlockTokenInvalid(f"token kid {kid!r} is not among the published keys")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=site,
                issuer=self.issuer,
                # PyJWT reads the wall clock; time is checked below against the injected now_s.
                options={"require": list(CLAIMS), "verify_exp": False, "verify_iat": False, "strict_aud": True},
            )
        except jwt.InvalidAlgorithmError as exc:
            raise UnlockTokenInvalid(f"token alg is not {ALGORITHM}") from exc
        except jwt.InvalidSignatureError as exc:
            raise UnlockTokenInvalid(f"token signature does not verify with kid {kid!r}") from exc
        except jwt.InvalidAudienceError as exc:
            raise UnlockTokenInvalid(f"token audience is not site {site!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise UnlockTokenInvalid(f"token issuer is not {self.issuer!r}") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise UnlockTokenInvalid(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.InvalidTokenError as exc:
            raise UnlockTokenInvalid(f"token is malformed: {exc}") from exc
        iat, exp = claims["iat"], claims["exp"]
        if type(iat) is not int or type(exp) is not int:
            raise UnlockTokenInvalid(f"token iat {iat!r} and exp {exp!r} must be integers")
        if exp <= now_s:
            raise UnlockTokenExpired(f"token expired at {exp}, now {now_s}")
        if iat > now_s + CLOCK_SKEW_S:
            raise UnlockTokenInvalid(f"token issued at {iat}, after now {now_s}")
        if item is not None and claims["sub"] != item:
            raise UnlockTokenInvalid(f"token is for item {claims['sub']!r}, not {item!r}")
        if claims["livemode"] is not self.livemode:
            raise UnlockTokenInvalid(f"token livemode is {claims['livemode']!r}, this server's is {self.livemode}")
        return claims


@dataclass(frozen=True, slots=True)
class WalletRef:
    """Who a verified wallet token names: the wallet and the generation it was issued for."""

    wallet_id: str
    generation: int


class WalletTokens:
    """Signs wallet tokens with itsdangerous; the last secret signs, all of them verify."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("WalletTokens needs at least one secret")
        self._serializer = URLSafeSerializer(list(secrets), salt="coinslot.wallet-token")
        self._verified: dict[str, WalletRef] = {}

    def sign(self, ref: WalletRef) -> str:
        return self._serializer.dumps([ref.wallet_id, ref.generation])

    def verify(self, token: str) -> WalletRef:
        # A signature check costs more than the rest of an unlock's Python; a token that
        # verified once stays valid (generations are checked in Redis), so remember it.
        ref = self._verified.get(token)
        if ref is not None:
            return ref
        ref = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = ref
        return ref

    def _verify(self, token: str) -> WalletRef:
        try:
            wallet_id, generation = self._serializer.loads(token)
        except (BadSignature, ValueError, TypeError) as exc:
            raise Unauthorized("wallet token is not valid (bad signature or format)") from exc
        if not isinstance(wallet_id, str) or not isinstance(generation, int):
            raise Unauthorized("wallet token is not valid (bad payload)")
        return WalletRef(wallet_id, generation)
