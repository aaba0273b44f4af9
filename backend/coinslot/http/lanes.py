"""The fast lanes: the API's bare endpoints found by method and path, before Starlette's router."""

from __future__ import annotations

from typing import Any

from coinslot.http.openapi import Doc
from coinslot.http.problems import BareEndpoint


class Lanes:
    """The API's bare endpoints, found by method and path without Starlette's middleware and router.

    A path with parameters matches segment by segment (a parameter takes one non-empty segment,
    as Starlette's default convertor does); anything else goes to the router.
    """

    def __init__(self, api: list[tuple[str, str, Any, Doc]]) -> None:
        self.fixed: dict[tuple[str, str], BareEndpoint] = {}
        self.templated: dict[tuple[str, int, str], list[tuple[list[str], BareEndpoint]]] = {}
        for method, path, endpoint, _doc in api:
            if not isinstance(endpoint, BareEndpoint):
                continue
            if "{" not in path:
                self.fixed[method, path] = endpoint
                continue
            segments = path.split("/")
            if segments[1].startswith("{"):
                raise ValueError(f"a lane's path must start with a fixed segment: {path}")
            self.templated.setdefault((method, len(segments), segments[1]), []).append((segments, endpoint))

    def match(self, method: str, path: str) -> tuple[BareEndpoint, dict[str, str] | None] | None:
        endpoint = self.fixed.get((method, path))
        if endpoint is not None:
            return endpoint, None
        segments = path.split("/")
        if len(segments) < 2:
            return None
        for template, endpoint in self.templated.get((method, len(segments), segments[1]), ()):
            params: dict[str, str] = {}
            for fixed, given in zip(template, segments, strict=True):
                if fixed.startswith("{"):
                    if not given:
                        break
                    params[fixed[1:-1]] = given
                elif fixed != given:
                    break
            else:
                return endpoint, params
        return None
