"""Secrets on disk: the unlock signing keys in ``data_dir/keys`` and the server secrets in ``secrets.json``.

Every file is created 0600 (the keys directory 0700) and put in place whole, by a rename or a
link, so no process ever reads half of one. What the secrets are for lives elsewhere: the key
ring that signs and publishes in keyring.py, the tokens in tokens.py.

A key's kid is its name: in the keys directory the time it was made (so the newest signs), for a
configured file its RFC 7638 thumbprint (so every host names it alike).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coinslot.errors import ConfigurationError

SECRETS_FILE = "secrets.json"

# UTC with microseconds: sorts as it ages, so the newest file is the signer without metadata.
KID_FORMAT = "%Y%m%dT%H%M%S.%fZ"


# unlock keys ------------------------------------------------------------------------------


def kid_time(kid: str) -> datetime:
    """When the key named ``kid`` was made; ValueError if ``kid`` is not such a time."""
    return datetime.strptime(kid, KID_FORMAT).replace(tzinfo=UTC)


def new_kid(after: str | None) -> str:
    """The kid of a key made now; it sorts after ``after``, the current signer's, when one is given."""
    now = datetime.now(UTC)
    if after is not None:
        # Two keys in one microsecond, or a clock set back, must still sort after the signer.
        now = max(now, kid_time(after) + timedelta(microseconds=1))
    return now.strftime(KID_FORMAT)


def read_key_files(paths: Sequence[Path]) -> list[tuple[str, Ed25519PrivateKey]]:
    """The keys of configured PEM files as (kid, key), in the order given (oldest first)."""
    return [(_thumbprint(key), key) for key in map(_read_key, paths)]


def load_or_create_keys(data_dir: Path) -> list[tuple[str, Ed25519PrivateKey]]:
    """The keys in ``data_dir/keys`` as (kid, key), oldest first; one is made on first run."""
    with _locked(data_dir) as keys_dir:
        keys = _read_dir(keys_dir)
        if not keys:
            keys = [(new_kid(None), Ed25519PrivateKey.generate())]
            _write_key(keys_dir, *keys[0])
    return keys


def add_key(data_dir: Path, after: str) -> tuple[str, Ed25519PrivateKey]:
    """A new key, written to ``data_dir/keys``, whose kid sorts after ``after``."""
    with _locked(data_dir) as keys_dir:
        kid, key = new_kid(after), Ed25519PrivateKey.generate()
        _write_key(keys_dir, kid, key)
    return kid, key


def remove_keys(data_dir: Path, kids: Iterable[str]) -> None:
    """Delete the files of ``kids`` from ``data_dir/keys``; one already gone is no error."""
    with _locked(data_dir) as keys_dir:
        for kid in kids:
            (keys_dir / f"unlock-{kid}.pem").unlink(missing_ok=True)


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigurationError(f"unlock key file {path}: cannot read it ({exc.strerror})") from exc
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigurationError(f"unlock key file {path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"unlock key file {path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def _write_key(keys_dir: Path, kid: str, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    tmp = keys_dir / f".unlock-{kid}.pem.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
        file.flush()
        os.fsync(file.fileno())
    # Renamed into place complete, so a crash never leaves a half-written key to fail start-up.
    os.replace(tmp, keys_dir / f"unlock-{kid}.pem")


def _read_dir(keys_dir: Path) -> list[tuple[str, Ed25519PrivateKey]]:
    keys = []
    for path in keys_dir.glob("unlock-*.pem"):
        kid = path.name.removeprefix("unlock-").removesuffix(".pem")
        try:
            kid_time(kid)
        except ValueError as exc:
            raise ConfigurationError(f"unlock key file {path}: name is not unlock-<{KID_FORMAT}>.pem") from exc
        keys.append((kid, _read_key(path)))
    return sorted(keys, key=lambda pair: pair[0])


@contextmanager
def _locked(data_dir: Path) -> Iterator[Path]:
    """The keys directory, created 0700, held exclusively so two processes never both make a first key."""
    keys_dir = data_dir / "keys"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        keys_dir.mkdir(mode=0o700)
        os.chmod(keys_dir, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    fd = os.open(keys_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield keys_dir
    finally:
        os.close(fd)


def _thumbprint(key: Ed25519PrivateKey) -> str:
    x = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 7638: the JWK's required members, sorted and without spaces.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(x)}, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# server secrets ---------------------------------------------------------------------------


def load_or_create_secrets(data_dir: Path) -> list[bytes]:
    """The secrets in ``data_dir/secrets.json`` (mode 0600), oldest first; one is made on first run.

    Used when configuration gives none (``COINSLOT_SECRET_KEYS``).
    """
    path = data_dir / SECRETS_FILE
    if not path.exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"secret_keys": [secrets.token_urlsafe(48)]}, f)
        try:
            os.link(tmp, path)  # fails if another process created it meanwhile: keep theirs
        except FileExistsError:
            pass
        tmp.unlink()
    return [s.encode() for s in json.loads(path.read_text())["secret_keys"]]
