"""Every name Coinslot gives in Redis (keys, hash fields, set members) and every ledger account.

Redis Cluster places a key by its hash tag, the part of its name between the first ``{`` and the
next ``}``, and one script call may only touch keys of one slot. So the keys that one call
touches share a tag:

- ``{w:<wallet id>}``: a wallet's money of record (its hash, the items it owns, its purchases,
  its ledger, the references credited to it, its top-ups, chargebacks and idempotency records),
  so that an unlock, a credit or a chargeback is one atomic script on one node;
- ``{s:<site id>}``: a site, its items and their index, and its tab quotas;
- ``{v:<code>}``: a voucher and the set of wallets that redeemed it.

Keys read and written one at a time (the indexes of wallets, sites, secret keys, checkout
sessions and payments; rate limits; the address salt) carry no tag and spread over the nodes.

Ledger postings name accounts: ``wallet:<id>`` for each wallet, and the counter accounts of sites
(revenue, promotions) and of the payment provider (clearing, disputes). A site's or the
provider's balance is the sum of its postings over every wallet's ledger (``coinslot.ledger``).

The Lua scripts take the names they use from here: ``coinslot.scripts`` renders each name as Lua,
from the very functions and constants below, and puts those a script mentions in front of it.
"""

from __future__ import annotations

# Wallets: the money of record, under {w:<id>} -------------------------------------------


def wallet_key(wallet_id: str) -> str:
    """The wallet's hash: currency, balance, generation, ledger sequence, frozen, and a tab field per site."""
    return "{w:" + wallet_id + "}"


def wallet_keys(wallet_id: str) -> WalletKeys:
    return WalletKeys(wallet_id)


class WalletKeys:
    """The keys of one wallet. Made for every unlock: plain concatenations, no f-strings, no lookups."""

    __slots__ = ("wallet", "owned", "purchases", "ledger", "credited", "tag")

    def __init__(self, wallet_id: str) -> None:
        self.tag = tag = "{w:" + wallet_id + "}"  # wallet_key(wallet_id), without the call
        self.wallet = tag
        self.owned = tag + ":own"  # hash: owned_field(site, item) → the purchase id that owns it
        self.purchases = tag + ":buy"  # hash: purchase id → its receipt (coinslot.ledger)
        self.ledger = tag + ":led"  # list of ledger entries, in sequence (coinslot.ledger)
        self.credited = tag + ":cred"  # set of the credit references credited (checkout_credit_ref, ...)

    def idempotency(self, route: str, key: str) -> str:
        """The outcome of the first request under an Idempotency-Key on one route."""
        return f"{self.tag}:idem:{route}:{key}"

    def topup(self, topup_id: str) -> str:
        """A top-up's hash: what was asked, its checkout session and its status."""
        return f"{self.tag}:tu:{topup_id}"

    @property
    def topups(self) -> str:
        """Sorted set of the wallet's top-up ids by creation time (ms), for as long as their records live."""
        return self.tag + ":tus"

    @property
    def chargebacks(self) -> str:
        """Hash of the refunds and disputes posted, by refund_field, refunded_field and dispute_field."""
        return self.tag + ":cb"


WALLET_INDEX = "wallets"  # set of every wallet id, for reconcile and exports


OWNED_FIELD_SEPARATOR = "\t"  # ids never hold one
TAB_FIELD_PREFIX = "tab:"
PASS_FIELD_PREFIX = "pass:"
CAP_FIELD_PREFIX = "cap:"
UNDOS_FIELD = "undos"  # the times (ms, comma-separated) of the reader's own refunds in the last 30 days
BUDGET_FIELD = "budget"  # what one click may pay without asking again (minor units); absent = the default
DAILY_LIMIT_FIELD = "limit"  # the wallet's daily spending limit: "<limit>|<UTC day, days since 1970>|<spent that day>"


def owned_field(site_id: str, item_id: str) -> str:
    """The field of the owned hash for one item of one site."""
    return site_id + OWNED_FIELD_SEPARATOR + item_id


def tab_field(site_id: str) -> str:
    """The field of the wallet's hash set when it first went below zero on a site (its tab there)."""
    return TAB_FIELD_PREFIX + site_id


def pass_field(site_id: str) -> str:
    """The field of the wallet's hash for its pass on a site: ``<until ms>|<purchase id>|<1 once used>``.

    The owned hash's value for an item that ends (a pass, or an item free under the daily cap) is
    ``<id>|<until ms>`` (``|c`` after it for the cap); one that is owned for good is the purchase id alone.
    """
    return PASS_FIELD_PREFIX + site_id


def cap_field(site_id: str) -> str:
    """The field of the wallet's hash for the daily cap on a site, written only where the site has one:
    ``<site day>|<spent that day>|<unlocks free under the cap that day>|<earlier days with free unlocks>``.
    """
    return CAP_FIELD_PREFIX + site_id


