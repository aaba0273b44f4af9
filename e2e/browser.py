"""Which Chromium the browser tests drive, and how it is started.

`python e2e/browser.py` prints its version, as `make test` does before the tests run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import Browser, Playwright, sync_playwright

# A system Chromium on a machine without internet stalls on its background connections without these.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_executable(pw: Playwright) -> str | None:
    """Playwright's own Chromium when installed, else Debian's (None = let Playwright decide)."""
    bundled = pw.chromium.executable_path
    if bundled and Path(bundled).exists():
        return None
    # The real binary, not Debian's wrapper script: the wrapper prints a harmless warning.
    for candidate in ("/usr/lib/chromium/chromium", "/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def launch(pw: Playwright) -> Browser:
    exe = chromium_executable(pw)
    return pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_FLAGS if exe else [])


if __name__ == "__main__":
    with sync_playwright() as pw:
        browser = launch(pw)
        print(f"versions: Chromium {browser.version} ({chromium_executable(pw) or pw.chromium.executable_path})")
        browser.close()
