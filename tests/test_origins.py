"""Origins: stored as browsers send them, and nothing but a scheme and a host."""

from __future__ import annotations

import pytest

from coinslot.errors import BadRequest
from coinslot.origins import parse_origin


@pytest.mark.parametrize(
    "origin",
    [
        "http://a.com; script-src *",  # would be CSP syntax inside frame-ancestors
        "http://*",
        "https://*.example.com",
        "http://a.com%20b",
        "https://user:pw@news.example",
        "https://news.example/#x",
        "https://news.example:99999",
        "https://news.example:80a",
        "https://-news.example",
        "https://news_site.example",
        "ftp://news.example",
        "news.example",
        "https://",
    ],
)
def test_an_origin_is_a_scheme_and_a_host_and_nothing_else(origin: str) -> None:
    with pytest.raises(BadRequest, match="is not of the form"):
        parse_origin(origin)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("https://News.Example", "https://news.example"),
        ("https://news.example/", "https://news.example"),
        ("http://localhost:8001", "http://localhost:8001"),
        ("https://news.example:443", "https://news.example"),  # browsers send no default port
        ("http://127.0.0.1:80", "http://127.0.0.1"),
        ("http://[::1]:8001", "http://[::1]:8001"),
        ("https://bücher.example", "https://xn--bcher-kva.example"),
    ],
)
def test_an_origin_is_stored_as_browsers_send_it(given: str, stored: str) -> None:
    assert parse_origin(given) == stored
