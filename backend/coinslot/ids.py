"""Random identifiers: prefixed, URL-safe and lowercase, so they survive any transport."""

from __future__ import annotations

import base64
import os
import secrets

ID_BYTES = 10  # 80 bits: 16 base32 characters, no padding
IDS_PER_DRAW = 256

# Ids of the default size are drawn from the OS 256 at a time: one getrandom call and one
# base32 encoding serve many unlocks (each makes a purchase id), where drawing one at a
# time cost ~3 µs. 10 bytes encode to exactly 16 characters, so the ids slice cleanly.
_drawn: list[str] = []


def _draw() -> None:
    text = base64.b32encode(secrets.token_bytes(ID_BYTES * IDS_PER_DRAW)).decode().lower()
    _drawn.extend(text[i : i + 16] for i in range(0, len(text), 16))


# A forked child must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_drawn.clear)


def new_id(prefix: str, nbytes: int = ID_BYTES) -> str:
    """``prefix_`` + base32 of ``nbytes`` random bytes (10 bytes = 80 bits, 16 characters)."""
    if nbytes != ID_BYTES:
        return prefix + "_" + base64.b32encode(secrets.token_bytes(nbytes)).decode().rstrip("=").lower()
    while True:
        try:
            return prefix + "_" + _drawn.pop()
        except IndexError:  # none left (or another thread took the last one): draw more
            _draw()
