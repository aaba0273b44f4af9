"""Unlock throughput next to a Starlette hello-world, in one run, on loopback only.

    python bench/unlock.py [--duration 10] [--repeat 3] [--connections 50] [--threads 1]
                           [--aof] [--tcp] [--py-spy FILE]
                           [--server serve|instrumented] [--workers N] [--access-log]

Starts its own redis-server, Coinslot as an operator starts it (``coinslot serve``, its
defaults: one worker, no access log, the front door's limits) and a JSON hello-world under
uvicorn (``--loop uvloop --http httptools``, one worker, no access log). ``--server
instrumented`` serves Coinslot from bench/asgi.py under uvicorn instead, which also counts the
app's round trips to Redis. Seeds one site with many items and funded wallets, then drives
``POST /v1/unlocks`` (every request a real debit: a wallet never buys an item twice) and
the hello-world with the same wrk settings, alternately, ``--repeat`` times each. Prints
each pair's req/s and ratio, the median pair's latency and CPU per request, and what an
unlock costs Redis: commands (INFO commandstats), what the app itself sent (a short MONITOR
sample), round trips (the app's writes, counted in bench/asgi.py) and read events. Then
checks that no request met a 402 and that the ledger reconciles. Compare ratios within one
run: wrk, uvicorn and redis-server share the machine's cores, and the figures move with
whatever else runs there (the "other processes" column says how much did).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from coinslot import catalog, keyspace, ledger, vouchers, wallets
from coinslot.embedded import find_redis_server
from coinslot.store import Store, connect
from coinslot.tokens import WalletRef, WalletTokens
from harness import (
    BENCH,
    UVICORN_FLAGS,
    WrkResult,
    child_pids,
    coinslot_env,
    coinslot_serve,
    free_port,
    get_json,
    py_spy,
    running,
    uvicorn,
    wait_http,
    wrk,
)

SITE = "site_bench"
PRICE = 1  # minor units per item
WARMUP_S = 2
SAMPLE_S = 2  # MONITOR sample, after the measured run


# Seeding --------------------------------------------------------------------------------


def lua_table(tokens: Sequence[str], path: Path) -> Path:
    path.write_text("return {\n" + "".join(f'"{t}",\n' for t in tokens) + "}\n")
    return path


async def seed(url: str, secret: str, items: int, groups: dict[str, tuple[int, int]]) -> dict[str, list[WalletRef]]:
    """One site, ``items`` items at PRICE, and per group ``(wallets, balance)`` funded by a voucher each."""
    store = Store(await connect(url))
    now_ms = int(time.time() * 1000)
    try:
        site, _secret_key = await catalog.create_site(
            store, name="Bench", origins=["http://127.0.0.1"], site_id=SITE, now_ms=now_ms
        )
        gate = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with gate:
                await catalog.put_item(store, site, f"item-{i}", title=f"Item {i}", price=PRICE, now_ms=now_ms)

        await asyncio.gather(*(put(i) for i in range(items)))
        out: dict[str, list[WalletRef]] = {}
        for name, (count, balance) in groups.items():
            voucher = await vouchers.create_voucher(store, site, amount=balance, uses=count, now_ms=now_ms)

            async def funded(voucher: vouchers.Voucher = voucher) -> WalletRef:
                async with gate:
                    ref = await wallets.create_wallet(store, currency=site.currency, now_ms=now_ms)
                    await vouchers.redeem(store, ref, voucher.code, now_ms=now_ms)
                    return ref

            out[name] = list(await asyncio.gather(*(funded() for _ in range(count))))
        return out
    finally:
        await store.close()


def populate(r: redis.Redis, count: int, batch: int = 10_000) -> None:
    """``count`` more wallets in Redis, as funded ones look, which no run touches: a keyspace of that size.

    Left out of the wallet index, so the closing reconcile replays only the wallets the runs used.
    """
    now_ms = int(time.time() * 1000)
    for start in range(0, count, batch):
        pipe = r.pipeline(transaction=False)
        for n in range(start, min(start + batch, count)):
            key = keyspace.wallet_key(f"w_population{n:07d}")
            pipe.hset(key, mapping={"currency": "EUR", "balance": 500, "gen": 1, "seq": 1, "created_ms": now_ms})
        pipe.execute()


# Redis observations ---------------------------------------------------------------------


def command_calls(r: redis.Redis) -> dict[str, int]:
    stats = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def ledger_lengths(r: redis.Redis, refs: Sequence[WalletRef]) -> int:
    pipe = r.pipeline(transaction=False)
    for ref in refs:
        pipe.llen(keyspace.wallet_keys(ref.wallet_id).ledger)
    return sum(pipe.execute())


@dataclass
class Snapshot:
    commands: dict[str, int]
    reads: int  # INFO stats total_reads_processed: read events on client sockets
    ledger: int
    sends: int  # the app's writes to Redis (round trips), from /_bench/redis; 0 when not instrumented

    @classmethod
    def take(cls, r: redis.Redis, refs: Sequence[WalletRef], app_url: str | None) -> Snapshot:
        led = ledger_lengths(r, refs)
        sends = get_json(app_url + "/_bench/redis")["sends"] if app_url else 0
        return cls(command_calls(r), int(r.info("stats")["total_reads_processed"]), led, sends)


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    out = {k: v - before.get(k, 0) for k, v in after.items()}
    return {k: v for k, v in out.items() if v > 0 and k not in ("info", "llen")}


class Monitor:
    """MONITOR on its own connection, read by a thread; client commands vs commands run by scripts."""

    LINE = re.compile(rb'^\+[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"')

    def __init__(self, connect: Any) -> None:
        self.sock: socket.socket = connect()
        self.sock.sendall(b"MONITOR\r\n")
        self.sock.settimeout(0.2)
        self.buffer = bytearray()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.done.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.buffer += chunk

    def stop(self) -> tuple[Counter[str], Counter[str]]:
        self.done.set()
        self.thread.join()
        self.sock.close()
        client: Counter[str] = Counter()
        scripted: Counter[str] = Counter()
        for line in bytes(self.buffer).splitlines():
            m = self.LINE.match(line)
            if m:
                (scripted if m.group(1) == b"lua" else client)[m.group(2).decode().lower()] += 1
        return client, scripted


# The run --------------------------------------------------------------------------------


@dataclass
class Figures:
    unlock: list[WrkResult] = field(default_factory=list)  # one per repeat, alternating with hello
    hello: list[WrkResult] = field(default_factory=list)
    unlocks: int = 0  # ledger entries written during the measured unlock runs
    commands: dict[str, int] = field(default_factory=dict)
    reads: int = 0
    sends: int = 0
    sample_unlocks: int = 0
    sample_client: Counter[str] = field(default_factory=Counter)
    parser: str = ""
    min_balance: int = 0
    reconcile: str = ""

    def ratios(self) -> list[float]:
        return [u.rps / h.rps for u, h in zip(self.unlock, self.hello, strict=True)]

    def median_run(self) -> int:
        ratios = self.ratios()
        return sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="unlock and hello-world runs, alternating")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--wallets", type=int, default=200, help="wallets per unlock run")
    parser.add_argument(
        "--population", type=int, default=0, help="more wallets in Redis that no run touches (e.g. 1000000)"
    )
    parser.add_argument("--aof", action="store_true", help="AOF with fsync always, as the embedded default")
    parser.add_argument("--tcp", action="store_true", help="Redis on a loopback port instead of a unix socket")
    parser.add_argument("--py-spy", metavar="FILE", help="record the app with py-spy (raw stacks) in the first run")
    parser.add_argument(
        "--server",
        choices=["serve", "instrumented"],
        default="serve",
        help="`coinslot serve` as shipped, or bench/asgi.py under uvicorn, which counts round trips to Redis",
    )
    parser.add_argument("--workers", type=int, default=1, help="`coinslot serve --workers` (CPU figures need 1)")
    parser.add_argument("--access-log", action="store_true", help="`coinslot serve --access-log`")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH (Debian: apt-get install wrk)")
    if args.py_spy and py_spy() is None:
        sys.exit("py-spy not found beside this Python or on PATH (pip install py-spy)")
    tmp = Path(tempfile.mkdtemp(prefix="coinslot-bench-"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    fig = Figures()
    secret = secrets.token_urlsafe(32)
    sock_path = tmp / "redis.sock"
    redis_port = free_port() if args.tcp else 0
    redis_args = [find_redis_server(), "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp)]
    redis_args += ["--save", "", "--daemonize", "no"]
    redis_args += ["--appendonly", "yes", "--appendfsync", "always"] if args.aof else ["--appendonly", "no"]
    if not args.tcp:
        redis_args += ["--unixsocket", str(sock_path), "--unixsocketperm", "700"]
    url = f"redis://127.0.0.1:{redis_port}" if args.tcp else f"unix://{sock_path}"

    def raw_connection() -> socket.socket:
        if args.tcp:
            return socket.create_connection(("127.0.0.1", redis_port))
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock_path))
        return s

    with running(redis_args, tmp / "redis.log") as redis_proc:
        r = redis.Redis.from_url(url, decode_responses=True)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError, FileNotFoundError):
                if r.ping():
                    break
            time.sleep(0.05)
        version = r.info("server")["redis_version"]
        redis_desc = f"redis-server {version} on {'loopback TCP' if args.tcp else 'a unix socket'}, " + (
            "AOF on, fsync always" if args.aof else "AOF off, no RDB saves"
        )

        # Every unlock run has its own wallets, each buying items it does not own yet.
        # Enough money that no request can meet a 402: a wallet gets requests/wallets of them.
        balance = 100_000
        t0 = time.monotonic()
        runs = [f"measure{i}" for i in range(args.repeat)]
        groups = {"warm": (50, balance), "sample": (50, balance), **{g: (args.wallets, balance) for g in runs}}
        refs = asyncio.run(seed(url, secret, args.items, groups))
        populate(r, args.population)
        signer = WalletTokens([secret.encode()])
        tokens = {
            name: lua_table([signer.sign(ref) for ref in group], tmp / f"{name}.lua") for name, group in refs.items()
        }
        seeded = sum(map(len, refs.values())) + args.population
        print(f"seeded {args.items} items, {seeded:,} wallets ({r.dbsize():,} keys) in {time.monotonic() - t0:.1f} s")
        measured = [ref for g in runs for ref in refs[g]]

        wrk_opts = {"connections": args.connections, "threads": args.threads}
        app_port, hello_port = free_port(), free_port()
        app_url, hello_url = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{hello_port}/"
        env = coinslot_env(url, tmp, app_url, secret)
        instrumented = args.server == "instrumented"
        with (
            uvicorn("asgi:app", app_port, env, tmp, tmp / "app.log")
            if instrumented
            else coinslot_serve(app_port, env, tmp, tmp / "app.log", args.workers, args.access_log) as app,
            uvicorn("asgi:hello", hello_port, env, tmp, tmp / "hello.log") as hello,
        ):
            wait_http(app_url + "/healthz", app, tmp / "app.log")
            wait_http(hello_url, hello, tmp / "hello.log")
            fig.parser = get_json(app_url + "/_bench/redis")["parser"] if instrumented else ""
            unlock_pids = {"server": app.pid, "redis": redis_proc.pid}
            # The signing process works beside the server: its CPU is part of an unlock's cost.
            unlock_pids |= {"signer": pid for pid in child_pids(app.pid)}
            hello_pids = {"server": hello.pid, "redis": redis_proc.pid}

            def drive(group: str, seconds: float) -> WrkResult:
                lua_args = [str(tokens[group]), SITE, str(args.items), str(args.threads)]
                url = app_url + "/v1/unlocks"
                return wrk(url, BENCH / "unlock.lua", lua_args, seconds, **wrk_opts, pids=unlock_pids)

            def drive_hello(seconds: float) -> WrkResult:
                return wrk(hello_url, BENCH / "hello.lua", [], seconds, **wrk_opts, pids=hello_pids)

            drive("warm", WARMUP_S)
            drive_hello(WARMUP_S)
            before = Snapshot.take(r, measured, app_url if instrumented else None)
            for i, group in enumerate(runs):
                spy = None
                if args.py_spy and i == 0:
                    spy_cmd = [str(py_spy()), "record", "--pid", str(app.pid), "--format", "raw", "--rate", "250"]
                    spy_cmd += ["--duration", str(int(args.duration)), "--nonblocking", "--output", args.py_spy]
                    spy = subprocess.Popen(spy_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                fig.unlock.append(drive(group, args.duration))
                if spy is not None:
                    spy.wait(timeout=60)
                fig.hello.append(drive_hello(args.duration))
            after = Snapshot.take(r, measured, app_url if instrumented else None)
            fig.unlocks = after.ledger - before.ledger
            fig.commands = delta(after.commands, before.commands)
            fig.reads = after.reads - before.reads
            fig.sends = after.sends - before.sends

            # A short sample under MONITOR tells the commands the app sent from those its scripts ran.
            sample_before = ledger_lengths(r, refs["sample"])
            monitor = Monitor(raw_connection)
            drive("sample", SAMPLE_S)
            fig.sample_client, _scripted = monitor.stop()
            fig.sample_unlocks = ledger_lengths(r, refs["sample"]) - sample_before

        fig.min_balance = min_balance(r, measured)
        fig.reconcile = asyncio.run(reconcile(url))
        r.close()

    print_table(fig, args, redis_desc)
    ok = all(u.errors_4xx_5xx == 0 for u in fig.unlock) and fig.reconcile == "clean"
    return 0 if ok else 1


def min_balance(r: redis.Redis, refs: Sequence[WalletRef]) -> int:
    pipe = r.pipeline(transaction=False)
    for ref in refs:
        pipe.hget(keyspace.wallet_key(ref.wallet_id), "balance")
    return min(int(b) for b in pipe.execute())


async def reconcile(url: str) -> str:
    store = Store(await connect(url))
    try:
        report = await ledger.reconcile(store)
    finally:
        await store.close()
    if report.clean:
        return "clean"
    return f"{len(report.problems)} problems, first: {report.problems[0]}"


def print_table(fig: Figures, args: argparse.Namespace, redis_desc: str) -> None:
    m = fig.median_run()
    u, h = fig.unlock[m], fig.hello[m]
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s, {args.repeat} runs of each, alternating;")
    if args.server == "serve":
        shipped = f"coinslot serve --workers {args.workers}{' --access-log' if args.access_log else ''}"
        print(f"Coinslot: {shipped}; hello-world: uvicorn {' '.join(UVICORN_FLAGS[:6])}; {redis_desc}")
    else:
        print(f"uvicorn {' '.join(UVICORN_FLAGS[:6])} (bench/asgi.py, instrumented); {redis_desc}")
    print()
    print("run  unlock req/s  hello req/s  ratio   other processes (cores, unlock/hello)")
    for i, (a, b) in enumerate(zip(fig.unlock, fig.hello, strict=True)):
        mark = "  <- median" if i == m else ""
        others = f"{a.others_cores:.2f} / {b.others_cores:.2f}"
        print(f"{i + 1:>3}  {a.rps:>12,.0f}  {b.rps:>11,.0f}  {a.rps / b.rps:.3f}   {others}{mark}")
    print()
    print("median run                        unlock       hello-world")
    rows = [
        ("requests/s", f"{u.rps:,.0f}", f"{h.rps:,.0f}"),
        (
            "latency p50 / p99 (ms)",
            f"{u.p50_us / 1000:.2f} / {u.p99_us / 1000:.2f}",
            f"{h.p50_us / 1000:.2f} / {h.p99_us / 1000:.2f}",
        ),
        *(
            (f"CPU µs/req usr+sys {name}", u.cpu_per_request(name), h.cpu_per_request(name))
            for name in ("server", "signer", "redis", "wrk")
        ),
    ]
    for label, unlock_figure, hello_figure in rows:
        print(f"{label:<26}{unlock_figure:>16}{hello_figure:>18}")
    print(f"{'ratio unlock / hello':<26}{u.rps / h.rps:>16.3f}")
    print()
    responses = sum(x.requests for x in fig.unlock)
    errors = sum(x.errors_4xx_5xx for x in fig.unlock)
    socket_errors = sum(x.socket_errors for x in fig.unlock) + sum(x.socket_errors for x in fig.hello)
    n = max(fig.unlocks, 1)
    print("all unlock runs")
    print(f"  responses (wrk)          {responses:,}: {responses - errors:,} 2xx, {errors} non-2xx")
    print(f"  socket errors (wrk)      {socket_errors}")
    late = fig.unlocks - (responses - errors)
    print(f"  unlocks in the ledger    {fig.unlocks:,} ({late:+} against wrk's 2xx: in flight when wrk stopped)")
    total = sum(fig.commands.values())
    print(f"  redis commands/unlock    {total / n:.2f} (INFO commandstats, scripts' own commands included):")
    print(
        "                           "
        + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(fig.commands.items(), key=lambda kv: -kv[1]))
    )
    client_total = sum(fig.sample_client.values())
    s = max(fig.sample_unlocks, 1)
    print(
        f"  sent by the app/unlock   {client_total / s:.2f} (MONITOR, {fig.sample_unlocks:,} unlocks in {SAMPLE_S} s: "
        + ", ".join(f"{k} {v / s:.2f}" for k, v in fig.sample_client.most_common())
        + ")"
    )
    if args.server == "instrumented":
        print(f"  round trips/unlock       {fig.sends / n:.3f} (writes to Redis; calls written together count once)")
    else:
        print("  round trips/unlock       n/a: counted with --server instrumented")
    print(f"  redis reads/unlock       {fig.reads / n:.3f} (INFO stats total_reads_processed)")
    if fig.parser:
        print(f"  reply parsers            {fig.parser}")
    print(f"  lowest wallet balance    {fig.min_balance:,} minor units (> 0: no request could meet a 402)")
    print(f"  ledger reconcile         {fig.reconcile}")


if __name__ == "__main__":
    sys.exit(main())
