"""The one settings object, read from ``COINSLOT_*`` variables and ``.env``.

Nothing else in the package reads the environment. A missing or malformed value raises
``ConfigurationError`` naming the variable, so a bad deployment fails at start-up.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.config import Config
from starlette.datastructures import CommaSeparatedStrings, Secret

from coinslot.errors import BadRequest, ConfigurationError
from coinslot.money import check_currency

PREFIX = "COINSLOT_"
DEFAULT_TOPUP_AMOUNTS = (200, 500, 1000)  # minor units
MIN_TOPUP = 50  # minor units; Stripe's minimum charge for EUR/USD


def is_loopback_host(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigurationError(f"{PREFIX}{name}={value!r} is not an origin like https://pay.example.com")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"{PREFIX}{name}={value!r} must use https beyond loopback")
    return f"{parts.scheme}://{parts.netloc}"


def _topup_amounts(value: str) -> dict[str, tuple[int, ...]]:
    """``EUR:200,500,1000;GBP:300,500`` → per-currency allowed amounts; ``*`` is the default."""
    table: dict[str, tuple[int, ...]] = {"*": DEFAULT_TOPUP_AMOUNTS}
    for part in filter(None, (p.strip() for p in value.split(";"))):
        currency, _, amounts = part.partition(":")
        try:
            parsed = tuple(sorted(int(a) for a in amounts.split(",") if a.strip()))
        except ValueError as exc:
            raise ConfigurationError(f"{PREFIX}TOPUP_AMOUNTS: {part!r} is not CURRENCY:int,int,...") from exc
        if not parsed or min(parsed) < MIN_TOPUP:
            raise ConfigurationError(f"{PREFIX}TOPUP_AMOUNTS: {part!r} needs amounts >= {MIN_TOPUP}")
        try:
            table[check_currency(currency.strip())] = parsed
        except BadRequest as exc:
            raise ConfigurationError(f"{PREFIX}TOPUP_AMOUNTS: {exc}") from exc
    return table


@dataclass(frozen=True)
class Settings:
    public_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".coinslot")
    payments: str = "test"
    payments_explicit: bool = False
    stripe_secret_key: Secret | None = None
    stripe_webhook_secret: Secret | None = None
    stripe_api_base: str | None = None
    # Secrets for wallet tokens, pseudonyms and recovery codes, oldest first; when empty
    # they are created in the data directory on first run.
    secret_keys: tuple[Secret, ...] = ()
    # PEM files of Ed25519 unlock-token keys, oldest first; when empty, kept in data_dir/keys.
    unlock_key_files: tuple[Path, ...] = ()
    unlock_token_ttl: int = 600  # seconds
    topup_amounts: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: {"*": DEFAULT_TOPUP_AMOUNTS})
    max_body_bytes: int = 16 * 1024
    max_content_bytes: int = 256 * 1024  # hosted item content, per item
    tab_wallets_per_ip: int = 3  # new wallets a site lets run a tab, per IP per day
    trusted_proxy_hops: int = 0  # X-Forwarded-For entries to trust for the client IP
    wallets_per_ip_per_hour: int = 60  # guest wallets one address may create
    failed_redeems_per_ip_per_hour: int = 20  # wrong voucher codes before an address must wait
    # Card testing: fraudsters try stolen cards through cheap checkouts; cap the sessions one
    # wallet and one address may open.
    topups_per_wallet_per_hour: int = 10
    topups_per_ip_per_hour: int = 30
    # A reader presses a few times a minute at most; a wallet hammering unlocks (a script, a
    # stolen token) is slowed down without costing a reader anything.
    unlocks_per_wallet_per_minute: int = 120
    # Bearer token Prometheus sends to read /metrics; without one /metrics is off (it tells
    # anyone the money credited per currency and the alerts raised).
    metrics_token: Secret | None = None
    # The front door (coinslot.serving): what one client may hold of a server process.
    max_head_bytes: int = 16 * 1024  # request line + headers (browsers send 1-4 KB); more gets 431
    request_timeout: float = 10.0  # seconds for a whole request to arrive (a phone on a bad link needs 1-2); then 408
    max_connections: int = 1000  # open connections per process, a file descriptor each; more get 503
    # A wallet nothing was ever paid into expires, with its keys, after this long (13 months).
    empty_wallet_days: int = 396
    # Wrong recovery codes tried in an hour, per client address and per code prefix (its first
    # group: however many addresses a guesser has, at most this many times 32^4 tries an hour in all).
    failed_recoveries_per_ip_per_hour: int = 10
    failed_recoveries_per_prefix_per_hour: int = 5
    # Publisher webhooks (coinslot.hooks): endpoints on private or loopback addresses are refused
    # unless allowed (from_env allows them when test mode runs implicitly, which is loopback only).
    webhooks_allow_private: bool = False
    webhook_first_retry: float = 30.0  # seconds before the first retry; each next one waits twice as long
    webhook_timeout: float = 10.0  # seconds to connect, and again to get an answer
    insights_days: int = 400  # the dashboard's daily counters are kept this long after their day
    failed_signins_per_ip_per_hour: int = 10  # wrong secret keys on the dashboard's sign-in, per address

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> Settings:
        env = os.environ if environ is None else environ
        path = Path(env_file) if env_file is not None else None
        config = Config(path if path is not None and path.is_file() else None, environ=env, env_prefix=PREFIX)

        def get(name: str, cast: Any = str, default: Any = None) -> Any:
            try:
                return config(name, cast=cast, default=default)
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(f"{PREFIX}{name}: {exc}") from exc

        public_url = get("PUBLIC_URL")
        stripe_key = get("STRIPE_SECRET_KEY", Secret)
        webhook_secret = get("STRIPE_WEBHOOK_SECRET", Secret)
        payments = get("PAYMENTS")
        if payments is None:
            payments = "stripe" if stripe_key else "test"
        if payments not in ("test", "stripe"):
            raise ConfigurationError(f"{PREFIX}PAYMENTS={payments!r} must be 'test' or 'stripe'")
        if bool(stripe_key) != bool(webhook_secret):
            raise ConfigurationError(
                f"{PREFIX}STRIPE_SECRET_KEY and {PREFIX}STRIPE_WEBHOOK_SECRET must be set together"
            )
        if payments == "stripe" and not stripe_key:
            raise ConfigurationError(f"{PREFIX}PAYMENTS=stripe needs {PREFIX}STRIPE_SECRET_KEY")
        if webhook_secret and not any(w.strip() for w in str(webhook_secret).split(",")):
            # Only commas or blanks: every webhook would be refused, and Stripe's events lost after three days.
            raise ConfigurationError(f"{PREFIX}STRIPE_WEBHOOK_SECRET holds no secret (whsec_…, comma-separated)")
        secrets = tuple(Secret(s) for s in get("SECRET_KEYS", CommaSeparatedStrings, ""))
        if any(len(str(s)) < 32 for s in secrets):
            raise ConfigurationError(f"{PREFIX}SECRET_KEYS: every secret needs at least 32 characters")
        metrics_token = get("METRICS_TOKEN", Secret)
        if metrics_token is not None and len(str(metrics_token)) < 32:
            raise ConfigurationError(f"{PREFIX}METRICS_TOKEN needs at least 32 characters")
        positive = {
            "UNLOCK_TOKEN_TTL": 600,
            "MAX_BODY_BYTES": 16 * 1024,
            "MAX_CONTENT_BYTES": 256 * 1024,
            "MAX_HEAD_BYTES": 16 * 1024,
            "MAX_CONNECTIONS": 1000,
            "EMPTY_WALLET_DAYS": 396,
            "INSIGHTS_DAYS": 400,
            "FAILED_SIGNINS_PER_IP_PER_HOUR": 10,
        }
        numbers = {name: get(name, int, default) for name, default in positive.items()}
        for name, number in numbers.items():
            if number <= 0:
                raise ConfigurationError(f"{PREFIX}{name}={number} must be > 0")
        request_timeout = get("REQUEST_TIMEOUT", float, 10.0)
        if not request_timeout > 0:
            raise ConfigurationError(f"{PREFIX}REQUEST_TIMEOUT={request_timeout} must be > 0 (seconds)")
        return cls(
            public_url=_origin("PUBLIC_URL", public_url) if public_url else None,
            redis_url=get("REDIS_URL"),
            data_dir=Path(get("DATA_DIR", str, ".coinslot")),
            payments=payments,
            payments_explicit=get("PAYMENTS") is not None,
            stripe_secret_key=stripe_key,
            stripe_webhook_secret=webhook_secret,
            stripe_api_base=get("STRIPE_API_BASE"),
            secret_keys=secrets,
            unlock_key_files=tuple(Path(p) for p in get("UNLOCK_KEY_FILES", CommaSeparatedStrings, "")),
            unlock_token_ttl=numbers["UNLOCK_TOKEN_TTL"],
            topup_amounts=_topup_amounts(get("TOPUP_AMOUNTS", str, "")),
            max_body_bytes=numbers["MAX_BODY_BYTES"],
            max_content_bytes=numbers["MAX_CONTENT_BYTES"],
            tab_wallets_per_ip=get("TAB_WALLETS_PER_IP", int, 3),
            trusted_proxy_hops=get("TRUSTED_PROXY_HOPS", int, 0),
            wallets_per_ip_per_hour=get("WALLETS_PER_IP_PER_HOUR", int, 60),
            failed_redeems_per_ip_per_hour=get("FAILED_REDEEMS_PER_IP_PER_HOUR", int, 20),
            topups_per_wallet_per_hour=get("TOPUPS_PER_WALLET_PER_HOUR", int, 10),
            topups_per_ip_per_hour=get("TOPUPS_PER_IP_PER_HOUR", int, 30),
            unlocks_per_wallet_per_minute=get("UNLOCKS_PER_WALLET_PER_MINUTE", int, 120),
            metrics_token=metrics_token,
            max_head_bytes=numbers["MAX_HEAD_BYTES"],
            request_timeout=request_timeout,
            max_connections=numbers["MAX_CONNECTIONS"],
            empty_wallet_days=numbers["EMPTY_WALLET_DAYS"],
            failed_recoveries_per_ip_per_hour=get("FAILED_RECOVERIES_PER_IP_PER_HOUR", int, 10),
            failed_recoveries_per_prefix_per_hour=get("FAILED_RECOVERIES_PER_PREFIX_PER_HOUR", int, 5),
            webhooks_allow_private=get("WEBHOOKS_ALLOW_PRIVATE", bool, get("PAYMENTS") is None and payments == "test"),
            webhook_first_retry=get("WEBHOOK_FIRST_RETRY", float, 30.0),
            webhook_timeout=get("WEBHOOK_TIMEOUT", float, 10.0),
            insights_days=numbers["INSIGHTS_DAYS"],
            failed_signins_per_ip_per_hour=numbers["FAILED_SIGNINS_PER_IP_PER_HOUR"],
        ).checked_limits()

    def checked_limits(self) -> Settings:
        """A limit of 0 or less would refuse every top-up (or unlock): loud at start-up instead."""
        for name in ("TOPUPS_PER_WALLET_PER_HOUR", "TOPUPS_PER_IP_PER_HOUR", "UNLOCKS_PER_WALLET_PER_MINUTE"):
            if getattr(self, name.lower()) <= 0:
                raise ConfigurationError(f"{PREFIX}{name}={getattr(self, name.lower())} must be > 0")
        for name in ("WEBHOOK_FIRST_RETRY", "WEBHOOK_TIMEOUT"):
            if not getattr(self, name.lower()) > 0:
                raise ConfigurationError(f"{PREFIX}{name}={getattr(self, name.lower())} must be > 0 (seconds)")
        # Likewise for recovery: 0 would turn away a reader's right code with the wrong ones.
        for name in ("FAILED_RECOVERIES_PER_IP_PER_HOUR", "FAILED_RECOVERIES_PER_PREFIX_PER_HOUR"):
            if getattr(self, name.lower()) <= 0:
                raise ConfigurationError(f"{PREFIX}{name}={getattr(self, name.lower())} must be > 0")
        return self

    def allowed_topups(self, currency: str) -> tuple[int, ...]:
        return self.topup_amounts.get(currency, self.topup_amounts["*"])

    @property
    def livemode(self) -> bool:
        return self.payments == "stripe" and str(self.stripe_secret_key or "").startswith("sk_live_")

    def check_for_serving(self, host: str) -> None:
        """Refuse settings that are only safe on loopback when binding elsewhere."""
        if is_loopback_host(host):
            return
        if not self.public_url:
            raise ConfigurationError(f"{PREFIX}PUBLIC_URL is required when serving on {host}")
        if self.payments == "test" and not self.payments_explicit:
            raise ConfigurationError(
                f"test-mode checkout is refused on {host}; set {PREFIX}PAYMENTS=test explicitly or configure Stripe"
            )
