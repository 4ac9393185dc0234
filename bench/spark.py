"""DuckDB vs Spark ``local[2]`` on generated bases: features, scoring, and the nightly job.

Stages, each in its own process (peak memory is the whole process tree's, JVM included,
sampled every 0.2 s):

- features: ``churn features`` with ``--engine duckdb`` and ``--engine spark``.
- scoring: the same features file scored by the churn champion alone (reasons off):
  "duckdb" streams it through ``score_features`` (the DuckDB job's path), "spark" is the
  Spark job's ``mapInArrow`` around the same code, and the peer is ``mlflow.pyfunc.spark_udf``
  of the same registered model (probability only), all writing Parquet; "floor" is the
  part of the Spark side no model can remove: the features read and handed to the Python
  workers as Arrow, counted there and nothing else.
- nightly: ``churn score --no-reasons`` end to end (contract validation, features, the
  churn, uplift, propensity and value champions, segments, Parquet out, the run log);
  nightly-reasons: the same with reasons (TreeSHAP for every customer at risk), the default.

``--trees`` says how the scoring and nightly stages evaluate the forests, one run each:
"cold" (the default, as a new champion's first job: the forests are built to machine code
during the job, from an empty cache), "cached" (machine code from the cache an earlier job
left) and "walk" (the array walk only, ``CHURN_NATIVE_FORESTS=0``).

The champions are trained once on a 20,000-customer base of the same generator (`churn demo`,
then `churn train propensity|value` and their promotion) in a store of the bench's own.

    python bench/spark.py --customers 1000000 10000000
    python bench/spark.py --customers 1000000 --stages scoring --engines spark,udf
    python bench/spark.py --customers 1000000 --stages nightly --engines duckdb --trees walk,cold
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

# Run as a script, this folder would shadow the `features` package with bench/features.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import duckdb  # noqa: E402
import mlflow.pyfunc  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.pandas.types import from_arrow_schema  # noqa: E402

from features.spark_session import spark_session  # noqa: E402
from features.synthetic import GenerateConfig, as_of_default  # noqa: E402
from serving.batch import CHUNK_ROWS, ParquetDestination, arrow_schema  # noqa: E402
from serving.champion import load_champion  # noqa: E402
from serving.policy import SegmentPolicy  # noqa: E402
from serving.scoring import extra_columns, score_features, tier_cuts_for  # noqa: E402
from serving.spark_batch import scorer  # noqa: E402

HERE = Path(__file__).resolve().parent
WORK = HERE / "data" / "spark"
CHURN = str(Path(sys.executable).with_name("churn"))
TRAIN_CUSTOMERS = 20_000
STAGES = ("features", "scoring", "nightly", "nightly-reasons")
ENGINES = ("duckdb", "spark", "udf", "floor")
SCORING_ONLY = ("udf", "floor")  # sides of the scoring stage only
TREES = ("cold", "cached", "walk")
RUN = {"trees": "cold"}  # how the current stage evaluates the forests


def environment() -> dict[str, str]:
    """The bench store for every child; Spark's UI off."""
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{WORK / 'mlflow.db'}"
    env.setdefault("SPARK_MASTER", "local[2]")
    env["CHURN_NATIVE_FORESTS"] = "0" if RUN["trees"] == "walk" else "1"
    cache = WORK / "forest-cache"
    if RUN["trees"] == "cold":
        shutil.rmtree(cache, ignore_errors=True)
    env["CHURN_FOREST_CACHE"] = str(cache)
    return env


