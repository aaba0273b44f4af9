"""Problem documents (RFC 9457) for every error, and request-body parsing that produces them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from coinslot.errors import (
    PROBLEM_BASE,
    BodyTooLarge,
    CoinslotError,
    InvalidBody,
    RequestAborted,
    StoreUnavailable,
)

log = logging.getLogger("coinslot.http")

Model = TypeVar("Model", bound=BaseModel)


_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")


class PrivateJSONResponse(Response):
    """JSON for one caller's eyes only (``Cache-Control: no-store``), rendered by orjson.

    Its headers are made here: Starlette's general header handling cost ~2 µs of an unlock.
    """

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200) -> None:
        self.status_code = status_code
        self.background = None
        self.body = orjson.dumps(content)
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), _JSON, _NO_STORE]


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        super().init_headers(headers)
        # An error echoes parts of the request (paths, ids): never let a browser sniff it into HTML.
        self.raw_headers.append((b"x-content-type-options", b"nosniff"))


def problem_response(exc: CoinslotError) -> Response:
    headers = {"Cache-Control": "no-store"}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.challenge is not None:
        headers["WWW-Authenticate"] = exc.challenge
    return ProblemResponse(exc.problem(), status_code=exc.status, headers=headers)


async def coinslot_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CoinslotError)
    if exc.status >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc.detail)
    return problem_response(exc)


STARLETTE_TYPES = {404: "not-found", 405: "method-not-allowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = STARLETTE_TYPES.get(exc.status_code, "http-error")
    body = {
        "type": PROBLEM_BASE + kind,
        "title": exc.detail,
        "status": exc.status_code,
        "detail": f"{request.method} {request.url.path}: {exc.detail}",
    }
    return ProblemResponse(body, status_code=exc.status_code, headers=exc.headers)


# Raised by redis-py and by the store's script pipe when Redis is out of reach.
STORE_FAILURES = (RedisConnectionError, RedisTimeoutError)


async def store_failure(request: Request, exc: Exception) -> Response:
    log.error("%s %s: Redis unavailable: %s", request.method, request.url.path, exc)
    return problem_response(StoreUnavailable(f"storage did not answer ({type(exc).__name__}); try again"))


async def client_gone(request: Request, exc: Exception) -> Response:
    # A reader on a train loses the signal mid-request every day: worth a line, not an alarm.
    log.info(
        "%s %s: the client closed the connection before its request was complete", request.method, request.url.path
    )
    return problem_response(RequestAborted("the connection closed before the request body was complete"))


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = {
        "type": PROBLEM_BASE + "internal",
        "title": "Internal error",
        "status": 500,
        "detail": "the server failed on this request; it has been logged",
    }
    return ProblemResponse(body, status_code=500)


async def error_response(request: Request, exc: Exception) -> Response:
    """The response the app's exception handlers would give for ``exc``."""
    if isinstance(exc, CoinslotError):
        return await coinslot_error(request, exc)
    if isinstance(exc, HTTPException):
        return await http_error(request, exc)
    if isinstance(exc, STORE_FAILURES):
        return await store_failure(request, exc)
    if isinstance(exc, ClientDisconnect):
        return await client_gone(request, exc)
    return await unexpected_error(request, exc)


class _IndexedHeaders(Headers):
    """Starlette's request headers, looked up through a dict instead of a scan of the list.

    An unlock reads five headers, two of them absent (an absent one costs a KeyError inside
    ``Mapping.get``): ~2 µs less per unlock.
    """

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        self._first = dict(reversed(self._list))  # of repeated headers the first wins, as in Headers

    def __getitem__(self, key: str) -> str:
        value = self._first.get(key.lower().encode("latin-1"))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return isinstance(key, str) and key.lower().encode("latin-1") in self._first


class _LaneRequest(Request):
    @property
    def headers(self) -> Headers:
        try:
            return self._headers
        except AttributeError:
            self._headers: Headers = _IndexedHeaders(self.scope)
            return self._headers


class BareEndpoint:
    """A ``Request -> Response`` handler served as a plain ASGI app, rendering its own errors.

    For the hot path: Starlette wraps a function endpoint in two more layers per request
    (request_response and the exception-handler wrapper), measurable at ~5k unlocks/s.
    """

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = _LaneRequest(scope, receive)
        try:
            response = await self.handler(request)
        except Exception as exc:
            response = await error_response(request, exc)
        await response(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes without reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"request body of {declared} bytes > limit {limit}")
    # Straight from the ASGI messages: Request.stream's async generator costs more than the
    # rest of this on the unlock path, and nothing reads a body twice here.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body > limit {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, model: type[Model], limit: int) -> tuple[Model, Any]:
    """Parse and validate a JSON body; returns the model and the raw JSON value."""
    raw = await read_body(request, limit)
    if not raw.strip():
        raw = b"{}"
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise InvalidBody(f"Content-Type {content_type!r} is not application/json")
    try:
        data = orjson.loads(raw)  # refuses NaN, invalid UTF-8 and nesting past 1024 levels
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"body is not valid JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict):
        raise InvalidBody(f"body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data, strict=True), data
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise InvalidBody(detail, errors) from exc
