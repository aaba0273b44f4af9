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
