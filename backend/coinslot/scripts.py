"""The Lua scripts in ``lua/``, each run by EVALSHA and loaded by EVAL when Redis lacks it.

``Store.run`` calls them by name (through ``coinslot.pipe`` on a standalone Redis); a script
that runs rarely and on its own (the tab quota) is called directly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

# The scripts a Store runs by name.
SCRIPTS = ("unlock", "credit", "voucher_take", "voucher_give_back", "snapshot", "topup_mark", "chargeback")


class Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT (e.g. after a failover)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("coinslot").joinpath("lua", name + ".lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)
