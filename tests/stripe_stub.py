"""A small local stand-in for the part of Stripe's API that Coinslot uses, and signed webhook events.

Only Stripe's network is replaced: the real ``stripe`` library talks to this server over HTTP
(form-encoded bodies, ``Idempotency-Key`` headers, list pagination with ``starting_after`` and
``has_more``), and events are signed exactly as Stripe signs them. Tests change what "Stripe"
knows (a session paid, expired, …) through the methods of ``StripeStub``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

WEBHOOK_SECRET = "whsec_test_0123456789abcdef"
SECRET_KEY = "sk_test_coinslot_stub"

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}_{next(_ids):06d}{hashlib.sha1(str(time.time_ns()).encode()).hexdigest()[:10]}"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str]


@dataclass
class StripeStub:
    url: str = ""
    checkout_base: str = "https://checkout.stripe.test"  # where a session's hosted page is said to be
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    idempotent: dict[str, tuple[dict[str, str], dict[str, Any]]] = field(default_factory=dict)
    failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # answers to give next, in order
    lost_creates: int = 0  # creates to carry out whose answer is then lost (a 500 instead)
    # Fields to change in the answers to the next creates (None: leave the field out), in order.
    garbled_creates: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # What "Stripe" knows, changed by tests ------------------------------------------

    def pay(self, session_id: str, *, payment_status: str = "paid") -> dict[str, Any]:
        """The reader finished the checkout: ``paid`` (card) or ``unpaid`` (a bank debit under way)."""
        with self.lock:
            s = self.sessions[session_id]
            s["status"] = "complete"
            s["payment_status"] = payment_status
            s["payment_intent"] = s["payment_intent"] or _id("pi")
            return dict(s)

    def settle(self, session_id: str, *, paid: bool) -> dict[str, Any]:
        """A delayed payment (SEPA) succeeded or failed days later."""
        with self.lock:
            s = self.sessions[session_id]
            s["payment_status"] = "paid" if paid else "unpaid"
            return dict(s)

    def expire(self, session_id: str) -> dict[str, Any]:
        with self.lock:
            s = self.sessions[session_id]
            s["status"] = "expired"
            return dict(s)

    def fail_next(self, status: int, error_type: str, message: str = "stub failure") -> None:
        self.failures.append((status, {"error": {"type": error_type, "message": message}}))

    def session(self, session_id: str) -> dict[str, Any]:
        with self.lock:
            return dict(self.sessions[session_id])

    def created(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/checkout/sessions"]

    # The HTTP side --------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        with self.lock:
            self.requests.append(Recorded(method, parts.path, query, form, headers))
            if not headers.get("authorization", "").startswith("Bearer sk_"):
                return 401, {"error": {"type": "invalid_request_error", "message": "no API key"}}
            if self.failures:
                return self.failures.pop(0)
            if method == "POST" and parts.path == "/v1/checkout/sessions":
                answer = self._create(form, headers.get("idempotency-key"))
                if self.lost_creates > 0 and answer[0] == 200:
                    self.lost_creates -= 1
                    return 500, {"error": {"type": "api_error", "message": "the answer was lost"}}
                if self.garbled_creates and answer[0] == 200:
                    changes = self.garbled_creates.pop(0)
                    garbled = {k: v for k, v in {**answer[1], **changes}.items() if v is not None}
                    return 200, garbled
                return answer
            if method == "GET" and parts.path == "/v1/checkout/sessions":
                return self._list(query)
            if method == "GET" and parts.path.startswith("/v1/checkout/sessions/"):
                session = self.sessions.get(parts.path.rsplit("/", 1)[-1])
                if session is None:
                    return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
                return 200, dict(session)
        return 404, {"error": {"type": "invalid_request_error", "message": f"stub has no {method} {parts.path}"}}

    def _create(self, form: dict[str, str], key: str | None) -> tuple[int, dict[str, Any]]:
        if key is not None and key in self.idempotent:
            earlier_form, earlier = self.idempotent[key]
            if earlier_form != form:  # as Stripe does: one key, one set of parameters
                return 400, {
                    "error": {
                        "type": "idempotency_error",
                        "message": "Keys for idempotent requests can only be used with the same parameters",
                    }
                }
            return 200, dict(earlier)
        now = int(time.time())
        expires_at = int(form["expires_at"])
        if not now + 30 * 60 - 5 <= expires_at <= now + 24 * 60 * 60 + 5:
            return 400, {"error": {"type": "invalid_request_error", "param": "expires_at"}}
        session_id = _id("cs_test")
        metadata = {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": form["mode"],
            "amount_total": int(form["line_items[0][price_data][unit_amount]"]) * int(form["line_items[0][quantity]"]),
            "currency": form["line_items[0][price_data][currency]"],
            "client_reference_id": form.get("client_reference_id"),
            "metadata": metadata,
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "created": now,
            "expires_at": expires_at,
            "success_url": form["success_url"],
            "cancel_url": form["cancel_url"],
            "url": f"{self.checkout_base}/c/pay/{session_id}",
            "livemode": False,
        }
        self.sessions[session_id] = session
        if key is not None:
            self.idempotent[key] = (form, session)
        return 200, dict(session)

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        limit = int(query.get("limit", "10"))
        gte = int(query.get("created[gte]", "0"))
        # Newest first, as Stripe lists; ties broken by id so pages are stable.
        rows = sorted(
            (s for s in self.sessions.values() if s["created"] >= gte),
            key=lambda s: (s["created"], s["id"]),
            reverse=True,
        )
        after = query.get("starting_after")
        if after is not None:
            ids = [s["id"] for s in rows]
            rows = rows[ids.index(after) + 1 :] if after in ids else []
        page = rows[:limit]
        return 200, {
            "object": "list",
            "url": "/v1/checkout/sessions",
            "data": [dict(s) for s in page],
            "has_more": len(rows) > limit,
        }


def start_stub() -> tuple[StripeStub, ThreadingHTTPServer]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = stub.handle(self.command, self.path, headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", _id("req"))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    # A short poll interval: shutdown() waits for the loop to notice, once per test.
    threading.Thread(target=server.serve_forever, args=(0.02,), name="stripe-stub", daemon=True).start()
    return stub, server


# Webhook events, signed as Stripe signs them ---------------------------------------------


def event(
    kind: str, obj: dict[str, Any], *, event_id: str | None = None, api_version: str = "2025-01-27.acacia"
) -> str:
    """The JSON body Stripe posts for one event of type ``kind`` about ``obj``."""
    return json.dumps(
        {
            "id": event_id or _id("evt"),
            "object": "event",
            "api_version": api_version,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
            "data": {"object": obj},
        }
    )


def sign(payload: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def refund(payment_intent: str, *, amount: int, status: str, refund_id: str, currency: str = "eur") -> dict[str, Any]:
    """A Refund object, as refund.created / refund.updated / refund.failed / charge.refund.updated carry it."""
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "currency": currency,
        "charge": "ch_" + payment_intent.removeprefix("pi_"),
        "payment_intent": payment_intent,
        "status": status,
    }


def charge(
    payment_intent: str,
    *,
    amount: int,
    refunded: int,
    currency: str = "eur",
    refunds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Charge object; ``refunds`` embeds its refunds as API versions before 2022-11-15 do."""
    ch: dict[str, Any] = {
        "id": "ch_" + payment_intent.removeprefix("pi_"),
        "object": "charge",
        "amount": amount,
        "amount_refunded": refunded,
        "currency": currency,
        "payment_intent": payment_intent,
        "refunded": refunded == amount,
    }
    if refunds is not None:
        ch["refunds"] = {
            "object": "list",
            "data": refunds,
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{ch['id']}/refunds",
        }
    return ch


def dispute(payment_intent: str, *, amount: int, status: str, dispute_id: str, currency: str = "eur") -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "currency": currency,
        "charge": "ch_" + payment_intent.removeprefix("pi_"),
        "payment_intent": payment_intent,
        "status": status,
    }
