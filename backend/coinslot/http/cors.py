"""CORS for public reads (offers, content, placeholders): the site's own origins, never credentials."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from coinslot.catalog import Site


def allow_site_origin(request: Request, site: Site | None, response: Response) -> Response:
    """CORS for the site's own origins only; never Allow-Credentials."""
    response.headers.append("Vary", "Origin")
    origin = request.headers.get("origin")
    if site is not None and origin is not None and origin.lower() in site.origins:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "ETag"
    return response
