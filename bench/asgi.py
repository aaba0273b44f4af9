"""App factories for ``uvicorn --factory``: Coinslot as configured by ``COINSLOT_*``, and a hello-world.

``app()`` adds one bench-only route, ``GET /_bench/redis``, reporting how many times the
process wrote to Redis (a write of several pipelined calls counts once) and which reply
parsers it uses. redis-py's writes are counted by a patch here, in the bench only; the
store's script pipe counts its own.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import AbstractConnection
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from coinslot.app import create_app
from coinslot.settings import Settings

SENDS = {"count": 0}


def _count_sends() -> None:
    original = AbstractConnection.send_packed_command
    if getattr(original, "counted", False):
        return

    async def send_packed_command(self: AbstractConnection, command: Any, check_health: bool = True) -> None:
        SENDS["count"] += 1
        await original(self, command, check_health)

    send_packed_command.counted = True  # type: ignore[attr-defined]
    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]


async def redis_stats(request: Request) -> Response:
    """Redis writes so far (redis-py's and the script pipe's), and the reply parsers in use."""
    store = request.app.state.services.store
    redis = store.redis
    parser = "n/a (cluster client)"
    pool = getattr(redis, "connection_pool", None)
    if pool is not None:
        # Built, not connected: the parser is chosen in the constructor.
        parser = type(pool.connection_class(**pool.connection_kwargs)._parser).__name__
    writes = 0
    if store.pipe is not None:
        writes = store.pipe.writes
        parser = f"hiredis.Reader (script pipe), {parser} (other commands)"
    return JSONResponse({"sends": SENDS["count"] + writes, "parser": parser})


def app() -> Starlette:
    _count_sends()
    coinslot = create_app(Settings.from_env())
    coinslot.router.routes.append(Route("/_bench/redis", redis_stats))
    return coinslot


async def hello_world(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


def hello() -> Starlette:
    return Starlette(routes=[Route("/", hello_world)])