def checkout_credit_ref(session_id: str) -> str:
    """What a paid checkout session is credited under (in the credited set and the ledger entry's ref)."""
    return "cs:" + session_id


def voucher_credit_ref(code: str) -> str:
    """What a redeemed voucher (its normalized code) is credited under."""
    return "v:" + code


# The chargebacks hash. Each field is also the ledger ref of the entry that posted it.
GIVE_BACK_SUFFIX = ":back"
DISPUTE_WON_SUFFIX = ":won"


def refund_field(refund_id: str) -> str:
    """A refund: the amount its debit took, or 'dead' for one that failed before any debit."""
    return "refund:" + refund_id


def give_back_field(field: str) -> str:
    """Set when the debit of a refund (its ``refund_field``) that failed or was cancelled was given back."""
    return field + GIVE_BACK_SUFFIX


def refunded_field(topup_id: str) -> str:
    """What the live refunds of one top-up took together."""
    return "refunded:" + topup_id


def dispute_field(dispute_id: str) -> str:
    """A dispute: the amount its debit took."""
    return "dispute:" + dispute_id


def dispute_won_field(field: str) -> str:
    """Set when the debit of a dispute (its ``dispute_field``) was given back because the dispute was won."""
    return field + DISPUTE_WON_SUFFIX


# Sites, under {s:<id>} ------------------------------------------------------------------


def site_key(site_id: str) -> str:
    """The site's hash: name, currency, time zone, origins, limits, secret key digests, and its pass on offer."""
    return "{s:" + site_id + "}"


def item_key(site_id: str, item_id: str) -> str:
    return "{s:" + site_id + "}:item:" + item_id


def items_index_key(site_id: str) -> str:
    return "{s:" + site_id + "}:items"


def site_vouchers_key(site_id: str) -> str:
    """The site's voucher codes (normalized), in a sorted set of equal scores: listed in code order."""
    return "{s:" + site_id + "}:vouchers"


SITE_INDEX = "sites"


def secret_index_key(digest: str) -> str:
    """A site secret key's digest → the site it opens."""
    return "sk:" + digest


def tab_quota_key(site_id: str, address: str, day: str) -> str:
    """Wallets that opened a tab on a site from one client address (its pseudonym) on one site day."""
    return "{s:" + site_id + "}:tabip:" + day + ":" + address


CATALOG_CHANNEL = "coinslot:catalog"  # pub/sub: a site id, whenever its site or items change


# Vouchers, under {v:<code>} -------------------------------------------------------------


def voucher_keys(code: str) -> tuple[str, str]:
    """The voucher's hash, and the set of wallets that redeemed it."""
    tag = "{v:" + code + "}"
    return tag, tag + ":by"


def scratch_key(key: str, nonce: str) -> str:
    """Where a record is written whole before RENAMENX moves it to ``key``: same slot, name of its own."""
    return key + ":" + nonce


# Top-ups and the payment provider -------------------------------------------------------


def checkout_session_key(session_id: str) -> str:
    """A checkout session → the wallet and top-up it pays."""
    return "checkout:" + session_id


def payment_key(payment_id: str) -> str:
    """The provider's payment (a Stripe PaymentIntent) → the top-up it paid, for refunds and disputes."""
    return "payment:" + payment_id


def provider_check_key(session_id: str) -> str:
    """Set while the return page has just asked the provider about a session (a short cool-down)."""
    return "asked:" + session_id


# Client addresses and rate limits -------------------------------------------------------


def address_salt_key(day: int) -> str:
    """The random key of one UTC day (days since 1970) under which client addresses are hashed."""
    return f"addrsalt:{day}"


def rate_limit_key(bucket: str, window: int) -> str:
    """The counter of one bucket in one fixed window (its number since 1970)."""
    return f"rl:{bucket}:{window}"


# Buckets take the client address's pseudonym (coinslot.addresses), never the address.
def new_wallets_bucket(address: str) -> str:
    return "wallets:" + address


def redeem_tries_bucket(address: str) -> str:
    return "redeem-tries:" + address


def wallet_topups_bucket(wallet_id: str) -> str:
    return "topups-wallet:" + wallet_id


def address_topups_bucket(address: str) -> str:
    return "topups-ip:" + address


def wallet_unlocks_bucket(wallet_id: str) -> str:
    """A wallet's unlock attempts. Its key carries the wallet's hash tag: the unlock script counts it."""
    return "unlocks-wallet:" + wallet_key(wallet_id)


# Ledger accounts ------------------------------------------------------------------------

WALLET_ACCOUNT_PREFIX = "wallet:"
ACCOUNT_TOPUP_CLEARING = "topup:clearing"  # paid top-ups come from here; refunds go back to it
ACCOUNT_TOPUP_DISPUTES = "topup:disputes"  # disputed money, and what a won dispute gives back


def wallet_account(wallet_id: str) -> str:
    return WALLET_ACCOUNT_PREFIX + wallet_id


