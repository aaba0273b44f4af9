"""One name for each key, field and account: what the Lua scripts write is what keyspace.py names."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
from redis.exceptions import ResponseError

from coinslot import catalog, chargebacks, keyspace, scripts, topups, unlocks, vouchers, wallets
from coinslot.addresses import Addresses
from coinslot.catalog import Catalog
from coinslot.clock import FrozenClock
from coinslot.ledger import parse_entry
from coinslot.payments import DisputeReport, RefundReport
from coinslot.payments.testmode import BuiltinCheckout
from coinslot.scripts import SCRIPTS, Script, prelude
from coinslot.store import Store

from conftest import PUBLIC_URL, unique

LUA_FILES = sorted(
    (p for p in resources.files("coinslot").joinpath("lua").iterdir() if p.name.endswith(".lua")), key=lambda p: p.name
)

# Ids that a careless quoting or an off-by-one in Lua would get wrong.
ODD = ["x", "site_t1", "ünï-cødé", "a'b\\c", "%d.[]*+-?^$()", "a:b}{c", "1234"]


async def test_the_lua_names_are_the_python_names(standalone_store: Store) -> None:
    def pairs(a: str, b: str) -> dict[str, str]:
        """Each Lua expression (on ARGV a, b) and what Python makes of the same."""
        return {
            "ACCOUNT_TOPUP_CLEARING": keyspace.ACCOUNT_TOPUP_CLEARING,
            "ACCOUNT_TOPUP_DISPUTES": keyspace.ACCOUNT_TOPUP_DISPUTES,
            "ARGV[1] .. OWNED_FIELD_SEPARATOR .. ARGV[2]": keyspace.owned_field(a, b),
            "TAB_FIELD_PREFIX .. ARGV[1]": keyspace.tab_field(a),
            "PASS_FIELD_PREFIX .. ARGV[1]": keyspace.pass_field(a),
            "CAP_FIELD_PREFIX .. ARGV[1]": keyspace.cap_field(a),
            "UNDOS_FIELD": keyspace.UNDOS_FIELD,
            "BUDGET_FIELD": keyspace.BUDGET_FIELD,
            "DAILY_LIMIT_FIELD": keyspace.DAILY_LIMIT_FIELD,
            "UNLOCK_LINE_TAG": keyspace.UNLOCK_LINE_TAG,
            "site_revenue_account(ARGV[1])": keyspace.site_revenue_account(a),
            "wallet_id_of(ARGV[3])": b,
            "wallet_account(ARGV[1])": keyspace.wallet_account(a),
            "owned_field(ARGV[1], ARGV[2])": keyspace.owned_field(a, b),
            "tab_field(ARGV[1])": keyspace.tab_field(a),
            "refund_field(ARGV[1])": keyspace.refund_field(a),
            "give_back_field(ARGV[1])": keyspace.give_back_field(a),
            "refunded_field(ARGV[1])": keyspace.refunded_field(a),
            "dispute_field(ARGV[1])": keyspace.dispute_field(a),
            "dispute_won_field(ARGV[1])": keyspace.dispute_won_field(a),
            "RECOVERY_FIELD": keyspace.RECOVERY_FIELD,
            "RECOVERY_AT_FIELD": keyspace.RECOVERY_AT_FIELD,
        }

    source = "return {" + ", ".join(pairs("", "")) + "}"
    assert all(re.search(rf"\b{name}\b", source) for name in scripts.LUA)  # every name is compared
    for a in ODD:
        for b in ODD:
            got = await standalone_store.redis.eval(prelude(source) + source, 0, a, b, keyspace.wallet_key(b))
            assert got == list(pairs(a, b).values()), (a, b)


async def test_lua_finds_no_wallet_id_in_a_key_that_is_not_a_wallet_key(standalone_store: Store) -> None:
    source = "return wallet_id_of(ARGV[1])"
    for key in (keyspace.site_key("s1"), keyspace.wallet_keys("w1").ledger, "w:1", "{w:1", ""):
        with pytest.raises(ResponseError, match="not a wallet key"):
            await standalone_store.redis.eval(prelude(source) + source, 0, key)


def lua_strings(source: str) -> list[str]:
    """The quoted string literals of a Lua source, comments left out, escapes as written."""
    tokens = re.findall(r"""--[^\n]*|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*\"""", source)
    assert "[[" not in source  # long strings and comments are not read here
    return [t[1:-1] for t in tokens if not t.startswith("--")]


def test_no_lua_script_spells_a_key_field_or_account() -> None:
    """Names come from the prelude: a literal in a script could drift from keyspace.py."""
    spelled = [
        keyspace.wallet_account(""),
        keyspace.ACCOUNT_TOPUP_CLEARING,
        keyspace.ACCOUNT_TOPUP_DISPUTES,
        keyspace.site_accounts_prefix(""),
        keyspace.tab_field(""),
        keyspace.RECOVERY_FIELD,
        keyspace.refund_field(""),
        keyspace.refunded_field(""),
        keyspace.dispute_field(""),
        keyspace.GIVE_BACK_SUFFIX,
        keyspace.DISPUTE_WON_SUFFIX,
        keyspace.wallet_key("")[:-1],
        keyspace.site_key("")[:-1],
        keyspace.voucher_keys("")[0][:-1],
        "topup:",
        "site:",
    ]
    escapes = ["\t", "\\t", "\\9", "\\009"]  # the owned field's separator, as Lua may write it
    assert LUA_FILES
    for path in LUA_FILES:
        for literal in lua_strings(path.read_text()):
            found = [name for name in spelled + escapes if name in literal]
            assert not found, f"{path.name} spells {found} in {literal!r}: use the name from coinslot.keyspace"


def test_the_prelude_keeps_the_scripts_line_numbers() -> None:
    for path in LUA_FILES:
        body = path.read_text()
        assert body.startswith("--")  # the prelude goes in front of a comment
        source = Script(path.name.removesuffix(".lua")).source
        assert "\n" not in prelude(body)
        assert source.endswith(body) and source.count("\n") == body.count("\n")
    # The hot path defines strings and no function: a closure would be made on every run.
    unlock = prelude(resources.files("coinslot").joinpath("lua", "unlock.lua").read_text())
    strings = (
        "OWNED_FIELD_SEPARATOR",
        "TAB_FIELD_PREFIX",
        "PASS_FIELD_PREFIX",
        "CAP_FIELD_PREFIX",
        "DAILY_LIMIT_FIELD",
        "UNLOCK_LINE_TAG",
    )
    assert unlock == "".join(scripts.LUA[name] + " " for name in strings)
    assert prelude(resources.files("coinslot").joinpath("lua", "snapshot.lua").read_text()) == ""
    assert prelude("-- no tab_field here\nreturn 1 -- nor wallet_account") == ""  # comments cost nothing
    assert prelude("return ' -- ' .. tab_field(ARGV[1])") == scripts.LUA["tab_field"] + " "
    # Scripts that run rarely and on their own are called directly, not by name through the Store.
    direct = {
        "tab_quota",
        "recovery_issue",
        "recover",
        "hook_due",
        "hook_done",
        "insights_add",
    }  # hook_*: coinslot.hookdelivery
    assert set(SCRIPTS) | direct == {p.name.removesuffix(".lua") for p in LUA_FILES}


# The scripts at work, on standalone Redis and Cluster ---------------------------------


async def ledger(store: Store, wallet_id: str) -> list[dict[str, Any]]:
    return [
        parse_entry(e, wallet_id) or {} for e in await store.redis.lrange(keyspace.wallet_keys(wallet_id).ledger, 0, -1)
    ]


def accounts(entry: dict[str, Any]) -> list[str]:
    return [p["account"] for p in entry["postings"]]


async def test_the_scripts_write_the_fields_and_accounts_keyspace_names(store: Store, clock: FrozenClock) -> None:
    now = clock.now_ms()
    site, _ = await catalog.create_site(
        store,
        name="Daily Planet",
        origins=["http://localhost:8001"],
        tab_limit=100,
        site_id=unique("site_k"),
        now_ms=now,
    )
    await catalog.put_item(store, site, "article-1", title="One", price=30, now_ms=now)
    await catalog.put_item(store, site, "article-2", title="Two", price=50, now_ms=now)
    wallet = await wallets.create_wallet(store, currency="EUR", now_ms=now)
    k = keyspace.wallet_keys(wallet.wallet_id)

    # credit.lua, from a voucher: the wallet against the site's promotions.
    voucher = await vouchers.create_voucher(store, site, amount=40, now_ms=now)
    await vouchers.redeem(store, wallet, voucher.code, now_ms=now)
    # unlock.lua: the owned field; the second unlock goes below zero and opens a tab on the site.
    # Under a daily limit (budget.lua), it counts the day's spending in the limit's field.
    await wallets.update_settings(store, wallet, budget=None, daily_limit=1000, now_ms=now)
    shop = Catalog(store)
    for item, price in (("article-1", 30), ("article-2", 50)):
        await unlocks.purchase(
            store, shop, wallet, site_id=site.id, item_id=item, shown_price=price, idempotency=None, now_ms=now,
            purchase_id=unlocks.new_purchase_id(), tab_quota=unlocks.TabQuota(Addresses(store), "203.0.113.7", 1),
            links=None, pseudonym=lambda site, wallet_id: wallet_id,
        )  # fmt: skip
    # credit.lua from a paid checkout, then chargeback.lua: a refund that fails, and a dispute that is won.
    topup = await topups.create_topup(
        store, BuiltinCheckout(PUBLIC_URL), wallet, amount=500, allowed=lambda currency: (500,), now_ms=now
    )
    paid = await topups.fulfil(store, topup.session_id, amount=500, currency="EUR", now_ms=now, payment_id="pi_k")
    assert paid is topups.Fulfilment.CREDITED
    for status in ("succeeded", "failed"):
        await chargebacks.refund(store, RefundReport("re_k", "pi_k", 100, "EUR", status), now_ms=now)
    for status in ("open", "won"):
        await chargebacks.dispute(store, DisputeReport("dp_k", "pi_k", 200, "EUR", status), now_ms=now)

    owned = await store.redis.hgetall(k.owned)
    first, second = keyspace.owned_field(site.id, "article-1"), keyspace.owned_field(site.id, "article-2")
    assert set(owned) == {first, second}
    assert await store.redis.hexists(k.wallet, keyspace.tab_field(site.id))
    assert await store.redis.hget(k.wallet, keyspace.DAILY_LIMIT_FIELD) == f"1000|{now // 86_400_000}|80"
    me, revenue = keyspace.wallet_account(wallet.wallet_id), keyspace.site_revenue_account(site.id)
    clearing, disputes = keyspace.ACCOUNT_TOPUP_CLEARING, keyspace.ACCOUNT_TOPUP_DISPUTES
    voucher_ref = keyspace.voucher_credit_ref(vouchers.normalize_code(voucher.code))
    refund, dispute = keyspace.refund_field("re_k"), keyspace.dispute_field("dp_k")
    entries = await ledger(store, wallet.wallet_id)
    assert [(e["kind"], e["ref"], accounts(e)) for e in entries] == [
        ("voucher", voucher_ref, [me, keyspace.site_promotions_account(site.id)]),
        ("unlock", owned[first], [me, revenue]),
        ("unlock", owned[second], [me, revenue]),
        ("topup", keyspace.checkout_credit_ref(topup.session_id), [me, clearing]),
        ("refund", refund, [me, clearing]),
        ("refund-failed", keyspace.give_back_field(refund), [me, clearing]),
        ("dispute", dispute, [me, disputes]),
        ("dispute-won", keyspace.dispute_won_field(dispute), [me, disputes]),
    ]
    assert all(a.startswith(keyspace.site_accounts_prefix(site.id)) for e in entries[:3] for a in accounts(e)[1:])
    assert set(await store.redis.hgetall(k.chargebacks)) == {
        refund,
        keyspace.give_back_field(refund),
        keyspace.refunded_field(topup.id),
        dispute,
        keyspace.dispute_won_field(dispute),
    }
    assert await store.redis.smembers(k.credited) == {voucher_ref, keyspace.checkout_credit_ref(topup.session_id)}
