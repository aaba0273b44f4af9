"""The command line, and `coinslot serve` with its embedded, supervised Redis."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from coinslot.cli import main
from coinslot.serving import RedactTokens


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(
    tmp_path: Path, *flags: str, port: int | None = None
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """A real `coinslot serve` process with no COINSLOT_REDIS_URL: it must start its own Redis.

    ``port`` lets a test restart a server at the same address (its data stays in ``tmp_path``).
    """
    port = port or free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COINSLOT_")}
    env["COINSLOT_DATA_DIR"] = str(data)
    env["COINSLOT_REQUEST_TIMEOUT"] = "1"  # seconds; the rest of the front door keeps its defaults
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinslot.cli", "serve", "--port", str(port), *flags],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            proc.kill()
            out = proc.communicate()[0].decode()
            raise AssertionError(f"coinslot serve did not become healthy:\n{out}")
        yield url, data, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serving(tmp_path) as (url, data, _):
        yield url, data


def run_cli(
    args: list[str], data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    monkeypatch.delenv("COINSLOT_REDIS_URL", raising=False)
    monkeypatch.setenv("COINSLOT_DATA_DIR", str(data))
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_serve_runs_its_own_redis_and_commands_share_it(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, data = server
    record = json.loads((data / "redis.json").read_text())

    code, out = run_cli(
        ["site", "create", "--name", "Planet", "--origin", "http://localhost:8001", "--id", "site_cli"],
        data,
        monkeypatch,
        capsys,
    )
    assert code == 0
    site = json.loads(out)
    assert site["site_id"] == "site_cli" and site["secret_key"].startswith("sk_")
    code, out = run_cli(
        ["item", "put", "site_cli", "article-1", "--title", "Hello", "--price", "19"], data, monkeypatch, capsys
    )
    assert code == 0

    # The server sees what the command wrote: both talk to the one embedded Redis.
    offers = httpx.get(f"{url}/v1/offers?site=site_cli&items=article-1").json()
    assert offers["items"][0]["price"] == 19
    items = httpx.get(f"{url}/v1/admin/items", headers={"Authorization": f"Bearer {site['secret_key']}"}).json()
    assert [i["item"] for i in items["items"]] == ["article-1"]
    assert Path(record["socket"]).exists()


def test_passes_caps_and_a_goodwill_refund_from_the_command_line(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, data = server
    made = ["site", "create", "--name", "P", "--origin", "http://localhost:8001", "--id", "site_cap"]
    code, out = run_cli([*made, "--daily-cap", "300", "--refund-window", "0"], data, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["secret_key"]
    code, out = run_cli(
        ["item", "put", "site_cap", "day", "--title", "Day", "--price", "99", "--pass-hours", "24"],
        data,
        monkeypatch,
        capsys,
    )
    assert code == 0 and json.loads(out)["kind"] == "pass"
    code, out = run_cli(["voucher", "create", "site_cap", "--amount", "500"], data, monkeypatch, capsys)
    voucher = json.loads(out)["code"]
    token = httpx.post(f"{url}/v1/wallets", json={}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    httpx.post(f"{url}/v1/vouchers/redeem", json={"code": voucher}, headers=bearer).raise_for_status()
    bought = httpx.post(f"{url}/v1/unlocks", json={"site": "site_cap", "item": "day"}, headers=bearer).json()
    assert bought["charged"] == 99

    code, out = run_cli(["refund", bought["purchase_id"], "--site", "site_other"], data, monkeypatch, capsys)
    assert code == 2 and "no purchase" in out
    code, out = run_cli(["refund", bought["purchase_id"]], data, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["refunded"] == 99
    assert httpx.get(f"{url}/v1/wallet", headers=bearer).json()["balance"] == 500
    code, out = run_cli(["reconcile"], data, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["clean"] is True


def test_serve_with_workers_shares_one_embedded_redis_and_stops_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with serving(tmp_path, "--workers", "2", "--access-log") as (url, data, proc):
        code, out = run_cli(
            ["site", "create", "--name", "P", "--origin", "http://localhost:8001", "--id", "site_w"],
            data,
            monkeypatch,
            capsys,
        )
        assert code == 0
        run_cli(["item", "put", "site_w", "a", "--title", "A", "--price", "19"], data, monkeypatch, capsys)
        # Many connections, so that both workers answer: each sees what the command wrote.
        prices = {httpx.get(f"{url}/v1/offers?site=site_w&items=a").json()["items"][0]["price"] for _ in range(20)}
        assert prices == {19}
        workers = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        record = json.loads((data / "redis.json").read_text())
        assert record["owner_pid"] == proc.pid  # the parent runs the embedded Redis the workers share
    assert proc.returncode is not None
    deadline = time.monotonic() + 5  # the workers, the Redis and multiprocessing's helper end with the parent
    while time.monotonic() < deadline and any(alive(pid) for pid in workers):
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


def alive(pid: str) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_serve_guards_its_front_door(server: tuple[str, Path]) -> None:
    """`coinslot serve` runs behind the limits of coinslot.serving (tested in test_serving), from its settings."""
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    big = httpx.get(url + "/healthz", headers={"X-Big": "a" * 20_000})
    assert big.status_code == 431
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
        sock.settimeout(5)
        started = time.monotonic()
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert 0.9 < time.monotonic() - started < 3  # COINSLOT_REQUEST_TIMEOUT=1


def test_commands_work_without_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, out = run_cli(
        [
            "site",
            "create",
            "--name",
            "Planet",
            "--origin",
            "https://planet.example",
            "--currency",
            "gbp",
            "--timezone",
            "Europe/London",
            "--tab-limit",
            "50",
        ],
        data,
        monkeypatch,
        capsys,
    )
    assert code == 0
    site_id = json.loads(out)["site_id"]
    code, out = run_cli(["voucher", "create", site_id, "--amount", "500", "--uses", "2"], data, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["currency"] == "GBP"
    code, out = run_cli(["reconcile"], data, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["clean"] is True
    assert not (data / "redis.json").exists()  # the temporary Redis was stopped again


def test_cli_errors_are_messages_not_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    code, out = run_cli(["site", "create", "--name", "X", "--origin", "not a url"], data, monkeypatch, capsys)
    assert code == 2
    assert out.startswith("coinslot: origin 'not a url' is not of the form")
    code, out = run_cli(["item", "put", "site_missing", "a", "--title", "t", "--price", "1"], data, monkeypatch, capsys)
    assert code == 2
    assert "Traceback" not in out and "site_missing" in out


def test_serve_refuses_non_loopback_without_public_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("COINSLOT_PUBLIC_URL", raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "COINSLOT_PUBLIC_URL is required" in capsys.readouterr().err


def test_access_log_never_shows_tokens() -> None:
    import logging

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4", "GET", "/v1/content/s/a?token=eyJhbGciOi.x.y&x=1", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    assert "eyJ" not in record.getMessage()
    assert '"GET /v1/content/s/a?[redacted] HTTP/1.1" 200' in record.getMessage()
    sneaky = ("1.2.3.4", "GET", "/v1/content/s/a?tok%65n=eyJhbGciOi.x.y", "1.1", 200)
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', sneaky, None)
    RedactTokens().filter(record)
    assert "eyJ" not in record.getMessage()


def test_keys_rotate_keeps_the_old_key_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from coinslot.keyring import KeyRing

    data = tmp_path / "data"
    first = KeyRing.load(data).kid

    code, out = run_cli(["keys", "rotate"], data, monkeypatch, capsys)

    result = json.loads(out)
    assert code == 0
    assert result["signing_kid"] != first
    assert set(result["published_kids"]) == {first, result["signing_kid"]}
    assert KeyRing.load(data).kid == result["signing_kid"]
