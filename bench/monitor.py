"""`churn monitor` over a year of weekly scoring runs of 1M customers.

Generates 1M synthetic customers, trains and promotes a churn model on them (two training
cutoffs, at most 300 trees, to keep set-up short), scores the whole base once for real as of
the first week with `churn score`'s own code, then records 51 more weekly runs by copying
those scores under each week's as-of (same rows, new as-of, its own MLflow scoring run with
the real run's segments and profile). Monitoring reads every run's scores back and labels
them from the transactions at its own as-of, so its work is that of 52 real runs; the
metrics it prints for the copies are not meaningful. Then times the real `churn monitor`
command over all 52, in its own process.

    python bench/monitor.py [--customers 1000000] [--weeks 52]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

# MLflow's per-download progress bars would bury the figures.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import mlflow  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from rich.progress import Progress  # noqa: E402

from churn import model_steps as steps  # noqa: E402
from features.synthetic import GenerateConfig, generate  # noqa: E402
from models.store import default_tracking_uri  # noqa: E402
from operations import runlog  # noqa: E402
from serving.batch import ScoreJobConfig  # noqa: E402
from serving.champion import load_champion  # noqa: E402
from training.config import ChurnTrainConfig  # noqa: E402
from training.promote import promote  # noqa: E402
from training.tracking import log_churn_run  # noqa: E402
from training.train_churn import train_churn  # noqa: E402

HERE = Path(__file__).resolve().parent
FIRST_WEEK = date(2024, 7, 1)
MONITOR_AS_OF = date(2026, 1, 1)


def setup(work: Path, customers: int) -> Path:
    data = work / "data"
    if not (data / "transactions.parquet").exists():
        started = time.perf_counter()
        generate(GenerateConfig(customers=customers, seed=5), data)
        print(f"generated {customers:,} customers in {time.perf_counter() - started:.0f} s")
    os.chdir(work)
    mlflow.set_tracking_uri(default_tracking_uri(work))
    try:
        load_champion("churn")
    except Exception:
        started = time.perf_counter()
        cfg = ChurnTrainConfig(data=data, train_cutoff_count=2, max_trees=300,
                               test_cutoff=date(2024, 4, 1))
        result = train_churn(cfg)
        log_churn_run(cfg, result)
        promote("churn")
        print(f"trained and promoted in {time.perf_counter() - started:.0f} s")
    return data


def score_weeks(work: Path, data: Path, weeks: int) -> float:
    """One real scoring run, then weekly copies; returns the real run's seconds."""
    scores = work / "scores"
    scores.mkdir(exist_ok=True)
    first = scores / f"{FIRST_WEEK}.parquet"
    cfg = ScoreJobConfig(data=data, as_of=FIRST_WEEK, out=str(first), reasons=False)
    started = time.perf_counter()
    result = steps.score(cfg, Progress(disable=True))
    seconds = time.perf_counter() - started
    loaded = load_champion("churn")
    table = pq.read_table(first)
    for week in range(1, weeks):
        as_of = FIRST_WEEK + timedelta(weeks=week)
        out = scores / f"{as_of}.parquet"
        column = pa.array([as_of] * table.num_rows, pa.date32())
        pq.write_table(table.set_column(table.schema.get_field_index("as_of"), "as_of", column),
                       out)
        copy = dataclasses.replace(cfg, as_of=as_of, out=str(out))
        run_id = runlog.open_run(copy, loaded, mlflow.MlflowClient())
        runlog.close_run(run_id, copy, loaded, result, mlflow.MlflowClient())
    return seconds


def time_monitor(work: Path) -> tuple[float, float, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "COLUMNS": "200"}
    started = time.perf_counter()
    done = subprocess.run(["churn", "monitor", "--data", "data", "--as-of",
                           MONITOR_AS_OF.isoformat()], cwd=work, env=env, capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode not in (0, 10, 20):
        raise SystemExit(done.stdout + done.stderr)
    return seconds, peak, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--weeks", type=int, default=52)
    args = parser.parse_args()
    work = HERE / "data" / "monitor"
    work.mkdir(parents=True, exist_ok=True)
    data = setup(work, args.customers)
    score_seconds = score_weeks(work, data, args.weeks)
    seconds, peak, output = time_monitor(work)
    print(output)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"{args.customers:,} customers, {args.weeks} weekly runs")
    print(f"one real scoring run: {score_seconds:.1f} s")
    print(f"churn monitor over {args.weeks} runs: {seconds:.1f} s "
          f"({seconds / args.weeks:.2f} s per run), peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main()
