from __future__ import annotations

import os
import re
from collections import Counter

from coinslot.ids import IDS_PER_DRAW, new_id


def test_ids_are_prefixed_lowercase_base32_and_do_not_repeat() -> None:
    ids = [new_id("pur") for _ in range(IDS_PER_DRAW * 40)]
    assert all(re.fullmatch(r"pur_[a-z2-7]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert re.fullmatch(r"cs_test_[a-z2-7]{26}", new_id("cs_test", 16))


def test_a_forked_child_does_not_reuse_the_ids_its_parent_holds() -> None:
    new_id("w")  # the parent now holds a drawn batch
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a few ids and leave without running pytest's teardown
        os.write(write_end, " ".join(new_id("w") for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_ids = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent_ids = {new_id("w") for _ in range(IDS_PER_DRAW)}
    assert len(child_ids) == 5
    assert not child_ids & parent_ids


def test_every_character_of_an_id_is_equally_likely() -> None:
    counts = Counter("".join(new_id("x")[2:] for _ in range(100_000)))
    assert sorted(counts) == sorted("abcdefghijklmnopqrstuvwxyz234567")
    # 1.6 million characters, 50,000 expected each: ±5 % is more than 10 standard deviations.
    assert all(47_500 < n < 52_500 for n in counts.values())
