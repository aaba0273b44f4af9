"""What the front door's limits (coinslot.serving) cost a request, in one run, on loopback only.

    python bench/frontdoor.py [--duration 8] [--repeat 3] [--connections 50]

Serves the same Starlette hello-world (bench/asgi.py) from two uvicorn processes with the same
settings (uvloop, one worker, no access log): one with uvicorn's own httptools protocol, one with
the limited protocol `coinslot serve` uses. Drives both with the same wrk settings, alternately,
``--repeat`` times each, and prints req/s, the limited/plain ratio, latency and server CPU per
request. The hello-world makes the protocol's share of a request as large as it can be: on an
unlock the same cost is a smaller part. Compare ratios within one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from harness import BENCH, WrkResult, free_port, running, wait_http, wrk

SERVE = """
import sys, uvicorn
from coinslot import serving
from coinslot.settings import Settings
sys.path.insert(0, sys.argv[3])
http = serving.protocol(serving.Limits.of(Settings())) if sys.argv[2] == "limited" else "httptools"
uvicorn.run("asgi:hello", factory=True, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http=http,
            access_log=False, log_level="warning")
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8, help="seconds per measured wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each protocol, alternating")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk not found on PATH (Debian: apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="coinslot-frontdoor-"))
    try:
        ports = {name: free_port() for name in ("plain", "limited")}
        results: dict[str, list[WrkResult]] = {name: [] for name in ports}
        with (
            running([sys.executable, "-c", SERVE, str(ports["plain"]), "plain", str(BENCH)], tmp / "plain.log") as a,
            running([sys.executable, "-c", SERVE, str(ports["limited"]), "limited", str(BENCH)], tmp / "lim.log") as b,
        ):
            procs = {"plain": a, "limited": b}
            for name, port in ports.items():
                wait_http(f"http://127.0.0.1:{port}/", procs[name], tmp / f"{name}.log")
                wrk(f"http://127.0.0.1:{port}/", BENCH / "hello.lua", [], 2, connections=args.connections, threads=1,
                    pids={})  # fmt: skip
            for _ in range(args.repeat):
                for name, port in ports.items():
                    results[name].append(
                        wrk(f"http://127.0.0.1:{port}/", BENCH / "hello.lua", [], args.duration,
                            connections=args.connections, threads=1, pids={"server": procs[name].pid})
                    )  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"hello-world under uvicorn, wrk -t1 -c{args.connections}, {args.repeat} x {args.duration:g} s each")
    print(f"{'pair':>4} {'plain req/s':>12} {'limited req/s':>14} {'ratio':>6}  {'p50/p99 µs plain':>17}  "
          f"{'limited':>11}  {'server CPU µs/req':>17}  {'others':>6}")  # fmt: skip
    ratios = []
    for n, (plain, limited) in enumerate(zip(results["plain"], results["limited"], strict=True), 1):
        ratio = limited.rps / plain.rps
        ratios.append(ratio)
        cpu = f"{plain.cpu_per_request('server'):>8} {limited.cpu_per_request('server'):>8}"
        print(
            f"{n:>4} {plain.rps:>12,.0f} {limited.rps:>14,.0f} {ratio:>6.3f}  {plain.p50_us:>7}/{plain.p99_us:<9}  "
            f"{limited.p50_us:>5}/{limited.p99_us:<5}  {cpu}  {max(plain.others_cores, limited.others_cores):>5.2f}c"
        )
    errors = sum(r.errors_4xx_5xx + r.socket_errors for rs in results.values() for r in rs)
    print(f"median ratio limited/plain: {statistics.median(ratios):.3f}; non-2xx or socket errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
