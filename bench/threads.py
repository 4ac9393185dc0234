"""A training job alone and beside other CPU-bound work, with threads sized to the free cores
(the default, ``--threads 0``) and with every core taken (``--threads N``, what LightGBM does
when not told).

Trains the churn model (``churn train churn``) on a generated base, each run in a fresh
process with its own MLflow store:

1. alone;
2. beside a CPU-bound loop on one core;
3. beside a second training job started at the same time.

Writes the wall times and the slowdown against "alone" to bench/RESULTS.md.

    python bench/threads.py [--customers 10000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHURN = [sys.executable, "-m", "churn"]
BUSY = "import time\nend = time.time() + 600\nwhile time.time() < end: pass\n"


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MLFLOW_") and k != "OMP_NUM_THREADS"}
    return {**clean, "COLUMNS": "200"}


def start_training(data: Path, threads: int, work: Path) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([*CHURN, "train", "churn", "--data", str(data), "--cutoffs", "6",
                             "--threads", str(threads)], cwd=work, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait(process: subprocess.Popen, started: float) -> float:
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"training failed:\n{err[-2000:]}")
    return time.perf_counter() - started


def alone(data: Path, threads: int, work: Path) -> float:
    started = time.perf_counter()
    return wait(start_training(data, threads, work), started)


def beside_loop(data: Path, threads: int, work: Path) -> float:
    loop = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        time.sleep(1.0)  # the loop is running when the job looks for free cores
        return alone(data, threads, work)
    finally:
        loop.kill()


def beside_training(data: Path, threads: int, work: Path) -> float:
    started = time.perf_counter()
    first = start_training(data, threads, work / "a")
    second = start_training(data, threads, work / "b")
    times = [wait(first, started), wait(second, started)]
    return max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="churn-bench-threads-"))
    data = work / "data"
    subprocess.run([*CHURN, "generate", "--customers", str(args.customers), "--out", str(data)],
                   check=True, env=env(), stdout=subprocess.DEVNULL)
    rows = []
    for label, threads in (("free cores (default)", 0), (f"every core ({cores})", cores)):
        for name, run in (("alone", alone), ("beside a busy loop", beside_loop),
                          ("beside a second training job", beside_training)):
            times = [run(data, threads, work / f"{threads}-{name}-{i}".replace(" ", "_"))
                     for i in range(args.repeats)]
            rows.append((label, name, min(times)))
            print(f"{label:22} {name:30} {min(times):6.1f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    write_results(rows, args.customers, cores)


def write_results(rows: list[tuple[str, str, float]], customers: int, cores: int) -> None:
    base = {label: t for label, name, t in rows if name == "alone"}
    title = (f"\n## Training beside other work: threads sized to the free cores "
             f"({date.today()}, {platform.machine()}, {cores} cores)\n")
    how = (f"`python bench/threads.py --customers {customers}`: `churn train churn` (6 "
           "training cutoffs) on a generated base, best of the repeats, each run in a fresh "
           "process. Slowdown is against the same threads setting alone.\n")
    lines = [title, how,
             "| threads | run | wall time | slowdown |", "|---|---|---:|---:|"]
    lines += [f"| {label} | {name} | {t:.1f} s | {t / base[label]:.2f}x |"
              for label, name, t in rows]
    with (HERE / "RESULTS.md").open("a") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
