"""The webhook rows of the API table (``coinslot.http.routes`` includes them)."""

from __future__ import annotations

from typing import Any

from coinslot.http import hooks
from coinslot.http.openapi import Doc

ADMIN = ("admin", "webhooks")

HOOK_API: list[tuple[str, str, Any, Doc]] = [
    (
        "POST",
        "/v1/admin/webhooks",
        hooks.add_endpoint,
        Doc(
            "Register a webhook endpoint; its signing secret is shown this once",
            auth="secret",
            body=hooks.WebhookCreate,
            responses={201: "endpoint with its secret", 401: "", 409: "", 413: "", 422: ""},
            tags=ADMIN,
        ),
    ),
    (
        "GET",
        "/v1/admin/webhooks",
        hooks.list_endpoints,
        Doc("The site's webhook endpoints (without secrets)", auth="secret", responses={200: "", 401: ""}, tags=ADMIN),
    ),
    (
        "GET",
        "/v1/admin/webhooks/events",
        hooks.event_log,
        Doc(
            "The delivery log: newest events first, with payload, each endpoint's state and every attempt",
            auth="secret",
            query=("limit",),
            responses={200: "events", 401: "", 422: ""},
            tags=ADMIN,
        ),
    ),
    (
        "POST",
        "/v1/admin/webhooks/events/{event_id}/resend",
        hooks.resend,
        Doc(
            "Send an event again, with the same id, to every endpoint that wants it (24 h of retries anew)",
            auth="secret",
            responses={202: "event_id and the endpoints", 401: "", 404: ""},
            tags=ADMIN,
        ),
    ),
    (
        "DELETE",
        "/v1/admin/webhooks/{endpoint_id}",
        hooks.remove_endpoint,
        Doc("Remove a webhook endpoint", auth="secret", responses={200: "deleted", 401: "", 404: ""}, tags=ADMIN),
    ),
    (
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/rotate-secret",
        hooks.rotate_secret,
        Doc(
            "A new signing secret, shown once; the previous one signs too for 24 h",
            auth="secret",
            responses={200: "endpoint, secret, previous_secret_signs_until", 401: "", 404: ""},
            tags=ADMIN,
        ),
    ),
    (
        "POST",
        "/v1/admin/webhooks/{endpoint_id}/ping",
        hooks.ping,
        Doc(
            "Send a test.ping event to the endpoint",
            auth="secret",
            responses={202: "event_id", 401: "", 404: ""},
            tags=ADMIN,
        ),
    ),
]
