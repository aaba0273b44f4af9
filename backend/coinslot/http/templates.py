"""HTML pages, rendered by Starlette's ``Jinja2Templates`` from ``coinslot/templates/`` (autoescaped)."""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.templating import Jinja2Templates


@functools.cache
def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("coinslot", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing word fails the render, never shows as nothing
        auto_reload=False,
    )
    env.filters["script_json"] = script_json
    return Jinja2Templates(env=env)


def script_json(value: Any) -> Markup:
    """``value`` as JSON for a ``<script type="application/json">`` element: data, not script, so
    the CSP allows it. Only "<" needs escaping there (so "</script>" in a title cannot close the
    element); Jinja's tojson also escapes quotes and "&", which that element never decodes."""
    return Markup(json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c"))
