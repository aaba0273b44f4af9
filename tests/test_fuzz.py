"""Schemathesis against a running `coinslot serve`: every operation in /openapi.json, fed generated
requests with and without credentials, answers without a server error and as its schema says.

A bounded profile (``FUZZ_EXAMPLES`` per operation) so that `make test` stays within CI's time;
raise it locally to look harder: ``COINSLOT_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from test_cli import serving

FUZZ_EXAMPLES = int(os.environ.get("COINSLOT_FUZZ_EXAMPLES", "30"))
CHECKS = (status_code_conformance, content_type_conformance, response_schema_conformance)


class Served:
    def __init__(self, url: str, data: Path) -> None:
        self.url = url
        self.data = data
        self.credentials: dict[str, str] = {}
        self.path_values: dict[str, str] = {}  # real values for path parameters of the admin API


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with serving(tmp) as (url, data, _):
        served = Served(url, data)
        env = {**os.environ, "COINSLOT_DATA_DIR": str(data)}
        site = json.loads(
            subprocess.run(
                [sys.executable, "-m", "coinslot.cli", "site", "create", "--name", "Fuzz", "--origin",
                 "http://localhost:8001", "--id", "site_fuzz"],
                env=env, capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        secret = site["secret_key"]
        headers = {"Authorization": f"Bearer {secret}"}
        assert httpx.put(f"{url}/v1/admin/items/a", json={"title": "A", "price": 19}, headers=headers).is_success
        code = httpx.post(f"{url}/v1/admin/vouchers", json={"amount": 500, "uses": 1000}, headers=headers).json()
        wallet = httpx.post(f"{url}/v1/wallets", json={}).json()["token"]
        assert httpx.post(
            f"{url}/v1/vouchers/redeem", json={"code": code["code"]}, headers={"Authorization": f"Bearer {wallet}"}
        ).is_success
        unlock = httpx.post(
            f"{url}/v1/unlocks", json={"site": "site_fuzz", "item": "a"}, headers={"Authorization": f"Bearer {wallet}"}
        ).json()
        served.credentials = {"walletToken": wallet, "secretKey": secret, "unlockToken": unlock["token"]}
        # A purchase made by a wallet the fuzzing never holds, for the goodwill refund to find later.
        other = {"Authorization": f"Bearer {httpx.post(f'{url}/v1/wallets', json={}).json()['token']}"}
        httpx.post(f"{url}/v1/vouchers/redeem", json={"code": code["code"]}, headers=other).raise_for_status()
        kept = httpx.post(f"{url}/v1/unlocks", json={"site": "site_fuzz", "item": "a"}, headers=other).json()
        served.path_values = {"item": "a", "code": code["code"], "purchase_id": kept["purchase_id"]}
        yield served


def test_every_operation_answers_without_a_server_error_and_as_documented(served: Served) -> None:
    # Schemathesis' own pytest plugin does not run under pytest 9: each operation's strategy is
    # driven by Hypothesis here instead, and every failure is collected before one assert.
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    failures: list[str] = []  # one per operation, of all it found
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), [r for r in results if not isinstance(r, Ok)]
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 20

    for operation in operations:
        schemes = [name for requirement in operation.definition.raw.get("security", []) for name in requirement]
        headers = {"Authorization": f"Bearer {served.credentials[schemes[0]]}"} if schemes else {}

        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def answers_as_documented(case: Any) -> None:
            for sent in (headers, {}):  # with the credential the operation needs, and without any
                response = case.call(headers=sent)
                assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"
                case.validate_response(response, checks=CHECKS)

        try:
            answers_as_documented()
        except (Exception, BaseExceptionGroup) as exc:  # every operation gets its turn; all failures are reported
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_every_admin_operation_does_its_job_with_its_documented_example(served: Served) -> None:
    """Not only refusals: each admin call, with the site's key, real ids and the example /openapi.json
    shows for its body, succeeds and answers as its schema says."""
    schema = schemathesis.openapi.from_url(served.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    # Webhook calls need a receiver that answers and events to look at: tests/test_hooks.py makes
    # each do its job with one; the fuzz above still sends them everything.
    admin = [op for op in operations if op.path.startswith("/v1/admin/") and "/webhooks" not in op.path]
    assert len(admin) >= 13
    today = datetime.date.today()
    queries = {
        "/v1/admin/items": {"limit": "2"},
        "/v1/admin/vouchers": {"limit": "2"},
        "/v1/admin/purchases": {
            "from": str(today - datetime.timedelta(days=2)),
            "to": str(today + datetime.timedelta(days=1)),
        },
        "/v1/admin/ledger": {"format": "csv"},
    }
    headers = {"Authorization": f"Bearer {served.credentials['secretKey']}"}
    answered: dict[str, Any] = {}
    # Reads first, then changes; archiving (and restoring) last, as a price test needs an item on sale.
    for operation in sorted(
        admin, key=lambda op: (op.method != "get", op.path.endswith(("/archive", "/restore")), op.path)
    ):
        raw = operation.definition.raw
        media = raw.get("requestBody", {}).get("content", {}).get("application/json")
        body = dict(media["example"]) if media else None
        if operation.path == "/v1/admin/vouchers" and body:
            body.pop("code")  # its example code may be taken by the time this runs; a random one is not
        names = re.findall(r"{(\w+)}", operation.path)
        path = {name: served.path_values[name] for name in names} or None
        query = queries.get(operation.path)
        if body is None:
            case = operation.Case(path_parameters=path, query=query)
        else:
            case = operation.Case(path_parameters=path, query=query, body=body, media_type="application/json")
        response = case.call(headers=headers)
        where = f"{operation.method.upper()} {operation.path}"
        assert response.status_code in (200, 201), f"{where}: {response.status_code} {response.text[:300]}"
        case.validate_response(response, checks=list(CHECKS))
        answered[where] = response.text if operation.path == "/v1/admin/ledger" else response.json()
    assert answered["GET /v1/admin/site"]["site_id"] == "site_fuzz"
    assert any(s["kind"] == "purchase" for s in answered["GET /v1/admin/purchases"]["sales"])
    assert answered["POST /v1/admin/items/{item}/restore"]["archived"] is False
