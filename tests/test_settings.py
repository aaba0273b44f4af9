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
        ({"SECRET_KEYS": "short"}, "COINSLOT_SECRET_KEYS"),
        ({"TOPUP_AMOUNTS": "EUR:20"}, "COINSLOT_TOPUP_AMOUNTS"),
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
    s = load(STRIPE_SECRET_KEY="sk_test_abc", STRIPE_WEBHOOK_SECRET="whsec_abc", SECRET_KEYS="x" * 40)
    assert "sk_test_abc" not in repr(s) and "whsec_abc" not in repr(s) and "x" * 40 not in repr(s)


def test_test_checkout_refused_beyond_loopback_unless_explicit() -> None:
    with pytest.raises(ConfigurationError, match="test-mode checkout is refused"):
        load(PUBLIC_URL="https://pay.example.com").check_for_serving("0.0.0.0")
    load(PUBLIC_URL="https://pay.example.com", PAYMENTS="test").check_for_serving("0.0.0.0")
    load().check_for_serving("127.0.0.1")
