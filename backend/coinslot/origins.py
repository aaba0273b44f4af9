"""Origins, the sites a card may be framed by and public reads may come from.

An origin is stored exactly as browsers send it in ``Origin``, so checks compare strings, and
it reaches ``frame-ancestors`` as written: nothing but a scheme and a host may pass.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from coinslot.errors import BadRequest

HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)\Z")  # one label of a DNS name, in ASCII


def parse_origin(value: str) -> str:
    """An origin as browsers send it (scheme, host, port unless the default), for Origin checks and CSP.

    The host must be a DNS name or an IP address: anything else would pass into
    ``frame-ancestors`` as CSP syntax (``*``, ``; script-src …``).
    """
    wrong = BadRequest(f"origin {value!r} is not of the form https://news.example.com")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise wrong
    try:
        port = parts.port
    except ValueError as exc:
        raise wrong from exc
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise wrong
    host = _origin_host(parts.hostname)
    if host is None:
        raise wrong
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def _origin_host(hostname: str) -> str | None:
    """The host as it appears in an Origin header (IDNA-encoded, IPv6 in brackets), or None if it is not one."""
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    try:
        ascii_host = hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_host.split(".")
    return ascii_host if all(HOST_LABEL.match(label) for label in labels) else None
