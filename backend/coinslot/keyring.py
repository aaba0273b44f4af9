"""The unlock signing keys in memory: the newest signs, all of them are published in the JWKS.

Keys are parsed once into key objects; nothing here reads a PEM per request. Where the keys are
kept and how they are named is keyfiles.py's; which claims a token carries, and how it is
verified, is tokens.py's.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from coinslot import keyfiles
from coinslot.errors import ConfigurationError
from coinslot.signer import SigningProcess

ALGORITHM = "EdDSA"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(obj: dict[str, Any]) -> bytes:
    # JSON without spaces, as PyJWT writes it; orjson is ~15x faster than json on the unlock path.
    return orjson.dumps(obj)


def _public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class PendingToken:
    """A token whose signature is on its way; ``await pending.token()`` gives the compact JWS.

    Dropping one unawaited is fine: the signature is then made and thrown away.
    """

    __slots__ = ("_signing_input", "_signature")

    def __init__(self, signing_input: str, signature: asyncio.Future[bytes]) -> None:
        self._signing_input = signing_input
        self._signature = signature

    async def token(self) -> str:
        return self._signing_input + "." + b64url(await self._signature)


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
                "x": b64url(_public_bytes(key)),
                "kid": kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
            for kid, key in keys
        ]
        kid, key = keys[-1]
        # kid, key and the JWS header naming the kid travel as one tuple, so an issue() racing a
        # rotate() never pairs a kid with another key.
        header = b64url(_compact_json({"alg": ALGORITHM, "kid": kid, "typ": "JWT"}))
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
        signing_input = header + "." + b64url(_compact_json(claims))
        return signing_input + "." + b64url(key.sign(signing_input.encode("ascii")))

    def sign_beside(self, claims: dict[str, Any], signer: SigningProcess | None) -> PendingToken:
        """As ``sign``, started now and awaited later; by ``signer``'s child process when there is one."""
        _kid, key, header, raw = self._signing
        signing_input = header + "." + b64url(_compact_json(claims))
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
