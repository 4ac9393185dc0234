"""Benchmark: point-in-time features on 1M customers, DuckDB engine vs a pandas peer.

Run by hand (``make bench`` or ``python bench/features.py``). Generates the synthetic base
once into bench/data/, then runs each engine in its own process (so peak memory is that
engine's alone), checks that both give the same feature table, and writes the figures to
bench/RESULTS.md.

    python bench/features.py [--customers 1000000] [--seed 7] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
# This file's folder comes first on sys.path and its name would shadow the features package.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]

import duckdb  # noqa: E402 (needs the path fixed above, as do the imports below)
import numpy  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.pandas_features import pandas_features  # noqa: E402
from features.contract import TABLES  # noqa: E402
from features.job import FeaturesJobConfig, run_features  # noqa: E402
from features.point_in_time import connect, write_features  # noqa: E402
from features.sources import find_tables, typed_relation_sql  # noqa: E402
from features.synthetic import GenerateConfig, as_of_default, generate  # noqa: E402

ENGINES = ("duckdb-features", "duckdb-features-1gb", "duckdb-job", "pandas")
MEMORY_LIMITS = {"duckdb-features": "4GB", "duckdb-features-1gb": "1GB"}


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def run_engine(engine: str, data: Path, as_of: date, out: Path) -> dict:
    """Build features with one engine in this process; report seconds and peak memory."""
    started = time.perf_counter()
    if engine == "pandas":
        pandas_features(data, as_of).to_parquet(out, index=False)
    elif engine == "duckdb-job":
        run_features(FeaturesJobConfig(data=data, as_of=as_of, out=out))
    else:
        con = connect(MEMORY_LIMITS[engine], out.parent / "spill")
        tables = {name: typed_relation_sql(con, src) for name, src in find_tables(data).items()
                  if name in TABLES}
        write_features(con, tables, out, as_of)
    return {"engine": engine, "seconds": time.perf_counter() - started,
            "peak_gib": _peak_rss_gib()}


def _child(engine: str, data: Path, as_of: date, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--engine", engine, "--data", str(data),
           "--as-of", as_of.isoformat(), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}"


def _versions() -> str:
    return (f"Python {platform.python_version()}, duckdb {duckdb.__version__}, "
            f"pandas {pd.__version__}, pyarrow {pyarrow.__version__}, "
            f"numpy {numpy.__version__}")


def _same_output(a: Path, b: Path) -> str:
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    for frame in (left, right):
        frame["as_of"] = pd.to_datetime(frame["as_of"])
    pd.testing.assert_frame_equal(left, right, check_dtype=False, rtol=1e-9, atol=1e-9)
    return f"identical ({len(left):,} rows x {left.shape[1] - 2} features)"


def _report(cfg: GenerateConfig, rows: dict[str, int], gen_seconds: float, as_of: date,
            results: list[dict], check: str) -> str:
    best = {e: min((r for r in results if r["engine"] == e), key=lambda r: r["seconds"])
            for e in ENGINES}
    peer = best["pandas"]
    lines = [
        "# Benchmark results",
        "",
        "## Point-in-time features: DuckDB engine vs pandas peer (`bench/features.py`)",
        "",
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_machine()}",
        f"- Software: {_versions()}",
        f"- Data: `churn generate --customers {cfg.customers:,} --seed {cfg.seed}`: "
        + ", ".join(f"{k} {v:,}" for k, v in rows.items() if k != "ground_truth")
        + f" rows (Parquet; generated in {gen_seconds:.0f} s)",
        (f"- Cutoff: {as_of}; each engine in its own process; best of "
         f"{len(results) // len(ENGINES)} run(s); peak memory is the process's max RSS"),
        f"- Outputs of the two feature engines: {check}",
        "",
        "| engine | what it does | wall time (s) | peak memory (GiB) | speed vs pandas |",
        "|---|---|---:|---:|---:|",
    ]
    what = {
        "duckdb-features": "feature query over the Parquet files (same work as the peer)",
        "duckdb-features-1gb": "the same with DuckDB's memory limit at 1GB (spills to disk)",
        "duckdb-job": "`churn features`: contract validation of every row + features",
        "pandas": "pandas peer: load tables whole, groupby per feature",
    }
    for engine in ENGINES:
        r = best[engine]
        lines.append(f"| {engine} | {what[engine]} | {r['seconds']:.1f} | {r['peak_gib']:.2f} | "
                     f"{peer['seconds'] / r['seconds']:.1f}x |")
    lines += [
        "",
        "Targets: DuckDB path at least 3x faster than pandas; peak memory at most 6 GiB.",
        "",
        "Notes: DuckDB runs on every core (here 2), pandas on one, as each does by default.",
        "DuckDB's peak memory follows its memory limit (default 4GB; the 1GB row spills to",
        "disk), while the pandas peer holds every table in memory, so its peak grows with",
        "the data.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.data, args.as_of, args.out)))
        return
    cfg = GenerateConfig(customers=args.customers, seed=args.seed)
    work = HERE / "data" / f"{cfg.customers}-{cfg.seed}"
    data = work / "tables"
    timing = work / "generate-seconds.txt"
    if not timing.exists():
        started = time.perf_counter()
        generate(cfg, data)
        timing.write_text(f"{time.perf_counter() - started:.1f}")
    gen_seconds = float(timing.read_text())
    rows = {f.stem: pq.ParquetFile(f).metadata.num_rows for f in sorted(data.glob("*.parquet"))}
    as_of = as_of_default(cfg)
    results = []
    for _ in range(args.repeat):
        for engine in ENGINES:
            result = _child(engine, data, as_of, work / f"{engine}.parquet")
            print(f"{engine}: {result['seconds']:.1f} s, peak {result['peak_gib']:.2f} GiB",
                  flush=True)
            results.append(result)
    check = _same_output(work / "duckdb-features.parquet", work / "pandas.parquet")
    report = _report(cfg, rows, gen_seconds, as_of, results, check)
    (HERE / "RESULTS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
