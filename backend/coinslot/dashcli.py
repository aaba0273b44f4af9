"""``coinslot dashboard SITE``: print a one-time link that signs in to the site's dashboard."""

from __future__ import annotations

import argparse
from typing import Any

from coinslot import keyfiles
from coinslot.clock import SystemClock
from coinslot.commands import with_store
from coinslot.dashauth import LINK_TTL_S, DashboardAuth
from coinslot.settings import Settings


def sign_in_link(settings: Settings, site_id: str) -> str:
    """A one-time link that signs in to ``site_id``'s dashboard on the server these settings run."""
    from coinslot.app import DEFAULT_PUBLIC_URL  # as cli's snippet does: a command starts without the app

    # The same secrets as the server's (configured, or made in the same data directory): the
    # link's HMAC must be one the server recognises.
    secrets = [str(s).encode() for s in settings.secret_keys] or keyfiles.load_or_create_secrets(settings.data_dir)
    token = with_store(
        settings, lambda store: DashboardAuth(store, secrets).issue_link(site_id, now_ms=SystemClock().now_ms())
    )
    return f"{settings.public_url or DEFAULT_PUBLIC_URL}/dashboard/signin?token={token}"


def register(sub: Any) -> None:
    """Add ``dashboard`` to the ``coinslot`` parser's sub-commands ``sub``."""

    def run(settings: Settings, args: argparse.Namespace) -> int:
        print(sign_in_link(settings, args.site))
        print(f"(works once, for {LINK_TTL_S // 60} minutes; or sign in there with the site's secret key)")
        return 0

    dashboard = sub.add_parser("dashboard", help="print a one-time sign-in link to a site's dashboard")
    dashboard.add_argument("site")
    dashboard.set_defaults(func=run)
