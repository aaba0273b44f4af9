"""The Lua scripts in ``lua/``, each run by EVALSHA and loaded by EVAL when Redis lacks it.

A script names keys, fields and accounts only through ``coinslot.keyspace``: ``LUA`` renders those
names as Lua, from keyspace's very functions and constants, and the ones a script mentions are
defined in front of its source (``prelude``), so its SHA and every EVAL include them.
``Store.run`` calls the scripts by name (through ``coinslot.pipe`` on a standalone Redis); a
script that runs rarely and on its own (the tab quota) is called directly.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
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


# keyspace's names in Lua ------------------------------------------------------------------


def _lua_string(text: str) -> str:
    """``text`` as a Lua string literal; any byte but printable ASCII as a three-digit escape."""
    return "'" + "".join(chr(b) if 32 <= b < 127 and b not in b"'\\" else f"\\{b:03d}" for b in text.encode()) + "'"


def _lua_function(name: str, python: Callable[..., str], *params: str) -> str:
    """The Lua twin of ``python``, a function that joins its arguments and constant text.

    ``python`` is called with a marker for each argument, and its result is turned into the
    same concatenation in Lua: the constant text comes from the Python function itself.
    """
    markers = {f"\x00{i}\x00": param for i, param in enumerate(params)}
    parts = [part for part in re.split("(\x00[0-9]+\x00)", python(*markers)) if part]
    if sorted(p for p in parts if p in markers) != sorted(markers):
        raise ValueError(f"{name} must use each of its arguments once: {parts!r}")
    body = " .. ".join(markers.get(part) or _lua_string(part) for part in parts)
    return f"local function {name}({', '.join(params)}) return {body} end"


def _lua_wallet_id_of() -> str:
    """Lua's ``wallet_id_of(key)``: the wallet id in a wallet's key, so scripts name its account from KEYS."""
    before, _, after = keyspace.wallet_key("\x00").partition("\x00")
    head, tail = len(before.encode()), len(after.encode())
    if not head or not tail:
        raise ValueError("a wallet key must have text around the wallet id")
    return (
        f"local function wallet_id_of(key) if string.sub(key, 1, {head}) ~= {_lua_string(before)} "
        f"or string.sub(key, -{tail}) ~= {_lua_string(after)} then error('not a wallet key: ' .. key) end "
        f"return string.sub(key, {head + 1}, -{tail + 1}) end"
    )


def _lua_constant(name: str) -> str:
    return f"local {name} = {_lua_string(getattr(keyspace, name))}"


# Each name a script may use, as one line of Lua. A script gets the definitions of the names
# its code mentions (coinslot.scripts.prelude), so it pays nothing for the others.
LUA: dict[str, str] = {
    "ACCOUNT_TOPUP_CLEARING": _lua_constant("ACCOUNT_TOPUP_CLEARING"),
    "ACCOUNT_TOPUP_DISPUTES": _lua_constant("ACCOUNT_TOPUP_DISPUTES"),
    # The unlock script runs on every purchase: a local function is a closure made on every run,
    # which with its call cost it ~0.07 µs (~1%). It joins these constant parts itself instead.
    "OWNED_FIELD_SEPARATOR": _lua_constant("OWNED_FIELD_SEPARATOR"),
    "TAB_FIELD_PREFIX": _lua_constant("TAB_FIELD_PREFIX"),
    "PASS_FIELD_PREFIX": _lua_constant("PASS_FIELD_PREFIX"),
    "CAP_FIELD_PREFIX": _lua_constant("CAP_FIELD_PREFIX"),
    "UNDOS_FIELD": _lua_constant("UNDOS_FIELD"),
    "BUDGET_FIELD": _lua_constant("BUDGET_FIELD"),
    "DAILY_LIMIT_FIELD": _lua_constant("DAILY_LIMIT_FIELD"),
    "UNLOCK_LINE_TAG": _lua_constant("UNLOCK_LINE_TAG"),
    "wallet_id_of": _lua_wallet_id_of(),
    "wallet_account": _lua_function("wallet_account", keyspace.wallet_account, "wallet_id"),
    "owned_field": _lua_function("owned_field", keyspace.owned_field, "site", "item"),
    "tab_field": _lua_function("tab_field", keyspace.tab_field, "site"),
    "refund_field": _lua_function("refund_field", keyspace.refund_field, "refund_id"),
    "give_back_field": _lua_function("give_back_field", keyspace.give_back_field, "field"),
    "refunded_field": _lua_function("refunded_field", keyspace.refunded_field, "topup_id"),
    "dispute_field": _lua_function("dispute_field", keyspace.dispute_field, "dispute_id"),
    "dispute_won_field": _lua_function("dispute_won_field", keyspace.dispute_won_field, "field"),
    "site_revenue_account": _lua_function("site_revenue_account", keyspace.site_revenue_account, "site_id"),
    "RECOVERY_FIELD": _lua_constant("RECOVERY_FIELD"),
    "RECOVERY_AT_FIELD": _lua_constant("RECOVERY_AT_FIELD"),
}


# A comment, or a string (which may hold "--"); Lua's long brackets are not used in lua/.
_COMMENT_OR_STRING = re.compile(r"""'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|--[^\n]*""")


def prelude(source: str) -> str:
    """The Lua definitions of the names from ``coinslot.keyspace`` that ``source`` mentions.

    They make one line without its end, put in front of the script's first line (a comment in
    every script), so the script's line numbers in Redis' error messages are those of its file.
    A script pays only for the names its code uses: the unlock script, two string constants.
    """
    code = _COMMENT_OR_STRING.sub(lambda m: "" if m[0].startswith("--") else m[0], source)
    used = [lua for name, lua in LUA.items() if re.search(rf"\b{name}\b", code)]
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