def measured(command: list[str]) -> dict[str, float]:
    """Run ``command``; its wall time and the peak RSS of its process tree."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=environment(), cwd=WORK,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    done.set()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-4000:]}")
    return {"seconds": seconds, "peak_gib": peak[0] / 2**30, "output": output}


def trained_store() -> None:
    """Champions for churn, uplift, propensity and value, trained once."""
    if (WORK / "trained").exists():
        return
    WORK.mkdir(parents=True, exist_ok=True)
    data = WORK / "train" / "data"
    steps = [[CHURN, "demo", "--customers", str(TRAIN_CUSTOMERS), "--out", str(WORK / "train")],
             [CHURN, "train", "propensity", "--data", str(data)],
             [CHURN, "promote", "propensity"],
             [CHURN, "train", "value", "--data", str(data), "--horizon-days", "90"],
             [CHURN, "promote", "value"]]
    for step in steps:
        print("+", " ".join(step[1:3]), flush=True)
        measured(step)
    (WORK / "trained").touch()


def base(customers: int) -> tuple[Path, str]:
    """The generated base of ``customers`` (made once) and its as-of (the data's end)."""
    cfg = GenerateConfig(customers=customers, seed=5)
    data = WORK / f"base-{customers}"
    if not (data / "transactions.parquet").exists():
        print(f"+ generate {customers:,}", flush=True)
        measured([CHURN, "generate", "--customers", str(customers), "--seed", "5",
                  "--out", str(data)])
    return data, as_of_default(cfg).isoformat()


def features(engine: str, data: Path, as_of: str, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    return measured([CHURN, "features", "--engine", engine, "--data", str(data),
                     "--as-of", as_of, "--out", str(out)])


def nightly(engine: str, data: Path, as_of: str, out: Path, reasons: bool
            ) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    return measured([CHURN, "score", "--engine", engine, "--data", str(data), "--as-of", as_of,
                     "--out", str(out), "--allow-data-mismatch",
                     "--reasons" if reasons else "--no-reasons"])


def scoring(engine: str, features_file: Path, out: Path) -> dict[str, float]:
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    result = measured([sys.executable, __file__, "--score-stage", engine, str(features_file),
                       str(out)])
    return {**result, **json.loads(result["output"].strip().splitlines()[-1])}


# The scoring stage's three sides, run in a child process by ``--score-stage``.

def churn_only():
    """The churn champion alone, compiled, as the scoring job loads it."""
    return load_champion(uplift=False, propensity_name=None, value_name=None)


def score_duckdb(features_file: Path, out: Path) -> int:
    loaded, policy = churn_only(), SegmentPolicy()
    started = time.perf_counter()
    cuts = tier_cuts_for(loaded, policy)
    destination, rows = ParquetDestination(out, extra_columns(loaded)), 0
    for batch in pq.ParquetFile(features_file).iter_batches(batch_size=CHUNK_ROWS):
        chunk = batch.to_pandas()
        destination.write(score_features(chunk, np.ones(len(chunk), dtype=bool), loaded, policy,
                                         cuts, explain=False))
        rows += len(chunk)
    destination.commit()
    return rows, time.perf_counter() - started


def score_spark(features_file: Path, out: Path) -> int:
    loaded, policy = churn_only(), SegmentPolicy()
    schema = arrow_schema(extra_columns(loaded))
    spark = spark_session()
    started = time.perf_counter()
    frame = spark.read.parquet(str(features_file)).withColumn("contactable", F.lit(True))
    score = scorer(loaded, policy, tier_cuts_for(loaded, policy), False, schema)
    scores = frame.mapInArrow(score, from_arrow_schema(schema))
    scores.write.mode("overwrite").parquet(str(out))
    return spark.read.parquet(str(out)).count(), time.perf_counter() - started


def score_udf(features_file: Path, out: Path) -> int:
    spark = spark_session()
    started = time.perf_counter()
    udf = mlflow.pyfunc.spark_udf(spark, "models:/churn@champion", result_type="double",
                                  env_manager="local")
    frame = spark.read.parquet(str(features_file))
    inputs = [c for c in frame.columns if c not in ("customer_id", "as_of")]
    scores = frame.select("customer_id", udf(F.struct(*inputs)).alias("churn_probability"))
    scores.write.mode("overwrite").parquet(str(out))
    return spark.read.parquet(str(out)).count(), time.perf_counter() - started


def score_floor(features_file: Path, out: Path) -> int:
    """What no model can take off the Spark side: the rows read and handed to the Python
    workers as Arrow, which only count them (nothing scored, nothing written)."""
    spark = spark_session()
    started = time.perf_counter()

    def count(batches):
        yield pa.RecordBatch.from_pydict({"rows": [sum(b.num_rows for b in batches)]})

    frame = spark.read.parquet(str(features_file)).withColumn("contactable", F.lit(True))
    rows = sum(frame.mapInArrow(count, "rows long").toArrow()["rows"].to_pylist())
    return rows, time.perf_counter() - started


SCORERS = {"duckdb": score_duckdb, "spark": score_spark, "udf": score_udf, "floor": score_floor}


def score_stage(engine: str, features_file: Path, out: Path) -> None:
    os.chdir(WORK)
    rows, seconds = SCORERS[engine](features_file, out)
    print(json.dumps({"rows": rows, "job_seconds": seconds}))


def same_probabilities(a: Path, b: Path) -> float:
    """The largest difference between two scorings' churn probabilities, by customer."""
    return duckdb.sql(f"""SELECT max(abs(x.churn_probability - y.churn_probability))
        FROM '{glob(a)}' x JOIN '{glob(b)}' y USING (customer_id)""").fetchall()[0][0]


def glob(path: Path) -> str:
    return f"{path}/*.parquet" if path.is_dir() else str(path)


def run(customers: int, stages: list[str], engines: list[str], trees: list[str]) -> list[dict]:
    data, as_of = base(customers)
    here = WORK / f"out-{customers}"
    here.mkdir(exist_ok=True)
    rows: list[dict] = []

    def record(stage: str, engine: str, result: dict[str, float]) -> None:
        mode = "" if stage == "features" else RUN["trees"]
        rows.append({"customers": customers, "stage": stage, "engine": engine, "trees": mode,
                     "seconds": result["seconds"], "peak_gib": result["peak_gib"],
                     "job_seconds": result.get("job_seconds")})
        inside = f" (scoring {result['job_seconds']:.1f} s)" if "job_seconds" in result else ""
        print(f"{customers:>11,} {stage:<15} {engine:<7} {mode:<6} {result['seconds']:8.1f} s "
              f"{result['peak_gib']:6.2f} GiB{inside}", flush=True)

    for engine in [e for e in engines if e not in SCORING_ONLY]:
        if "features" in stages:
            record("features", engine,
                   features(engine, data, as_of, here / f"features-{engine}.parquet"))
    for mode in trees:
        RUN["trees"] = mode
        scored(data, as_of, here, stages, engines, rows, record)
    return rows


def scored(data: Path, as_of: str, here: Path, stages: list[str], engines: list[str],
           rows: list[dict], record) -> None:
    """The scoring and nightly stages (into ``rows``), the forests as ``RUN`` says."""
    features_file = here / "features-duckdb.parquet"
    if "scoring" in stages:
        if not features_file.exists():
            features("duckdb", data, as_of, features_file)
        for engine in engines:
            record("scoring", engine,
                   scoring(engine, features_file, here / f"scoring-{engine}.parquet"))
        compared = [e for e in engines if e not in ("duckdb", "floor")]
        for engine in compared if "duckdb" in engines else []:
            gap = same_probabilities(here / "scoring-duckdb.parquet",
                                     here / f"scoring-{engine}.parquet")
            print(f"  largest |churn_probability difference| duckdb vs {engine}: {gap:.3g}")
            next(r for r in reversed(rows) if r["stage"] == "scoring"
                 and r["engine"] == engine)["max_difference"] = gap
    for stage in ("nightly", "nightly-reasons"):
        for engine in [e for e in engines if e not in SCORING_ONLY and stage in stages]:
            out = here / f"scores-{engine}.parquet"
            record(stage, engine, nightly(engine, data, as_of, out, stage == "nightly-reasons"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{platform.platform()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--trees", default="cold", help=f"any of {', '.join(TREES)}")
    parser.add_argument("--score-stage", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score_stage:
        engine, features_file, out = args.score_stage
        score_stage(engine, Path(features_file), Path(out))
        return
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {machine()}; Python "
          f"{platform.python_version()}", flush=True)
    trained_store()
    results = []
    for customers in args.customers:
        results += run(customers, args.stages.split(","), args.engines.split(","),
                       args.trees.split(","))
    (WORK / f"results-{datetime.now(UTC):%Y%m%d-%H%M}.json").write_text(
        json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
