"""Batch scoring speed: the scoring job's path over a 1M-customer features file vs raw predict.

Both sides use the same model (the 500-tree, 63-leaf one `bench/serving.py` registers) and
the same feature matrix. "raw" is `Booster.predict` on the matrix already in memory; "job"
streams the features file in 200k-row chunks through the job's scoring code (probability,
value at risk, segment, spend tier; reasons off) and writes Parquet atomically, with the
compiled forest ("job") and with `Booster.predict` ("job-lightgbm"). Each side
runs in its own process, so peak memory is its own.

    python bench/serving.py            # once, to register the bench model
    python bench/batch_scoring.py [--customers 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from features.job import FeaturesJobConfig, run_features  # noqa: E402
from features.synthetic import GenerateConfig, as_of_default, generate  # noqa: E402
from models.store import default_tracking_uri  # noqa: E402
from serving.batch import CHUNK_ROWS, ParquetDestination  # noqa: E402
from serving.champion import load_champion  # noqa: E402
from serving.policy import SegmentPolicy, tier_cut_points  # noqa: E402
from serving.scoring import score_features  # noqa: E402

HERE = Path(__file__).resolve().parent


def features_file(work: Path, customers: int) -> Path:
    data, out = work / "data", work / "features.parquet"
    cfg = GenerateConfig(customers=customers, seed=5)
    if not (data / "transactions.parquet").exists():
        generate(cfg, data)
    if not out.exists():
        run_features(FeaturesJobConfig(data=data, as_of=as_of_default(cfg), out=out))
    return out


def model(compiled: bool = True):
    store = HERE / "data" / "serving"
    os.chdir(store)
    mlflow.set_tracking_uri(default_tracking_uri(store))
    return load_champion(compiled=compiled)


def raw(features: Path) -> dict[str, float]:
    loaded = model()
    matrix = pd.read_parquet(features, columns=loaded.model.features).to_numpy(np.float64)
    started = time.perf_counter()
    loaded.model.booster.predict(matrix, raw_score=True)
    return {"rows": len(matrix), "seconds": time.perf_counter() - started}


def job(features: Path, out: Path, compiled: bool = True) -> dict[str, float]:
    loaded = model(compiled)
    policy = SegmentPolicy()
    started = time.perf_counter()
    cuts = tier_cut_points(loaded.model.spend_percentiles, policy)
    destination = ParquetDestination(out)
    rows = 0
    for batch in pq.ParquetFile(features).iter_batches(batch_size=CHUNK_ROWS):
        chunk = batch.to_pandas()
        scores = score_features(chunk, np.ones(len(chunk), dtype=bool), loaded, policy, cuts,
                                explain=False)
        destination.write(scores)
        rows += len(chunk)
    destination.commit()
    return {"rows": rows, "seconds": time.perf_counter() - started}


def peak_gib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmHWM in /proc/self/status")


def in_child(mode: str, features: Path, out: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--mode", mode, "--features",
                           str(features), "--out", str(out)], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--mode", choices=["raw", "job", "job-lightgbm"])
    parser.add_argument("--features", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "data" / "batch" / "scores.parquet")
    args = parser.parse_args()
    if args.mode:
        result = (raw(args.features) if args.mode == "raw"
                  else job(args.features, args.out, compiled=args.mode == "job"))
        result["peak_gib"] = peak_gib()
        print(json.dumps(result))
        return
    work = HERE / "data" / "batch"
    work.mkdir(parents=True, exist_ok=True)
    features = features_file(work, args.customers)
    results = {mode: in_child(mode, features, args.out)
               for mode in ("raw", "job", "job-lightgbm")}
    print(f"# Batch scoring, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores\n")
    print("| path | rows | seconds | rows/s | peak memory (GiB) |")
    print("|---|---:|---:|---:|---:|")
    for mode, r in results.items():
        print(f"| {mode} | {r['rows']:,} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} "
              f"| {r['peak_gib']:.2f} |")
    for mode in ("job", "job-lightgbm"):
        ratio = (results[mode]["rows"] / results[mode]["seconds"]) / (
            results["raw"]["rows"] / results["raw"]["seconds"])
        print(f"\n{mode} / raw predict throughput: {ratio:.2f}x")


if __name__ == "__main__":
    main()