def site_accounts_prefix(site_id: str) -> str:
    """What every account of one site starts with."""
    return f"site:{site_id}:"


def site_revenue_account(site_id: str) -> str:
    """What readers paid the site for its items."""
    return f"site:{site_id}:revenue"


def site_promotions_account(site_id: str) -> str:
    """What the site gave readers in vouchers."""
    return f"site:{site_id}:promotions"


# Ledger lines and receipts: an unlock's entry is one compact line starting with this tag, and a
# receipt names its line (coinslot.ledger says how and why).
UNLOCK_LINE_TAG = "u|"


# Recovery codes (coinslot.recovery) -----------------------------------------------------
# Redis holds HMACs of codes, never a code. The index is untagged: a recovery knows only the
# code, so it cannot be kept in the wallet's slot; the wallet's hash names its current code,
# and only an index entry the wallet names opens it.

RECOVERY_FIELD = "recovery"  # in the wallet's hash: the HMAC of its current recovery code
RECOVERY_AT_FIELD = "recovery_ms"  # in the wallet's hash: when that code was made (ms)


def recovery_index_key(digest: str) -> str:
    """A recovery code's HMAC → the id of the wallet that named it."""
    return "rc:" + digest


# Like every bucket: a client address only as its pseudonym, a code only as a keyed hash of its prefix.
def recovery_tries_bucket(address: str) -> str:
    return "recover-tries:" + address


def recovery_prefix_bucket(prefix_tag: str) -> str:
    return "recover-prefix:" + prefix_tag


# Publisher webhooks (coinslot.hooks, coinslot.hookdelivery) -----------------------------
# The queue is a Stream under {hooks} with its retry schedule beside it: moving a due retry, or
# acknowledging a delivery and scheduling its retry, is one script on one node. A site's endpoints,
# events and attempts live under {hk:<site>}, read together; no script touches both tags.

HOOK_QUEUE = "{hooks}:q"  # stream: deliveries due now, one entry per (event, endpoint, attempt)
HOOK_RETRIES = "{hooks}:retry"  # sorted set: a delivery waiting for its retry → when it is due (ms)
HOOK_GROUP = "deliverers"  # the consumer group every server process reads the queue in


def hook_endpoints_key(site_id: str) -> str:
    """A site's webhook endpoints: endpoint id → its record (JSON: url, events, signing secrets)."""
    return "{hk:" + site_id + "}:ep"


def hook_log_key(site_id: str) -> str:
    """A site's webhook events, newest last: event id → when it was made (ms)."""
    return "{hk:" + site_id + "}:log"


def hook_event_key(site_id: str, event_id: str) -> str:
    """One event: its type, time, data, and each endpoint's delivery state."""
    return "{hk:" + site_id + "}:evt:" + event_id


def hook_attempts_key(site_id: str, event_id: str) -> str:
    """One event's delivery attempts, oldest first (JSON each)."""
    return "{hk:" + site_id + "}:att:" + event_id


# The publisher's dashboard (coinslot.dashauth) and its counters (coinslot.insights) ----------
# A site's counters of one day live under {st:<site>}, so a day's numbers sit on one node. They
# hold counts and HyperLogLogs of per-site pseudonyms only: no wallet id, no address.


def dashboard_link_key(digest: str) -> str:
    """A one-time sign-in link, by the HMAC of its token: the site it signs in to (expires)."""
    return "dash:link:" + digest


def dashboard_session_key(session_id: str) -> str:
    """A signed-in publisher's session: site, CSRF token, when it began (expires)."""
    return "dash:session:" + session_id


def failed_signins_bucket(address: str) -> str:
    return "dash-signin:" + address


def insights_day_key(site_id: str, day: str) -> str:
    """A site's counters of one of its days: ``<event>`` for the site, ``<event>|<item>`` per item."""
    return "{st:" + site_id + "}:d:" + day


def insights_readers_key(site_id: str, day: str) -> str:
    """A HyperLogLog of the per-site pseudonyms of the readers seen on one of the site's days."""
    return "{st:" + site_id + "}:r:" + day


def price_test_key(site_id: str, item_id: str, since_ms: int) -> str:
    """A price test's counts (coinslot.pricetests), ``<variant>:<event>``; ``since_ms`` names the test."""
    return "{st:" + site_id + "}:t:" + item_id + ":" + str(since_ms)


def insights_topup_key(topup_id: str) -> str:
    """The site and item a top-up link was offered for, so its checkout counts in their funnel."""
    return "insights:tu:" + topup_id


def insights_tab_key(site_id: str) -> str:
    """A site's running sums of its tab (coinslot.tabs): what unlocks lent, what credits repaid. No day:
    a balance, kept for good."""
    return "{st:" + site_id + "}:tab"


TAB_LENT_FIELD, TAB_REPAID_FIELD = "lent", "repaid"
