"""Server secrets kept in the data directory when configuration does not provide them."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

SECRETS_FILE = "secrets.json"


def load_or_create(data_dir: Path) -> list[bytes]:
    """The secrets in ``data_dir/secrets.json`` (mode 0600), oldest first; one is made on first run."""
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


def derive(secret: bytes, purpose: str) -> bytes:
    """A separate key per purpose, so one use can never be replayed as another."""
    return hmac.new(secret, b"coinslot:" + purpose.encode(), hashlib.sha256).digest()
