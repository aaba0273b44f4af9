"""The hot path's script calls to Redis: pipelined on one connection, replies parsed by hiredis.

``Store.run`` sends every script call through here on a standalone (or Sentinel-managed)
Redis; on a Cluster each call goes through the cluster client instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coinslot.scripts import Script


def pack(parts: Sequence[str | int | bytes]) -> bytes:
    """One command in the Redis protocol (RESP), packed by hiredis in C: ~2.5 µs for an unlock's
    22 arguments, against ~7 µs in Python and several times that in redis-py's general packer."""
    try:
        # hiredis's stub declares a one-element tuple and no return type; it takes any length.
        packed: bytes = hiredis.pack_command(tuple(parts))  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"script arguments must be str, int, float or bytes (not bool): {parts!r}") from None
    return packed


class _Call:
    __slots__ = ("script", "command", "future", "sent_at", "ends_write")

    def __init__(self, script: Script, command: list[str | int | bytes], future: asyncio.Future[Any]) -> None:
        self.script, self.command, self.future = script, command, future
        self.sent_at = 0.0
        self.ends_write = False  # the last call of one socket write

    def packed(self) -> bytes:
        return pack(["EVALSHA", self.script.sha, *self.command])

    def settle(self, reply: Any) -> None:
        if not self.future.done():  # the caller may have been cancelled meanwhile
            if isinstance(reply, BaseException):
                self.future.set_exception(reply)
            else:
                self.future.set_result(reply)


class _Eval(_Call):
    """A call sent again with the script's source after NOSCRIPT."""

    def __init__(self, call: _Call) -> None:
        super().__init__(call.script, call.command, call.future)

    def packed(self) -> bytes:
        return pack(["EVAL", self.script.source, *self.command])


# Calls wait while a write is on the wire, so each write carries many (one system call on each
# side for all of them); this many waiting go out at once, so Redis works on the first calls
# of a burst while the loop still handles the rest of it.
EAGER_WRITE_CALLS = 16
# Replies owed beyond this mean Redis is not keeping up: new calls fail fast instead of queueing.
MAX_IN_FLIGHT = 10_000
# An error reply that says this connection no longer reaches a usable master.
_LEAVE_CONNECTION = ("READONLY", "MASTERDOWN", "LOADING")


