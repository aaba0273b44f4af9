"""openapi.json documents every route the app serves."""

from __future__ import annotations

import httpx
from starlette.routing import Route


async def test_every_route_is_in_the_spec(standalone_client: httpx.AsyncClient) -> None:
    spec = (await standalone_client.get("/openapi.json")).json()
    app = standalone_client.app  # type: ignore[attr-defined]

    served = {(m.lower(), r.path) for r in app.routes if isinstance(r, Route) for m in r.methods or () if m != "HEAD"}
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}

    assert served == documented
    unlock = spec["paths"]["/v1/unlocks"]["post"]
    body_schema = unlock["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(spec["components"]["schemas"][body_schema]["properties"]) == {"site", "item", "price"}
    assert spec["components"]["schemas"][body_schema]["additionalProperties"] is False
    assert "402" in unlock["responses"]


async def test_the_content_402_and_the_agents_fields_are_documented(standalone_client: httpx.AsyncClient) -> None:
    spec = (await standalone_client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]

    payment_required = spec["paths"]["/v1/content/{site}/{item}"]["get"]["responses"]["402"]
    assert payment_required["headers"]["WWW-Authenticate"]["required"] is True
    problem = payment_required["content"]["application/problem+json"]
    offer = problem["schema"]["allOf"][1]["properties"]["offer"]
    assert {"price", "currency", "unlock", "wallet", "offers"} <= set(offer["required"])
    assert problem["example"]["offer"]["unlock"]["method"] == "POST"

    patch = spec["paths"]["/v1/wallet"]["patch"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[patch.rsplit("/", 1)[1]]["properties"]) == {"budget", "daily_limit"}
    topup = spec["paths"]["/v1/topups"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schemas[topup.rsplit("/", 1)[1]]["properties"]) == {"amount", "site"}
    assert "wallet-daily-limit" in spec["paths"]["/v1/unlocks"]["post"]["summary"]
