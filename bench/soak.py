"""A long loopback load on `churn serve` at a share of its measured maximum rate.

First the maximum: wrk at 8 connections, 1-row `/score_features` requests, for
`--probe-seconds`. Then `--seconds` of load at `--share` of that rate (each wrk connection
waits between requests so the total comes to the target), while the server's memory (RSS of
its whole process tree) is sampled. Reports errors (non-2xx and socket errors), p50/p99
latency, the rate reached and RSS at start and end. Uses the model `bench/serving.py`
registers (run that first, or pass --customers to build one here). Needs wrk.

    python bench/soak.py [--seconds 600] [--share 0.8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from datetime import datetime
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
# bench/serving.py's helpers, under a name that does not shadow the `serving` package.
_spec = spec_from_file_location("bench_serving", HERE / "serving.py")
bench_serving = module_from_spec(_spec)
_spec.loader.exec_module(bench_serving)
bodies, free_port, prepare, start = (bench_serving.bodies, bench_serving.free_port,
                                     bench_serving.prepare, bench_serving.start)
BIN = Path(sys.executable).parent
PACED = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BODY")):read("*a")
local pause = tonumber(os.getenv("PAUSE_MS"))
function delay() return pause end
"""


def run_wrk(url: str, body: Path, seconds: int, lua: Path, pause_ms: float) -> dict:
    done = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(lua),
         url], env={**os.environ, "BODY": str(body), "PAUSE_MS": f"{pause_ms:.3f}"},
        capture_output=True, text=True, check=True)
    text = done.stdout

    def ms(label: str) -> float:
        value, unit = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    requests = int(re.search(r"(\d+) requests in", text).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        text)
    return {"requests": requests, "rate": float(re.search(r"Requests/sec:\s+([\d.]+)",
                                                          text).group(1)),
            "p50_ms": ms("50"), "p99_ms": ms("99"),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(g) for g in sockets.groups()) if sockets else 0}


def calibrate(url: str, body: Path, lua: Path, target: float, latency_ms: float) -> float:
    """The pause per connection between requests that gives ``target`` requests/s: each of
    8 connections makes one per pause + latency, and latency falls as the load does, so
    a few short runs close in on it."""
    pause = max(0.0, 8_000.0 / target - latency_ms)
    for _ in range(6):
        trial = run_wrk(url, body, 10, lua, pause)
        if abs(trial["rate"] / target - 1) < 0.03:
            break
        # Requests take pause + latency; the latency seen in the trial, with its rate.
        latency = 8_000.0 / trial["rate"] - pause
        pause = max(0.0, 8_000.0 / target - latency)
    return pause


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--probe-seconds", type=int, default=20)
    parser.add_argument("--share", type=float, default=0.8)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--work", type=Path, default=HERE / "data" / "serving")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install wrk)")
    args.work.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()
    frame = prepare(work, args.customers, reuse=True)
    body = bodies(frame, work)[("churn serve", 1)]
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    lua.write_text(PACED)
    port = free_port()
    url = f"http://127.0.0.1:{port}/score_features"
    server = start([str(BIN / "churn"), "serve", "--port", str(port), "--host", "127.0.0.1"],
                   f"http://127.0.0.1:{port}/readyz", work, "soak-serve")
    tree = psutil.Process(server.pid)
    try:
        probe = run_wrk(url, body, args.probe_seconds, lua, 0.0)
        target = args.share * probe["rate"]
        pause = calibrate(url, body, lua, target, probe["p50_ms"])
        rss_start = tree_rss(tree)
        samples, stop = [], threading.Event()

        def sample() -> None:
            while not stop.wait(10):
                samples.append(tree_rss(tree))

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        soak = run_wrk(url, body, args.seconds, lua, pause)
        stop.set()
        rss_end = tree_rss(tree)
    finally:
        server.terminate()
        server.wait(timeout=30)
    mib = 1024 * 1024
    report = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "max_rate": probe["rate"], "probe_p50_ms": probe["p50_ms"], "target_rate": target,
        "share_reached": soak["rate"] / probe["rate"],
        "pause_ms": pause, **{f"soak_{k}": v for k, v in soak.items()},
        "rss_start_mib": rss_start / mib, "rss_end_mib": rss_end / mib,
        "rss_peak_mib": max([rss_start, rss_end, *samples]) / mib,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
