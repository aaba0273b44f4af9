"""App factories for ``uvicorn --factory``: Coinslot as configured by ``COINSLOT_*``, and a hello-world.

``app()`` adds one bench-only route, ``GET /_bench/redis``, reporting how many times the
process wrote to Redis (each write is one round trip: a pipeline is one write) and which
reply parser redis-py uses. The counter patches redis-py here, in the bench only.
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
    """Redis writes so far, and the reply parser a connection of the app's pool gets."""
    redis = request.app.state.services.store.redis
    parser = "n/a (cluster client)"
    pool = getattr(redis, "connection_pool", None)
    if pool is not None:
        # Built, not connected: the parser is chosen in the constructor.
        parser = type(pool.connection_class(**pool.connection_kwargs)._parser).__name__
    return JSONResponse({"sends": SENDS["count"], "parser": parser})


def app() -> Starlette:
    _count_sends()
    coinslot = create_app(Settings.from_env())
    coinslot.router.routes.append(Route("/_bench/redis", redis_stats))
    return coinslot


async def hello_world(request: Request) -> Response:
    return JSONResponse({"hello": "world"})


def hello() -> Starlette:
    return Starlette(routes=[Route("/", hello_world)])
