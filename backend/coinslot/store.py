"""Redis access: the connection, the key layout and the Lua scripts.

Every key that holds a wallet's money of record carries the hash tag ``{w:<id>}`` so one
script can touch all of them on Redis Cluster; sites carry ``{s:<id>}``, vouchers
``{v:<code>}``. Domain modules build keys here and never spell them out themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from coinslot.errors import ConfigurationError

AnyRedis = Redis | RedisCluster

SCRIPTS = ("unlock", "credit", "voucher_take", "voucher_give_back", "snapshot", "topup_mark", "chargeback")


# Keys -------------------------------------------------------------------------------


def wallet_key(wallet_id: str) -> str:
    return "{w:" + wallet_id + "}"


def wallet_keys(wallet_id: str) -> WalletKeys:
    return WalletKeys(wallet_id)


class WalletKeys:
    __slots__ = ("wallet", "owned", "purchases", "ledger", "credited", "tag")

    def __init__(self, wallet_id: str) -> None:
        self.tag = tag = "{w:" + wallet_id + "}"
        self.wallet = tag
        self.owned = tag + ":own"
        self.purchases = tag + ":buy"
        self.ledger = tag + ":led"
        self.credited = tag + ":cred"

    def idempotency(self, route: str, key: str) -> str:
        return f"{self.tag}:idem:{route}:{key}"

    def topup(self, topup_id: str) -> str:
        return f"{self.tag}:tu:{topup_id}"

    @property
    def chargebacks(self) -> str:
        return self.tag + ":cb"


WALLET_INDEX = "wallets"  # set of every wallet id, for reconcile and exports


def site_key(site_id: str) -> str:
    return "{s:" + site_id + "}"


def item_key(site_id: str, item_id: str) -> str:
    return "{s:" + site_id + "}:item:" + item_id


def items_index_key(site_id: str) -> str:
    return "{s:" + site_id + "}:items"


SITE_INDEX = "sites"


def secret_index_key(digest: str) -> str:
    return "sk:" + digest


def tab_quota_key(site_id: str, ip: str, day: str) -> str:
    return "{s:" + site_id + "}:tabip:" + day + ":" + ip


def voucher_keys(code: str) -> tuple[str, str]:
    tag = "{v:" + code + "}"
    return tag, tag + ":by"


def checkout_session_key(session_id: str) -> str:
    return "checkout:" + session_id


def payment_key(payment_id: str) -> str:
    """The provider's payment (a Stripe PaymentIntent) → the top-up it paid, for refunds and disputes."""
    return "payment:" + payment_id


def provider_check_key(session_id: str) -> str:
    """Set while the return page has just asked the provider about a session (a short cool-down)."""
    return "asked:" + session_id


CATALOG_CHANNEL = "coinslot:catalog"


# Scripts ----------------------------------------------------------------------------


class Script:
    """A Lua script run by EVALSHA, loaded on first NOSCRIPT (e.g. after a failover)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("coinslot").joinpath("lua", name + ".lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)


def pack(parts: Sequence[str | int]) -> bytes:
    """One command in the Redis protocol (RESP); redis-py's general packer costs several times more."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        if isinstance(part, str):
            data = part.encode()
        elif type(part) is int:  # not bool, which redis-py refuses too
            data = b"%d" % part
        else:
            raise TypeError(f"script argument {part!r} is not a str or int")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Call:
    __slots__ = ("script", "command", "future", "sent_at", "ends_write")

    def __init__(self, script: Script, command: list[str | int], future: asyncio.Future[Any]) -> None:
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

    def run(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> asyncio.Future[Any]:
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
                        leave = leave or message.startswith(_LEAVE_CONNECTION)
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
        failure = error if isinstance(error, Exception) else RedisConnectionError("Redis connection closed")
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


class Store:
    """The Redis client and the scripts; one per app, shared by the domain modules."""

    def __init__(self, redis: AnyRedis) -> None:
        # redis-py types its async commands as ``Awaitable[T] | T`` and both client classes
        # differ in small ways; typed as Any here, checked by the suite against both.
        self.redis: Any = redis
        self.is_cluster = isinstance(redis, RedisCluster)
        self.scripts = {name: Script(name) for name in SCRIPTS}
        # A cluster pipeline would have to be split by node and follow redirections: there
        # each script call goes on its own, through the cluster client.
        self.pipe = None if isinstance(redis, RedisCluster) else ScriptPipe(redis)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        script = self.scripts[name]
        if self.pipe is None:
            return await script(self.redis, keys, args)
        return await self.pipe.run(script, keys, args)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        await self.redis.aclose()


class SentinelMaster(Redis):
    """The master found through Sentinel; closing it closes its pool and the sentinel clients."""

    # Not "sentinel": Redis already has a SENTINEL command method by that name.
    sentinel_client: Sentinel

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool=True)
        for client in self.sentinel_client.sentinels:
            await client.aclose()


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """``redis+sentinel://[:password@]host:26379,host2:26379/service[/db]`` → its parts."""
    parts = urlsplit(url)
    password = unquote(parts.password) if parts.password else None
    sentinels = []
    for address in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"sentinel address {address!r} in {url!r} must be host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not sentinels or not path or (len(path) > 1 and not path[1].isdigit()):
        raise ConfigurationError(f"sentinel URL {url!r} must look like redis+sentinel://host:26379/service[/db]")
    return sentinels, path[0], int(path[1]) if len(path) > 1 else 0, password


async def connect(url: str) -> AnyRedis:
    """Connect to ``url``: standalone, a Sentinel-managed master, or a Cluster (detected)."""
    if url.startswith("redis+sentinel://"):
        sentinels, service, db, password = parse_sentinel_url(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            sentinels, socket_timeout=5, sentinel_kwargs={"password": password} if password else {}
        )
        # Each new connection asks the sentinels for the master again, so a failover is followed.
        master: SentinelMaster = sentinel.master_for(
            service, redis_class=SentinelMaster, db=db, password=password, decode_responses=True, protocol=2
        )
        master.sentinel_client = sentinel
        await master.ping()
        return master
    probe: Redis = Redis.from_url(url, decode_responses=True, protocol=2)
    try:
        info = await asyncio.wait_for(probe.info("cluster"), timeout=10)
    finally:
        await probe.aclose()
    if info.get("cluster_enabled"):
        # The cluster client cannot wait for a free connection, so its ceiling is generous.
        cluster: RedisCluster = RedisCluster.from_url(url, decode_responses=True, protocol=2, max_connections=2048)
        await cluster.initialize()
        return cluster
    # A burst beyond the pool waits for a connection instead of failing the request.
    pool = BlockingConnectionPool.from_url(url, decode_responses=True, protocol=2, max_connections=256, timeout=10)
    return Redis.from_pool(pool)
