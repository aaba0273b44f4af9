"""One settings object, loud when wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from coinslot.errors import ConfigurationError
from coinslot.settings import Settings


def load(**env: str) -> Settings:
    return Settings.from_env({f"COINSLOT_{k}": v for k, v in env.items()}, env_file=None)


def test_defaults_are_embedded_redis_and_test_payments() -> None:
    s = load()
    assert (s.redis_url, s.payments, s.data_dir, s.public_url) == (None, "test", Path(".coinslot"), None)
    assert s.allowed_topups("EUR") == (200, 500, 1000)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PUBLIC_URL": "pay.example.com"}, "COINSLOT_PUBLIC_URL"),
        ({"PUBLIC_URL": "http://pay.example.com"}, "COINSLOT_PUBLIC_URL"),
        ({"PUBLIC_URL": "https://pay.example.com/path"}, "COINSLOT_PUBLIC_URL"),
        ({"UNLOCK_TOKEN_TTL": "ten"}, "COINSLOT_UNLOCK_TOKEN_TTL"),
        ({"UNLOCK_TOKEN_TTL": "0"}, "COINSLOT_UNLOCK_TOKEN_TTL"),
        ({"PAYMENTS": "paypal"}, "COINSLOT_PAYMENTS"),
        ({"STRIPE_SECRET_KEY": "sk_test_x"}, "COINSLOT_STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_WEBHOOK_SECRET": "whsec_x"}, "COINSLOT_STRIPE_SECRET_KEY"),
        ({"PAYMENTS": "stripe"}, "COINSLOT_STRIPE_SECRET_KEY"),
        ({"TOPUPS_PER_WALLET_PER_HOUR": "many"}, "COINSLOT_TOPUPS_PER_WALLET_PER_HOUR"),
        ({"TOPUPS_PER_IP_PER_HOUR": "many"}, "COINSLOT_TOPUPS_PER_IP_PER_HOUR"),
        ({"TOPUPS_PER_WALLET_PER_HOUR": "0"}, "COINSLOT_TOPUPS_PER_WALLET_PER_HOUR"),
        ({"TOPUPS_PER_IP_PER_HOUR": "-1"}, "COINSLOT_TOPUPS_PER_IP_PER_HOUR"),
        ({"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": " , "}, "COINSLOT_STRIPE_WEBHOOK_SECRET"),
        ({"SECRET_KEYS": "short"}, "COINSLOT_SECRET_KEYS"),
        ({"METRICS_TOKEN": "guessable"}, "COINSLOT_METRICS_TOKEN"),
        ({"TOPUP_AMOUNTS": "EUR:20"}, "COINSLOT_TOPUP_AMOUNTS"),
        ({"TOPUP_AMOUNTS": "XXX:200"}, "COINSLOT_TOPUP_AMOUNTS"),
        ({"TOPUP_AMOUNTS": "EUR:five"}, "COINSLOT_TOPUP_AMOUNTS"),
    ],
)
def test_malformed_values_fail_naming_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        load(**env)


def test_env_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("COINSLOT_PUBLIC_URL=https://pay.example.com\nCOINSLOT_TOPUP_AMOUNTS=GBP:300,500\n")
    s = Settings.from_env({}, env_file=env_file)
    assert s.public_url == "https://pay.example.com"
    assert s.allowed_topups("GBP") == (300, 500)
    assert s.allowed_topups("EUR") == (200, 500, 1000)


def test_secrets_never_print() -> None:
    s = load(
        STRIPE_SECRET_KEY="sk_test_abc", STRIPE_WEBHOOK_SECRET="whsec_abc", SECRET_KEYS="x" * 40, METRICS_TOKEN="m" * 32
    )
    assert str(s.metrics_token) == "m" * 32
    for secret in ("sk_test_abc", "whsec_abc", "x" * 40, "m" * 32):
        assert secret not in repr(s)


def test_test_checkout_refused_beyond_loopback_unless_explicit() -> None:
    with pytest.raises(ConfigurationError, match="test-mode checkout is refused"):
        load(PUBLIC_URL="https://pay.example.com").check_for_serving("0.0.0.0")
    load(PUBLIC_URL="https://pay.example.com", PAYMENTS="test").check_for_serving("0.0.0.0")
    load().check_for_serving("127.0.0.1")


def test_stripe_is_the_default_once_both_secrets_are_set() -> None:
    s = load(STRIPE_SECRET_KEY="sk_test_abc", STRIPE_WEBHOOK_SECRET="whsec_abc", STRIPE_API_BASE="http://127.0.0.1:9")
    assert (s.payments, s.stripe_api_base, s.livemode) == ("stripe", "http://127.0.0.1:9", False)
    assert load(STRIPE_SECRET_KEY="sk_live_abc", STRIPE_WEBHOOK_SECRET="whsec_abc").livemode is True


def test_card_testing_limits_default_and_read() -> None:
    assert (load().topups_per_wallet_per_hour, load().topups_per_ip_per_hour) == (10, 30)
    s = load(TOPUPS_PER_WALLET_PER_HOUR="3", TOPUPS_PER_IP_PER_HOUR="7")
    assert (s.topups_per_wallet_per_hour, s.topups_per_ip_per_hour) == (3, 7)
