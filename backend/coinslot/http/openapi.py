"""The OpenAPI document, built from the route table and the request models."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from coinslot import __version__

PROBLEM = {
    "description": "problem document (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


PAGE = {"description": "HTML page saying what happened", "content": {"text/html": {}}}

_CALL = {"type": "object", "properties": {"method": {"type": "string"}, "url": {"type": "string"}, "body": {}}}
_STRING, _INTEGER = {"type": "string"}, {"type": "integer"}
_OFFER = {
    "type": "object",
    "required": ["site", "item", "title", "price", "currency", "unlock", "wallet", "offers"],
    "properties": {
        "site": _STRING,
        "item": _STRING,
        "title": _STRING,
        "price": {**_INTEGER, "description": "minor units"},
        "currency": _STRING,
        "kind": {"enum": ["item", "pass"]},
        "pass_hours": _INTEGER,
        "unlock": _CALL,
        "wallet": _CALL,
        "offers": _STRING,
    },
}
# GET /v1/content's 402 (coinslot.paywall): what the item costs and the calls that buy it.
PAYMENT_REQUIRED = {
    "description": "no token, or a wallet that does not own the item: the offer, and the calls that buy it",
    "headers": {
        "WWW-Authenticate": {
            "description": 'Coinslot realm="<site>", item="<item>", price="19", currency="EUR", '
            'unlock="https://…/v1/unlocks" (RFC 9110 auth-params)',
            "required": True,
            "schema": _STRING,
        }
    },
    "content": {
        "application/problem+json": {
            "schema": {
                "allOf": [
                    {"$ref": "#/components/schemas/Problem"},
                    {
                        "type": "object",
                        "required": ["offer"],
                        "properties": {"offer": _OFFER},
                    },
                ]
            },
            "example": {
                "type": "https://coinslot.dev/problems/payment-required",
                "title": "Payment required",
                "status": 402,
                "detail": "article-42 costs 19 EUR minor units: unlock it with a wallet token, then send the token",
                "offer": {
                    "item": "article-42",
                    "title": "The heat wave",
                    "price": 19,
                    "currency": "EUR",
                    "kind": "item",
                    "site": "site_demo",
                    "unlock": {
                        "method": "POST",
                        "url": "https://pay.example/v1/unlocks",
                        "body": {"site": "site_demo", "item": "article-42", "price": 19},
                    },
                    "wallet": {"method": "POST", "url": "https://pay.example/v1/wallets", "body": {"currency": "EUR"}},
                    "offers": "https://pay.example/v1/offers?site=site_demo&items=article-42",
                },
            },
        }
    },
}


@dataclass(frozen=True)
class Doc:
    summary: str
    auth: str | None = None  # "wallet" | "secret" | "unlock"
    body: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    query: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    page: bool = False  # a page for people: every answer, errors included, is HTML
    response: type[BaseModel] | None = None  # the JSON of its 2xx answer, with the model's example
    described: dict[int, dict[str, Any]] = field(default_factory=dict)  # status → its whole response object


def build(docs: dict[tuple[str, str], Doc], public_url: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail"],
            "properties": {
                "type": {"type": "string", "format": "uri"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
            },
            "additionalProperties": True,
        }
    }
    for (method, path), doc in sorted(docs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        op: dict[str, Any] = {
            "summary": doc.summary,
            "operationId": f"{method.lower()}{path}".replace("/", "_"),
            "responses": {},
        }
        if doc.tags:
            op["tags"] = list(doc.tags)
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in _path_params(path)]
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in doc.query]
        if params:
            op["parameters"] = params
        if doc.auth:
            op["security"] = [{{"wallet": "walletToken", "secret": "secretKey", "unlock": "unlockToken"}[doc.auth]: []}]
        if doc.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": _media(doc.body, schemas)}}
        for status, description in (doc.responses or {200: "OK"}).items():
            if status in doc.described:
                op["responses"][str(status)] = doc.described[status]
            elif doc.page and 300 <= status < 400:
                op["responses"][str(status)] = {"description": description or "to another page (Location), no body"}
            elif doc.page:
                op["responses"][str(status)] = {**PAGE, "description": description or PAGE["description"]}
            elif doc.response is not None and 200 <= status < 300:
                media = {"application/json": _media(doc.response, schemas)}
                op["responses"][str(status)] = {"description": description or "OK", "content": media}
            else:
                op["responses"][str(status)] = PROBLEM if status >= 400 else {"description": description}
        op["responses"].setdefault("default", PAGE if doc.page else PROBLEM)
        paths.setdefault(_openapi_path(path), {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Coinslot",
            "version": __version__,
            "description": "One-click micropayments: guest wallets, atomic unlocks, verifiable tokens. "
            "Money is always integer minor units.",
        },
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "walletToken": {"type": "http", "scheme": "bearer", "description": "wallet token"},
                "secretKey": {"type": "http", "scheme": "bearer", "description": "site secret key sk_..."},
                "unlockToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


def _media(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, Any]:
    """A JSON media type object for ``model``, its schema put in ``schemas``, with its first example."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():  # where the refs point
        schemas.setdefault(name, nested)
    schemas[model.__name__] = schema
    media: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    examples = schemas[model.__name__].get("examples")
    if examples:
        media["example"] = examples[0]
    return media


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def _openapi_path(path: str) -> str:
    return "/".join("{" + p[1:-1].split(":")[0] + "}" if p.startswith("{") else p for p in path.split("/"))


async def openapi(request: Request) -> Response:
    spec = request.app.state.openapi
    return JSONResponse(spec, headers={"Cache-Control": "public, max-age=300"})
