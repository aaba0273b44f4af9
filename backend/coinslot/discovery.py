"""Finding the embedded Redis of a data directory from any other process than its owner.

The owner (embedded.py) holds the flock on ``redis.lock`` and records its socket in ``redis.json``.
Another process, a worker of ``coinslot serve`` or a management command, believes the record only
while the lock is held and the socket answers; a command that finds no server runs a temporary one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from coinslot.embedded import (
    LOCK_FILE,
    RECORD_FILE,
    START_TIMEOUT,
    DataDirLocked,
    EmbeddedRedis,
    EmbeddedRedisError,
    ping,
)


def running_url(data_dir: Path) -> str | None:
    """URL of the embedded Redis another process runs for ``data_dir``, or None if there is none."""
    data_dir = data_dir.absolute()
    if not _lock_held(data_dir / LOCK_FILE):
        return None
    try:
        record = json.loads((data_dir / RECORD_FILE).read_text())
        socket_path = str(record["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"unix://{socket_path}" if ping(socket_path) else None


@contextlib.contextmanager
def redis_for_command(data_dir: Path) -> Iterator[str]:
    """Yield a Redis URL for ``data_dir``: the running server's, or a temporary one's for the duration."""
    url = running_url(data_dir)
    if url is not None:
        yield url
        return
    server = EmbeddedRedis(data_dir, supervise=False)
    try:
        server.start()
    except DataDirLocked:
        # Another process took the directory between our look and our start; its server may still be booting.
        raced = True
    else:
        raced = False
    if raced:
        yield _wait_for_running(data_dir)
        return
    try:
        yield server.url
    finally:
        server.stop()


def _lock_held(lock_path: Path) -> bool:
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _wait_for_running(data_dir: Path) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        url = running_url(data_dir)
        if url is not None:
            return url
        time.sleep(0.05)
    raise EmbeddedRedisError(f"{data_dir} is locked by another process, but its redis-server does not answer")
