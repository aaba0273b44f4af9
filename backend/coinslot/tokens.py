"""Unlock tokens: EdDSA-signed JWTs a publisher verifies offline with the JWKS.

A token proves that one wallet may read one item of one site until ``exp``. It names the
wallet only by a per-site pseudonym, so two publishers cannot join their readers.
Keys are parsed once into key objects; nothing here reads a PEM per request. Where the keys
are kept and how they are named is keyfiles.py's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coinslot import keyfiles
from coinslot.errors import ConfigurationError, UnlockTokenExpired, UnlockTokenInvalid
from coinslot.signer import SigningProcess

ALGORITHM = "EdDSA"
CLAIMS = ("iss", "aud", "sub", "jti", "iat", "exp", "livemode", "wlt")
# Tokens are checked on other hosts than the one that issued them; their clocks may differ.
CLOCK_SKEW_S = 30
MIN_PSEUDONYM_SECRET_BYTES = 32
PSEUDONYM_CHARS = 22  # 132 bits of the HMAC
# Pseudonyms remembered, so the readers active now skip the HMAC (~3 µs) on every unlock.
PSEUDONYMS_KEPT = 50_000


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(obj: dict[str, Any]) -> bytes:
    # JSON without spaces, as PyJWT writes it; orjson is ~15x faster than json on the unlock path.
    return orjson.dumps(obj)


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


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


class PendingToken:
    """A token whose signature is on its way; ``await pending.token()`` gives the compact JWS.

    Dropping one unawaited is fine: the signature is then made and thrown away.
    """

    __slots__ = ("_signing_input", "_signature")

    def __init__(self, signing_input: str, signature: asyncio.Future[bytes]) -> None:
        self._signing_input = signing_input
        self._signature = signature

    async def token(self) -> str:
        return self._signing_input + "." + _b64url(await self._signature)


class KeyRing:
    """Ed25519 signing keys, oldest first: the newest signs, all are published."""

    def __init__(self, keys: Sequence[tuple[str, Ed25519PrivateKey]], *, from_files: bool = False) -> None:
        if not keys:
            raise ConfigurationError("an unlock key ring needs at least one key")
        kids = [kid for kid, _ in keys]
        if len(set(kids)) != len(kids):
            raise ConfigurationError(f"unlock keys repeat a kid: {kids}")
        self._from_files = from_files
        self._set(list(keys))

    def _set(self, keys: list[tuple[str, Ed25519PrivateKey]]) -> None:
        public = {kid: key.public_key() for kid, key in keys}
        jwks = [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": _b64url(_public_bytes(key)),
                "kid": kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
            for kid, key in keys
        ]
        kid, key = keys[-1]
        # kid, key and the JWS header naming the kid travel as one tuple, so an issue() racing a
        # rotate() never pairs a kid with another key.
        header = _b64url(_compact_json({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}))
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self._signing = (kid, key, header, raw)
        self._keys, self._public, self._jwks = keys, public, jwks

    @classmethod
    def load(cls, data_dir: Path, key_files: Sequence[Path] = ()) -> KeyRing:
        """Configured PEM files (oldest first), else ``data_dir/keys``, creating one key on first run."""
        if key_files:
            return cls(keyfiles.read_key_files(key_files), from_files=True)
        return cls(keyfiles.load_or_create_keys(data_dir))

    @classmethod
    def generate(cls) -> KeyRing:
        return cls([(keyfiles.new_kid(None), Ed25519PrivateKey.generate())])

    @property
    def kid(self) -> str:
        return self._signing[0]

    @property
    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        return self._signing[:2]

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWS (RFC 7515) of ``claims`` under the current key, its kid in the header.

        Built here rather than by jwt.encode, which spends ~20 µs per token (measured on the
        bench machine, beside a ~45 µs signature) re-encoding the same header; PyJWT verifies it.
        """
        _kid, key, header, _raw = self._signing
        signing_input = header + "." + _b64url(_compact_json(claims))
        return signing_input + "." + _b64url(key.sign(signing_input.encode("ascii")))

    def sign_beside(self, claims: dict[str, Any], signer: SigningProcess | None) -> PendingToken:
        """As ``sign``, started now and awaited later; by ``signer``'s child process when there is one."""
        _kid, key, header, raw = self._signing
        signing_input = header + "." + _b64url(_compact_json(claims))
        data = signing_input.encode("ascii")
        if signer is not None:
            return PendingToken(signing_input, signer.sign(raw, key, data))
        signature: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        signature.set_result(key.sign(data))
        return PendingToken(signing_input, signature)

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        return self._public.get(kid)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(jwk) for jwk in self._jwks]}

    def rotate(self, data_dir: Path) -> str:
        """Write a new key to ``data_dir/keys`` that signs from now on; older keys stay published.

        Other processes serving from the same directory pick it up when they restart.
        """
        if self._from_files:
            raise ConfigurationError("unlock keys come from configured files; rotate by appending a new file")
        kid, key = keyfiles.add_key(data_dir, after=self.kid)
        self._set([*self._keys, (kid, key)])
        return kid

    def prune(self, data_dir: Path, older_than_s: int, *, now_s: float | None = None) -> list[str]:
        """Delete keys retired more than ``older_than_s`` ago; pass at least the token TTL.

        A key retires when its successor is created, and tokens it signed live at most a TTL
        beyond that, so once ``older_than_s`` >= TTL has passed none of them can still verify.
        """
        if self._from_files:
            raise ConfigurationError("unlock keys come from configured files; prune by removing a file")
        if older_than_s <= 0:
            raise ValueError(f"older_than_s={older_than_s} must be > 0")
        now = datetime.now(UTC) if now_s is None else datetime.fromtimestamp(now_s, UTC)
        cutoff = now - timedelta(seconds=older_than_s)
        retired = [
            kid
            for (kid, _), (successor, _) in zip(self._keys, self._keys[1:])
            if keyfiles.kid_time(successor) <= cutoff
        ]
        keyfiles.remove_keys(data_dir, retired)
        self._set([(kid, key) for kid, key in self._keys if kid not in retired])
        return retired


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
        pseudonym = self._pseudonyms[site, wallet_id] = _b64url(digest)[:PSEUDONYM_CHARS]
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