class ScriptPipe:
    """Script calls of concurrent requests, pipelined on one connection of their own.

    The calls of one event-loop tick go out as one write. Calls made while a write awaits its
    replies wait for them and then go out together, unless enough wait to be worth a write of
    their own. Redis answers in order, so a queue of callers matches each reply to its call,
    and one connection carries any number of requests. The connection is made by
    redis-py (address, AUTH, TLS, a Sentinel's master lookup, all from the client's pool
    settings); its replies are parsed here by hiredis straight from the socket, which costs
    a fraction of one redis-py read per reply. Each script is atomic by itself, so no
    transaction is needed.

    When the connection breaks, the calls it still owed a reply fail (every script is safe
    for a client to run again) and the next call connects anew. A NOSCRIPT reply runs that
    call again as EVAL, which loads the script. With a ``socket_timeout`` in the client's
    settings, a reply owed longer than that breaks the connection.
    """

    def __init__(self, redis: Redis) -> None:
        self._pool: Any = redis.connection_pool
        self._timeout: float | None = self._pool.connection_kwargs.get("socket_timeout")
        self._unsent: list[_Call] = []
        self._owed: deque[_Call] = deque()
        self._writes_owed = 0  # writes whose last reply has not come yet
        self._connection: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._write_soon = False
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.writes = 0  # socket writes so far, each carrying one or more calls

    def run(self, script: Script, keys: Sequence[str], args: Sequence[str | int | bytes]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._closed:
            future.set_exception(RedisConnectionError("the store is closed"))
            return future
        if len(self._owed) + len(self._unsent) >= MAX_IN_FLIGHT:
            future.set_exception(RedisConnectionError(f"{MAX_IN_FLIGHT} script calls await Redis already"))
            return future
        self._unsent.append(_Call(script, [len(keys), *keys, *args], future))
        if len(self._unsent) >= EAGER_WRITE_CALLS:
            self._write()
        elif not self._write_soon:
            self._write_soon = True
            loop.call_soon(self._write)
        return future

    def _write(self) -> None:
        self._write_soon = False
        if not self._unsent or (self._writes_owed and len(self._unsent) < EAGER_WRITE_CALLS):
            return  # sent when the replies of the write on the wire are in
        if self._writer is None:
            if self._connecting is None:
                self._connecting = asyncio.get_running_loop().create_task(self._connect())
            return  # written once connected
        calls = [call for call in self._unsent if not call.future.done()]
        self._unsent = []
        if not calls:
            return
        self._writer.write(b"".join(call.packed() for call in calls))
        self.writes += 1
        self._writes_owed += 1
        calls[-1].ends_write = True
        if self._timeout is not None:
            now = time.monotonic()
            for call in calls:
                call.sent_at = now
            if self._deadline_timer is None:
                self._deadline_timer = asyncio.get_running_loop().call_later(self._timeout, self._check_deadline)
        self._owed.extend(calls)

    async def _connect(self) -> None:
        connection = self._pool.make_connection()
        try:
            await connection.connect()
            # redis-py made the connection and its handshake; from here on this pipe alone reads it.
            reader, writer = getattr(connection, "_reader", None), getattr(connection, "_writer", None)
            if not isinstance(reader, asyncio.StreamReader) or not isinstance(writer, asyncio.StreamWriter):
                connection._close()
                raise RuntimeError("this redis-py keeps its connection's streams elsewhere: update ScriptPipe._connect")
        except BaseException as exc:
            self._connecting = None
            unsent, self._unsent = self._unsent, []
            for call in unsent:
                call.settle(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if self._closed:
            await connection.disconnect()
            return
        self._connection, self._writer = connection, writer
        self._reading = asyncio.get_running_loop().create_task(self._read(connection, reader))
        self._connecting = None
        self._write()

    async def _read(self, connection: Any, stream: asyncio.StreamReader) -> None:
        parser = hiredis.Reader(encoding="utf-8")
        error: BaseException = RedisConnectionError("Redis closed the connection")
        leave = False
        try:
            while not leave:
                data = await stream.read(1 << 16)
                if not data:
                    break
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    call = self._owed.popleft()
                    if call.ends_write:
                        self._writes_owed -= 1
                    if isinstance(reply, hiredis.ReplyError):
                        message = str(reply)
                        if message.startswith("NOSCRIPT"):
                            # The server lost its scripts (restart, failover): EVAL runs the call and loads it.
                            self._unsent.append(_Eval(call))
                            self._write()
                            continue
                        if message.startswith(_LEAVE_CONNECTION):
                            # The script did not run here (no writable master, or its data still
                            # loading): a failure to reach the store, which the caller may retry.
                            leave = True
                            reply = (BusyLoadingError if message.startswith("LOADING") else RedisConnectionError)(
                                message
                            )
                        else:
                            reply = ResponseError(message)
                    call.settle(reply)
                if self._unsent and not self._writes_owed:
                    self._write()
        except BaseException as exc:
            error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._drop(connection, error)

    def _drop(self, connection: Any, error: BaseException) -> None:
        """Forget a connection and fail the calls it owed; the next call connects anew."""
        if connection is None or self._connection is not connection:
            return
        self._connection = self._writer = None
        connection._close()  # closes without waiting: this runs as the reader ends, maybe cancelled
        owed, self._owed = self._owed, deque()
        self._writes_owed = 0
        # Whatever ended the connection (a reset socket is an OSError, not redis-py's), the callers
        # learn it as a failure to reach the store: a 503 to retry, never a 500.
        failure: Exception
        if isinstance(error, RedisError):
            failure = error
        else:
            failure = RedisConnectionError(f"Redis connection lost: {error!r}")
            failure.__cause__ = error
        for call in owed:
            call.settle(failure)
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        if self._unsent and not self._closed:
            self._write()

    def _check_deadline(self) -> None:
        self._deadline_timer = None
        if not self._owed or self._timeout is None:
            return
        late = time.monotonic() - self._owed[0].sent_at
        if late >= self._timeout:
            # Replies may still come, out of step with the callers now failed: the connection goes.
            reading = self._reading
            self._drop(self._connection, RedisTimeoutError(f"no reply from Redis within {self._timeout} s"))
            if reading is not None:
                reading.cancel()
            return
        self._deadline_timer = asyncio.get_running_loop().call_later(self._timeout - late, self._check_deadline)

    async def close(self) -> None:
        self._closed = True
        connecting, reading = self._connecting, self._reading
        if connecting is not None:
            connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connecting
        if reading is not None:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        unsent, self._unsent = self._unsent, []
        for call in unsent:
            call.settle(RedisConnectionError("the store is closed"))
