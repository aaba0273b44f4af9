"""What every dashboard page shares: the session cookie, the checks on forms, the page's headers,
and errors shown as pages.

A state-changing request must carry the session cookie (SameSite=Strict: a cross-site request
never does), the session's CSRF token in its form, and an ``Origin`` header naming this backend.
Each alone would do in today's browsers; together they still hold where one fails (an old browser
without SameSite, a proxy that strips Origin, a token that leaked into a log).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from coinslot import catalog, dashwords
from coinslot.dashauth import SESSION_TTL_S, Session, SignInRefused
from coinslot.errors import CoinslotError, Forbidden, InvalidBody
from coinslot.http.context import services
from coinslot.http.problems import read_body
from coinslot.http.templates import templates
from coinslot.money import format_amount
from coinslot.settings import is_loopback_host

COOKIE = "coinslot_dash"
COOKIE_PATH = "/dashboard"
MAX_FORM_BYTES = 512 * 1024  # an item's hosted content (256 KB) and its other fields, URL-encoded
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # the sign-in link's token must not leave in a Referer
}

Handler = Callable[[Request], Awaitable[Response]]


def language(request: Request) -> str:
    return dashwords.pick(request.query_params.get("lang"), request.headers.get("accept-language"))


def page(request: Request, name: str, context: dict[str, Any], *, status: int = 200) -> Response:
    lang = language(request)
    full = {"lang": lang, "t": dashwords.WORDS[lang], "signed_in": False, **context}
    return templates().TemplateResponse(
        request, f"dashboard/{name}.html", full, status_code=status, headers=PAGE_HEADERS
    )


def see_other(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def _secure(request: Request) -> str:
    # Browsers keep Secure cookies from http://localhost and 127.0.0.1 too; beyond loopback the
    # backend is https (settings refuse http there), and the cookie must never travel in the clear.
    host = urlsplit(services(request).public_url).hostname or ""
    return "" if is_loopback_host(host) else "; Secure"


def set_session_cookie(request: Request, response: Response, session: Session) -> None:
    value = services(request).dashboard.cookie_value(session)
    response.headers.append(
        "set-cookie",
        f"{COOKIE}={value}; Max-Age={SESSION_TTL_S}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict{_secure(request)}",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.headers.append(
        "set-cookie", f"{COOKIE}=; Max-Age=0; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict{_secure(request)}"
    )


async def current_session(request: Request) -> Session:
    svc = services(request)
    return await svc.dashboard.session(request.cookies.get(COOKIE), now_ms=svc.clock.now_ms())


def check_origin(request: Request) -> None:
    origin, own = request.headers.get("origin"), services(request).public_url
    if origin != own:
        raise Forbidden(f"a dashboard form must come from {own}, not from {origin or 'nowhere'}")


async def read_form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidBody(f"Content-Type {content_type!r} is not application/x-www-form-urlencoded")
    raw = await read_body(request, MAX_FORM_BYTES)
    try:
        return dict(parse_qsl(raw.decode(), keep_blank_values=True, max_num_fields=20, strict_parsing=False))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidBody(f"form is not valid: {type(exc).__name__}") from exc


async def checked_form(request: Request) -> tuple[Session, dict[str, str]]:
    """The session and the form of a state-changing request, once its origin and CSRF token are right."""
    check_origin(request)
    session = await current_session(request)
    form = await read_form(request)
    if not session.checks_csrf(form.get("csrf")):
        raise Forbidden("the form's CSRF token is missing or is not this session's; reload the page")
    return session, form


def shown_as_page(handler: Handler) -> Handler:
    """Errors become pages: not signed in → the sign-in page; anything else → an error page with its status."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except SignInRefused as exc:
            if request.method == "GET":
                return see_other("/dashboard/signin")
            return page(request, "error", {"status": exc.status, "detail": exc.detail}, status=exc.status)
        except CoinslotError as exc:
            response = page(request, "error", {"status": exc.status, "detail": exc.detail}, status=exc.status)
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(exc.retry_after)
            return response

    return wrapped


def page_context(request: Request, session: Session, site: catalog.Site, **more: object) -> dict[str, object]:
    """What every signed-in page shows: the site, its money in the reader's language, the CSRF token."""
    lang = language(request)

    def money(amount: float) -> str:
        return format_amount(round(amount), site.currency, lang)

    return {"signed_in": True, "csrf": session.csrf, "site": site, "money": money, **more}


def whole_number(raw: str, field: str) -> int:
    """A form's whole number (at most 9 ASCII digits: "²" is a digit to ``isdigit``, not to ``int``),
    or 422 naming the field."""
    digits = raw.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 9:
        raise InvalidBody(f"{field} {raw!r} must be a whole number", [{"field": field}])
    return int(digits)
