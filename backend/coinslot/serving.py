"""How a process serves HTTP: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds neither the size of a request's head (httptools buffers a header of any length)
nor the time a client may take to send a request, nor the connections one process holds. Each
is an easy denial of service for one client, so the protocol here adds them at the edges of
uvicorn's own, keeping its parser and request cycle:

- a request line and headers over ``max_head_bytes`` get 431 and the connection closes, before
  more than that is handed to the parser;
- a request not complete within ``request_timeout_s`` of its connection (or, on a kept-alive
  connection, of its first byte) gets 408, or is cut if its response has begun;
- past ``max_connections`` open connections a new one gets 503 and closes at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from coinslot import keyfiles
from coinslot.app import create_app
from coinslot.discovery import running_url
from coinslot.embedded import EmbeddedRedis
from coinslot.keyring import KeyRing
from coinslot.settings import Settings

LINGER_S = 1.0  # seconds a refused connection is still read (and dropped) before it closes


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int
    request_timeout_s: float
    max_connections: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_head_bytes, settings.request_timeout, settings.max_connections)


def protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """The HTTP protocol class to hand uvicorn (``http=``), holding ``limits``."""
    return type("LimitedHttpToolsProtocol", (_LimitedHttpToolsProtocol,), {"limits": limits, "sweeping": False})


class _LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: Limits
    sweeping: bool  # whether this class's sweep for overdue requests is scheduled

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0  # of the request being received, while its head is incomplete
        self._in_body = False
        # Loop time since which a request is awaited, or None while none is. A sweep looks at
        # these now and then: a timer per request cost more than the rest of the limits together.
        self._awaited_since: float | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, b"too many connections", retry_after=True)
            return
        self._awaited_since = self.loop.time()
        cls = type(self)
        if not cls.sweeping:
            cls.sweeping = True
            self.loop.call_soon(_sweep, cls, self.loop, self.connections)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():  # nothing more is parsed
            return
        if self._in_body:
            super().data_received(data)
            return
        room = self.limits.max_head_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            return
        self._head_bytes += room
        super().data_received(data[:room])
        if self._refused or self.transport.is_closing():
            return
        if self._in_body:  # the head ended within what was fed: the rest is body (or the next request)
            self.data_received(data[room:])
        else:
            self._refuse(431, b"request line and headers exceed %d bytes" % self.limits.max_head_bytes)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._awaited_since is None:
            self._awaited_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_body = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaited_since = None
        self._in_body = False
        self._head_bytes = 0
        super().on_message_complete()

    def overdue(self, now: float) -> bool:
        return self._awaited_since is not None and now - self._awaited_since > self.limits.request_timeout_s

    def time_out(self) -> None:
        self._awaited_since = None
        if self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # too late for a status: the app answered before the body was in
        else:
            self._refuse(408, b"request not complete within %g s" % self.limits.request_timeout_s)

    def _refuse(self, status: int, reason: bytes, *, retry_after: bool = False) -> None:
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        head += [
            b"content-type: text/plain; charset=utf-8\r\n",
            b"content-length: %d\r\n" % len(reason),
            b"connection: close\r\n\r\n",
            reason,
        ]
        self.transport.write(b"".join(head))
        self._refused = True
        self._awaited_since = None
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # an app still reading the body hears http.disconnect now
            self.cycle.message_event.set()
        # Closing with the client's bytes still unread would send a reset, which can destroy our
        # answer before the client reads it: end our side, read and drop for a moment, then close.
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()


def run(app: Any, *, host: str, port: int, limits: Limits, access_log: bool = False) -> None:
    """Serve ``app`` in this process until interrupted.

    The client's address is the socket's: forwarded headers are the app's to read, as far as
    ``COINSLOT_TRUSTED_PROXY_HOPS`` allows.
    """
    uvicorn.run(
        app,
        host=host,
        port=port,
        http=protocol(limits),
        proxy_headers=False,
        access_log=access_log,
        log_config=None,  # configure_logging's
    )


class WorkerProtocol(_LimitedHttpToolsProtocol):
    """The protocol of ``run_workers``' processes, which uvicorn imports by name; ``worker_app`` sets its limits."""

    sweeping = False


def worker_app() -> Starlette:
    """The app of one worker process, from the environment its parent prepared (``run_workers``)."""
    settings = Settings.from_env()
    configure_logging(logging.INFO)
    WorkerProtocol.limits = Limits.of(settings)
    return create_app(settings)


def run_workers(settings: Settings, workers: int, *, host: str, port: int, access_log: bool = False) -> None:
    """Serve with ``workers`` processes on one port until interrupted.

    Each worker builds its own app (and signing process) from the environment; this process
    hands them the public URL it settled on and, with no ``COINSLOT_REDIS_URL``, runs the
    embedded Redis they all use (found through the data directory, as the CLI finds it).
    """
    # Keys and secrets are made once, here, before the workers read them.
    if not settings.secret_keys:
        keyfiles.load_or_create_secrets(settings.data_dir)
    KeyRing.load(settings.data_dir, settings.unlock_key_files)
    os.environ["COINSLOT_PUBLIC_URL"] = settings.public_url or ""
    embedded = None
    if settings.redis_url is None and running_url(settings.data_dir) is None:
        embedded = EmbeddedRedis(settings.data_dir)
        embedded.start()
    try:
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            http=f"{__name__}:WorkerProtocol",
            proxy_headers=False,
            access_log=access_log,
            log_config=None,
        )
    finally:
        if embedded is not None:
            embedded.stop()


def configure_logging(level: int) -> None:
    """One format for the app's and uvicorn's records; unlock tokens kept out of the access log."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactTokens) for f in access.filters):
        access.addFilter(RedactTokens())


class RedactTokens(logging.Filter):
    """Unlock tokens may travel in ``?token=``; they must never reach the access log.

    The query is judged decoded (``tok%65n=`` is read as ``token=`` too); one that names
    a token is logged as ``[redacted]`` whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(self._redact(a) if isinstance(a, str) else a for a in record.args)
        return True

    @staticmethod
    def _redact(text: str) -> str:
        path, mark, query = text.partition("?")
        if mark and "token" in unquote_plus(query).lower():
            return path + "?[redacted]"
        return text


def _sweep(cls: type[_LimitedHttpToolsProtocol], loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Time out the overdue requests of ``cls``'s connections, then come back in a quarter of the timeout."""
    now = loop.time()
    for connection in [c for c in connections if isinstance(c, cls) and c.overdue(now)]:
        connection.time_out()
    loop.call_later(min(1.0, cls.limits.request_timeout_s / 4), _sweep, cls, loop, connections)
