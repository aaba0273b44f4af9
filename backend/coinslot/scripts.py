"""The Lua scripts in ``lua/``, each run by EVALSHA and loaded by EVAL when Redis lacks it.

A script names keys, fields and accounts only through ``coinslot.keyspace``: the names it
mentions are defined in front of its source (``prelude``), so its SHA and every EVAL include
them. ``Store.run`` calls the scripts by name (through ``coinslot.pipe`` on a standalone Redis);
a script that runs rarely and on its own (the tab quota) is called directly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

from coinslot import keyspace

# The scripts a Store runs by name.
SCRIPTS = (
    "unlock",
    "credit",
    "voucher_take",
    "voucher_give_back",
    "snapshot",
    "topup_mark",
    "chargeback",
    "erase",
    "standing",
    "refund",
    "budget",
)


# A comment, or a string (which may hold "--"); Lua's long brackets are not used in lua/.
_COMMENT_OR_STRING = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|--[^\n]*""")


def prelude(source: str) -> str:
    """The Lua definitions of the names from ``coinslot.keyspace`` that ``source`` mentions.

    They make one line without its end, put in front of the script's first line (a comment in
    every script), so the script's line numbers in Redis' error messages are those of its file.
    A script pays only for the names its code uses: the unlock script, two string constants.
    """
    code = _COMMENT_OR_STRING.sub(lambda m: "" if m[0].startswith("--") else m[0], source)
    used = [lua for name, lua in keyspace.LUA.items() if re.search(rf"\b{name}\b", code)]
    return "".join(lua + " " for lua in used)


class Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT (e.g. after a failover)."""

    def __init__(self, name: str) -> None:
        self.name = name
        body = resources.files("coinslot").joinpath("lua", name + ".lua").read_text()
        self.source = prelude(body) + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[str | int | bytes]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)
