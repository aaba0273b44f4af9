"""What every bench here needs: free ports, processes started and stopped, the servers under test
(Coinslot as an operator starts it, a hello-world under uvicorn), and wrk runs with the CPU time
each process spent during them. The benches themselves (unlock, pages, frontdoor, scale, widget)
say what they measure.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from coinslot.embedded import find_redis_server

BENCH = Path(__file__).resolve().parent
UVICORN_FLAGS = "--loop uvloop --http httptools --workers 1 --no-access-log --log-level warning".split()


# Processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM to this one process (by its pid), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def running(args: Sequence[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def memory_redis(tmp: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server on a unix socket in ``tmp`` with no persistence (memory only), once it answers:
    its URL and a client, closed after."""
    sock = tmp / "redis.sock"
    server = [find_redis_server(), "--port", "0", "--unixsocket", str(sock), "--dir", str(tmp)]
    server += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    with running(server, tmp / "redis.log"):
        client = redis.Redis(unix_socket_path=str(sock))
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        try:
            yield f"unix://{sock}", client
        finally:
            client.close()


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} not ready after {timeout} s:\n{log.read_text()[-2000:]}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def uvicorn(
    target: str, port: int, env: dict[str, str], cwd: Path, log: Path
) -> contextlib.AbstractContextManager[Any]:
    args = [sys.executable, "-m", "uvicorn", target, "--factory", "--app-dir", str(BENCH)]
    args += ["--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS]
    return running(args, log, env=env, cwd=cwd)


def coinslot_env(redis_url: str, tmp: Path, public_url: str, secret: str) -> dict[str, str]:
    """The environment a bench's Coinslot runs in: its own Redis and data, test payments, a known secret."""
    return {
        **os.environ,
        "COINSLOT_REDIS_URL": redis_url,
        "COINSLOT_DATA_DIR": str(tmp / "data"),
        "COINSLOT_PUBLIC_URL": public_url,
        "COINSLOT_SECRET_KEYS": secret,
        "COINSLOT_PAYMENTS": "test",
        # Bench wallets buy as fast as the server lets them: far beyond a reader's pace. The
        # per-wallet counter still runs on every unlock, so its cost is in the figures.
        "COINSLOT_UNLOCKS_PER_WALLET_PER_MINUTE": "1000000000",
    }


def coinslot_serve(
    port: int, env: dict[str, str], cwd: Path, log: Path, workers: int, access_log: bool
) -> contextlib.AbstractContextManager[Any]:
    args = [sys.executable, "-m", "coinslot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--workers", str(workers), *(["--access-log"] if access_log else [])]
    return running(args, log, env=env, cwd=cwd)


# wrk ------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    duration_us: int
    errors_4xx_5xx: int
    socket_errors: int
    p50_us: int
    p99_us: int
    cpu_s: dict[str, tuple[float, float]]  # user and system CPU seconds used during the run, per process
    others_cores: float  # CPU that processes other than these used meanwhile, in cores: noise

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6)

    def cpu_per_request(self, name: str) -> str:
        """``user+system`` CPU µs per response."""
        if name not in self.cpu_s:
            return "-"
        user, system = (s * 1e6 / max(self.requests, 1) for s in self.cpu_s[name])
        return f"{user:.0f}+{system:.0f}"


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of one process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def child_pids(pid: int) -> list[int]:
    """Processes started by ``pid`` (the app's signing process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def machine_busy_seconds() -> float:
    """CPU time all cores spent on anything but idling, from /proc/stat."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return a[0] - b[0], a[1] - b[1]


def wrk(
    url: str,
    script: Path,
    args: Sequence[str],
    duration: float,
    *,
    connections: int,
    threads: int,
    pids: dict[str, int],
) -> WrkResult:
    """One wrk run; also the CPU time that wrk and the processes in ``pids`` spent meanwhile."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", str(script), url]
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wrk_before = children_cpu_seconds()
    machine_before = machine_busy_seconds()
    out = subprocess.run([*cmd, "--", *args], capture_output=True, text=True, timeout=duration + 60, check=True)
    cpu = {name: minus(cpu_seconds(pid), cpu_before[name]) for name, pid in pids.items()}
    cpu["wrk"] = minus(children_cpu_seconds(), wrk_before)
    ours = sum(user + system for user, system in cpu.values())
    others = max(0.0, machine_busy_seconds() - machine_before - ours)
    line = next((li for li in out.stdout.splitlines() if li.startswith("BENCH ")), None)
    if line is None:
        sys.exit(f"wrk printed no BENCH line:\n{out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("BENCH "))
    return WrkResult(
        requests=r["requests"],
        duration_us=r["duration_us"],
        errors_4xx_5xx=r["errors_4xx_5xx"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        p50_us=r["p50_us"],
        p99_us=r["p99_us"],
        cpu_s=cpu,
        others_cores=others / duration,
    )
