"""Random identifiers: prefixed, URL-safe and lowercase, so they survive any transport."""

from __future__ import annotations

import base64
import secrets


def new_id(prefix: str, nbytes: int = 10) -> str:
    """``prefix_`` + base32 of ``nbytes`` random bytes (10 bytes = 80 bits, 16 characters)."""
    return prefix + "_" + base64.b32encode(secrets.token_bytes(nbytes)).decode().rstrip("=").lower()
