"""The real stack for browser tests: redis-server, ``coinslot demo`` (backend on 127.0.0.1 and
the demo site on localhost, different sites as in production) and headless Chromium.

Every test gets a fresh browser context, so a fresh reader with no wallet cookie.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    FrameLocator,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from browser import launch
from servers import Standalone, start_standalone

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
expect.set_options(timeout=15_000)  # a shared 2-core CI box can be slow; failures still fail
START_TIMEOUT = 30.0  # seconds for the backend and demo site to answer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"coinslot demo exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {START_TIMEOUT} s: {log.read_text()[-2000:]}")


@dataclass
class Stack:
    backend: str  # http://127.0.0.1:PORT
    demo: str  # http://localhost:PORT
    stranger: str  # http://localhost:OTHER, an origin no demo site allows
    stranger_dir: Path  # what the stranger's server serves
    redis: Standalone
    env: dict[str, str] = field(default_factory=dict)

    def api(self, method: str, path: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
        """Call the backend as a server would (Bearer token, no cookie)."""
        request = urllib.request.Request(self.backend + path, method=method)
        if token:
            request.add_header("Authorization", "Bearer " + token)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data=data, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def reconcile(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coinslot.cli", "reconcile"], env=self.env, capture_output=True, text=True
        )


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with demo_stack(tmp_path_factory.mktemp("e2e"), COINSLOT_PAYMENTS="test") as s:
        yield s


@contextlib.contextmanager
def demo_stack(work: Path, **settings: str) -> Iterator[Stack]:
    """A redis-server, ``coinslot demo`` with these COINSLOT_* settings, and a stranger's server."""
    stranger_dir = work / "stranger"
    stranger_dir.mkdir()
    with start_standalone(work / "redis") as redis:
        port, demo_port, stranger_port = free_port(), free_port(), free_port()
        env = {
            **os.environ,
            "COINSLOT_REDIS_URL": redis.url,
            "COINSLOT_DATA_DIR": str(work / "data"),
            **settings,
        }
        env.pop("COINSLOT_PUBLIC_URL", None)
        log = work / "demo.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "coinslot.cli", "demo", "--port", str(port), "--demo-port", str(demo_port)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        stranger_server = ThreadingHTTPServer(
            ("127.0.0.1", stranger_port), partial(_Quiet, directory=str(stranger_dir))
        )
        threading.Thread(target=stranger_server.serve_forever, daemon=True).start()
        try:
            backend = f"http://127.0.0.1:{port}"
            _wait_for(backend + "/healthz", proc, log)
            _wait_for(f"http://localhost:{demo_port}/", proc, log)
            stack = Stack(
                backend, f"http://localhost:{demo_port}", f"http://localhost:{stranger_port}", stranger_dir, redis, env
            )
            yield stack
            report = stack.reconcile()
            assert report.returncode == 0, f"ledger does not reconcile after the e2e run: {report.stdout}"
        finally:
            stranger_server.shutdown()
            stranger_server.server_close()
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = launch(pw)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Reader:
    """One browser context (a reader) with what its pages printed and threw."""

    context: BrowserContext
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def page(self) -> Page:
        page = self.context.new_page()

        def on_console(msg: ConsoleMessage) -> None:
            self.console.append(f"{msg.type}: {msg.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def wallet_token(self) -> str | None:
        for cookie in self.context.cookies():
            if cookie["name"] == "coinslot_wallet":
                return cookie["value"]
        return None


# Records every coinslot:unlocked event the publisher's page receives, as the publisher would listen.
RECORD_EVENTS = """
window.__unlocks = [];
document.addEventListener('coinslot:unlocked', (e) => window.__unlocks.push(e.detail));
"""


@pytest.fixture
def reader(browser: Browser) -> Iterator[Reader]:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.set_default_timeout(15_000)
    context.add_init_script(RECORD_EVENTS)
    r = Reader(context)
    try:
        yield r
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# Helpers the tests share -------------------------------------------------------------

VOUCHER = "DEMO-FIVE-EUROS"  # €5.00, seeded by `coinslot demo`


def card(page: Page, item: str) -> FrameLocator:
    return page.frame_locator(f'[data-coinslot-item="{item}"] iframe')


def content(page: Page, item: str) -> Locator:
    return page.locator(f'[data-coinslot-item="{item}"] .coinslot-content')


def unlocks(page: Page) -> list[dict[str, str]]:
    events: list[dict[str, str]] = page.evaluate("window.__unlocks")
    return events


def wallet(stack: Stack, reader: Reader) -> dict[str, Any]:
    """The reader's wallet as the backend holds it, read with the cookie's token as a server would."""
    token = reader.wallet_token()
    assert token is not None, "the card should have made a wallet cookie"
    status, body = stack.api("GET", "/v1/wallet", token)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def press(c: FrameLocator, button: Locator) -> None:
    """Press a card's button as a reader does, having seen the card: it ignores presses until it
    has been fully visible (opaque, uncovered) for a moment, where the browser can tell."""
    button.scroll_into_view_if_needed()
    expect(c.locator("html[data-seen]")).to_have_count(1)
    button.click()


def redeem_in_card(page: Page, item: str, code: str = VOUCHER) -> None:
    c = card(page, item)
    press(c, c.get_by_role("button", name=re.compile("Unlock for|freischalten")))
    c.locator("#code").fill(code)
    press(c, c.locator("#voucher button"))
