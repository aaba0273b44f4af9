"""Random identifiers: prefixed, URL-safe and lowercase, so they survive any transport."""

from __future__ import annotations

import os
import secrets

ID_BYTES = 10  # 80 bits: 16 characters
ID_CHARS = 16
IDS_PER_DRAW = 256
# Each random byte picks one of the 32 base32 characters by its low 5 bits (256 is a multiple
# of 32, so every character is equally likely): 16 characters carry 80 bits, as base32 of 10
# bytes does, and look the same.
_ALPHABET = b"abcdefghijklmnopqrstuvwxyz234567"
_CHARACTER_OF_BYTE = bytes(_ALPHABET[b % 32] for b in range(256))

# Ids of the default size are drawn from the OS 256 at a time and mapped to characters in C:
# one getrandom call serves many unlocks (each makes a purchase id), where drawing and
# base32-encoding (pure Python) one at a time cost ~3 µs.
_drawn: list[str] = []


def _random_text(chars: int) -> str:
    return secrets.token_bytes(chars).translate(_CHARACTER_OF_BYTE).decode("ascii")


def _draw() -> None:
    text = _random_text(ID_CHARS * IDS_PER_DRAW)
    _drawn.extend(text[i : i + ID_CHARS] for i in range(0, len(text), ID_CHARS))


# A forked child must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_drawn.clear)


def new_id(prefix: str, nbytes: int = ID_BYTES) -> str:
    """``prefix_`` + as many lowercase base32 characters as carry ``nbytes`` random bytes (10 → 16)."""
    if nbytes != ID_BYTES:
        return prefix + "_" + _random_text(-(-nbytes * 8 // 5))
    while True:
        try:
            return prefix + "_" + _drawn.pop()
        except IndexError:  # none left (or another thread took the last one): draw more
            _draw()
