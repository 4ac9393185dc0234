"""The features job on Spark: contract tables -> validated views -> a Parquet folder."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from features.contract import ContractError
from features.errors import setting
from features.output import output_path
from features.point_in_time import feature_query
from features.registry import FEATURES
from features.spark_session import spark_session
from features.spark_sql import to_spark
from features.spark_tables import validated_relations
from features.validation import Progress

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from features.job import FeaturesJobConfig, FeaturesJobResult


def write_parquet_folder(frame: DataFrame, out: Path) -> int:
    """Write ``frame`` as a folder of Parquet files at ``out``, atomically: into a temporary
    folder beside it, then swapped in (an earlier output, file or folder, goes only once the
    new one is complete). Returns the rows written."""
    out = output_path(out).absolute()  # Spark takes a file URI, which must be absolute
    out.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.{token}.tmp")
    try:
        frame.write.parquet(tmp.as_uri())
        rows = frame.sparkSession.read.parquet(tmp.as_uri()).count()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.{token}.old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink(missing_ok=True)
    return rows


def check_parquet_out(out: Path) -> None:
    if out.suffix != ".parquet":
        raise ContractError(f"{setting('out')} {out}: the Spark engine writes a folder of Parquet "
                            f"files; give a name ending in .parquet")


def run_features_spark(cfg: FeaturesJobConfig, progress: Progress | None = None
                       ) -> FeaturesJobResult:
    """``features.job.run_features`` on Spark: the same validation and features, written as
    a Parquet folder (one file per partition) that replaces an earlier output only whole."""
    from features.job import FeaturesJobResult

    started = time.perf_counter()
    check_parquet_out(cfg.out)
    spark = spark_session()
    rejects = cfg.rejects or cfg.out.parent / f"{cfg.out.stem}.rejects"
    relations, reports, _ = validated_relations(spark, cfg.data, cfg.on_bad_rows, rejects,
                                                progress)
    frame = spark.sql(to_spark(feature_query(relations, cfg.as_of)))
    rows = write_parquet_folder(frame, cfg.out)
    return FeaturesJobResult(rows, len(FEATURES), time.perf_counter() - started, reports)
