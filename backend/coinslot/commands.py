"""What every ``coinslot`` command needs, whichever module registers it.

A command works whether or not a server runs: it uses the configured Redis, the embedded server
a running ``coinslot serve`` holds, or starts one for itself. It names readers as the server
names them to publishers: by their per-site pseudonym, made from the deployment's first secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from coinslot.catalog import Catalog
from coinslot.discovery import redis_for_command
from coinslot.insights import Insights, Note
from coinslot.keyfiles import load_or_create_secrets
from coinslot.keyring import KeyRing
from coinslot.settings import Settings
from coinslot.store import Store, connect
from coinslot.tokens import Pseudonym, UnlockTokens, derive


@contextlib.contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    if settings.redis_url:
        yield settings.redis_url
    else:
        with redis_for_command(settings.data_dir) as url:
            yield url


def with_store(settings: Settings, work: Callable[[Store], Awaitable[Any]]) -> Any:
    """Run ``work`` with a store on the deployment's Redis; its result."""

    async def run(url: str) -> Any:
        store = Store(await connect(url))
        try:
            return await work(store)
        finally:
            await store.close()

    with redis_url(settings) as url:
        return asyncio.run(run(url))


def pseudonyms(settings: Settings) -> Pseudonym:
    """The readers' pseudonyms the server gives this deployment's publishers (as ``create_app`` makes them)."""
    secrets = [str(s).encode() for s in settings.secret_keys] or load_or_create_secrets(settings.data_dir)
    ring = KeyRing.load(settings.data_dir, settings.unlock_key_files)
    issuer = settings.public_url or "http://127.0.0.1"  # a pseudonym does not depend on it
    tokens = UnlockTokens(ring, issuer=issuer, pseudonym_secret=derive(secrets[0], "pseudonym"), livemode=False)
    return tokens.pseudonym


async def count(settings: Settings, store: Store, notes: Iterable[Note]) -> None:
    """Count for the dashboard what a command did: no server's writer (``Insights.run``) runs here, so the
    notes are written at once. The money has moved already: a failure is logged, never raised."""
    counter = Insights(store, Catalog(store), pseudonyms(settings), retention_days=settings.insights_days)
    try:
        await counter.write(notes)
    except Exception:
        logging.getLogger("coinslot.insights").exception("a command's counts could not be written; they are lost")
