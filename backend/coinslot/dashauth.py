"""Signing in to a site's dashboard, without accounts: a one-time link or the site's secret key.

A link carries 256 random bits; Redis keeps only their HMAC, with the site, for ``LINK_TTL_S``,
and using the link deletes it in the same command that reads it (GETDEL), so two tabs racing on
one link get one session. A session is a random id whose record (site, CSRF token) lives in Redis
for ``SESSION_TTL_S``; the browser holds the id signed with itsdangerous, so a forged or altered
cookie is refused before Redis is asked, and signing out deletes the record, ending the session
wherever the cookie may still be.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

from coinslot import catalog, keyspace, ratelimit
from coinslot.errors import Unauthorized
from coinslot.store import Store

LINK_TTL_S = 10 * 60  # a printed sign-in link works this long, once
SESSION_TTL_S = 12 * 60 * 60  # a session ends this long after sign-in, whatever happens meanwhile
SIGNIN_WINDOW_S = 3600  # wrong secret keys are counted per address in windows of an hour


class SignInRefused(Unauthorized):
    """A sign-in link that is unknown, used or expired; a wrong secret key; a session that ended."""

    type = "dashboard-sign-in-refused"
    title = "Sign-in refused"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    site_id: str
    csrf: str  # every form of this session carries it; a cross-site page cannot read it
    started_ms: int

    def checks_csrf(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class DashboardAuth:
    """Sign-in links and sessions. ``secrets`` are the deployment's (oldest first), as for wallet tokens."""

    def __init__(self, store: Store, secrets_: Sequence[bytes]) -> None:
        self.store = store
        # The newest secret keys the links' HMAC: a link lives ten minutes, so rotation loses at most those.
        self._link_key = hmac.new(secrets_[-1], b"coinslot.dashboard-link", hashlib.sha256).digest()
        self._cookies = URLSafeTimedSerializer(list(secrets_), salt="coinslot.dashboard-session")

    def _digest(self, token: str) -> str:
        return hmac.new(self._link_key, token.encode(), hashlib.sha256).hexdigest()

    async def issue_link(self, site_id: str, *, now_ms: int) -> str:
        """A new one-time sign-in token for ``site_id`` (the site must exist)."""
        await catalog.Catalog(self.store).site(site_id)
        token = secrets.token_urlsafe(32)
        key = keyspace.dashboard_link_key(self._digest(token))
        await self.store.redis.set(key, f"{site_id} {now_ms}", ex=LINK_TTL_S)
        return token

    async def use_link(self, token: str, *, now_ms: int) -> Session:
        """Exchange a sign-in token for a session, once; an unknown, used or expired one is refused alike."""
        if not 20 <= len(token) <= 100:
            raise SignInRefused("this sign-in link is not valid (used, expired or mistyped); print a new one")
        found = await self.store.redis.getdel(keyspace.dashboard_link_key(self._digest(token)))
        site_id, _, issued_ms = (found or "").partition(" ")
        # Redis' TTL ends it too; the app's clock is checked as well, so that it decides alone.
        if not found or now_ms - int(issued_ms) > LINK_TTL_S * 1000:
            raise SignInRefused("this sign-in link is not valid (used, expired or mistyped); print a new one")
        return await self.open_session(site_id, now_ms=now_ms)

    async def use_secret_key(self, secret_key: str, *, now_ms: int, tries: ratelimit.PerAddress) -> Session:
        """A session for the site whose secret key this is. Every try counts against the address
        before it is checked (parallel guesses cannot slip past); a right key is uncounted."""
        bucket = keyspace.failed_signins_bucket(tries.address)
        await ratelimit.hit(
            self.store, bucket, limit=tries.per_hour, window_s=SIGNIN_WINDOW_S, now_ms=now_ms, what="wrong secret keys"
        )
        try:
            site = await catalog.authenticate(self.store, secret_key.strip(), now_ms=now_ms)
        except Unauthorized as exc:
            raise SignInRefused("secret key not recognised (unknown, mistyped or retired)") from exc
        await ratelimit.give_back(self.store, bucket, window_s=SIGNIN_WINDOW_S, now_ms=now_ms)
        return await self.open_session(site.id, now_ms=now_ms)

    async def open_session(self, site_id: str, *, now_ms: int) -> Session:
        session = Session(secrets.token_urlsafe(24), site_id, secrets.token_urlsafe(24), now_ms)
        key = keyspace.dashboard_session_key(session.id)
        async with self.store.redis.pipeline(transaction=True) as pipe:  # one key: never a session without its end
            pipe.hset(key, mapping={"site": site_id, "csrf": session.csrf, "started_ms": now_ms})
            pipe.expire(key, SESSION_TTL_S)
            await pipe.execute()
        return session

    def cookie_value(self, session: Session) -> str:
        return self._cookies.dumps(session.id)

    async def session(self, cookie: str | None, *, now_ms: int) -> Session:
        """The live session a cookie names; ``SignInRefused`` for a forged, old or signed-out one."""
        if not cookie:
            raise SignInRefused("not signed in")
        try:
            session_id = self._cookies.loads(cookie, max_age=SESSION_TTL_S)
        except BadData as exc:
            raise SignInRefused("the session cookie is not one this server made, or it is too old") from exc
        if not isinstance(session_id, str):
            raise SignInRefused("the session cookie is not one this server made")
        record = await self.store.redis.hgetall(keyspace.dashboard_session_key(session_id))
        if not record or now_ms - int(record["started_ms"]) > SESSION_TTL_S * 1000:
            raise SignInRefused("the session has ended (signed out or expired)")
        return Session(session_id, record["site"], record["csrf"], int(record["started_ms"]))

    async def close(self, session: Session) -> None:
        await self.store.redis.delete(keyspace.dashboard_session_key(session.id))
