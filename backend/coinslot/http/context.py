"""What a handler reaches through its request: the app's ``Services``."""

from __future__ import annotations

from starlette.requests import Request

from coinslot.services import Services


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
