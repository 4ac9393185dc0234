"""The batch scoring job on Spark: the champion applied to every partition of the base.

Features come from the same SQL as on DuckDB (transpiled); each partition's Arrow batches go
through the same ``score_features`` as the DuckDB job's chunks, so every column agrees.
Scores go to a Parquet folder (written beside it, swapped in whole) or to PostgreSQL: each
partition COPYs into a staging table, then one transaction replaces the as-of's rows, as the
DuckDB job's destination does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa

from features.contract import ContractError
from features.spark_job import check_parquet_out, write_parquet_folder
from features.spark_session import spark_session
from features.spark_sql import split_order
from features.spark_tables import load_tables
from features.validation import Progress
from models.drift import Profile
from serving.batch import (
    Destination,
    PostgresDestination,
    ScoreJobConfig,
    ScoreJobResult,
    arrow_schema,
    copy_scores,
    destination_label,
    parse_postgres_url,
    scoring_query,
)
from serving.champion import LoadedModel
from serving.policy import SegmentPolicy
from serving.scoring import extra_columns, score_features, segment_summary, tier_cuts_for

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

PROFILE_SCHEMA = pa.schema([("column", pa.string()), ("counts", pa.list_(pa.float64()))])


def scorer(loaded: LoadedModel, policy: SegmentPolicy, cuts: tuple[float, float],
           explain: bool, schema: pa.Schema, carried: tuple[str, ...] = ()
           ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function ``mapInArrow`` runs on each partition: feature batches in, scores out
    (with the ``carried`` feature columns beside them, at the end of ``schema``)."""
    def score(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            chunk = batch.to_pandas()
            scores = score_features(chunk, chunk["contactable"], loaded, policy, cuts, explain)
            for column in carried:
                scores[column] = chunk[column].to_numpy()
            yield pa.RecordBatch.from_pandas(scores, schema=schema, preserve_index=False)
    return score


def carried_columns(reference: Profile | None, schema: pa.Schema) -> tuple[str, ...]:
    """The features the drift profile counts, carried beside the scores so that the profile
    is counted from the scores alone (not a join of the scores back to the features)."""
    if reference is None:
        return ()
    return tuple(c for c in reference.edges if c not in schema.names)


def profiler(reference: Profile) -> Callable[[Iterator[pa.RecordBatch]],
                                               Iterator[pa.RecordBatch]]:
    """Per partition, the scored base counted into the model's reference bins."""
    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        profile = reference.empty()
        for batch in batches:
            profile.add(batch.to_pandas())
        yield pa.RecordBatch.from_pydict(
            {"column": list(profile.counts),
             "counts": [c.tolist() for c in profile.counts.values()]}, schema=PROFILE_SCHEMA)
    return count


class SparkParquet:
    """Scores written as a folder of Parquet files beside ``path``, swapped in at commit."""

    def __init__(self, path: Path) -> None:
        check_parquet_out(path)
        self.path = path
        self.frame: DataFrame | None = None

    def write(self, frame: DataFrame) -> None:
        self.frame = frame

    def commit(self) -> None:
        write_parquet_folder(self.frame, self.path)

    def discard(self) -> None:
        self.frame = None


class SparkPostgres(PostgresDestination):
    """Each partition COPYs into a staging table of this run's own; commit moves the rows into
    the driver's transaction, which replaces the as-of's rows as on DuckDB."""

    def __init__(self, url: str, as_of: date, extras: dict[str, str] | None = None) -> None:
        super().__init__(url, as_of, extras)
        self.dsn = parse_postgres_url(url)[0]
        self.staging = f"{self.table}_staging_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.dsn) as con:
            con.execute(f"CREATE UNLOGGED TABLE {self.staging} (LIKE {self.table})")

    def write(self, frame: DataFrame) -> None:
        dsn, staging = self.dsn, self.staging

        def copy(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            rows = 0
            with psycopg.connect(dsn) as con:
                for batch in batches:
                    copy_scores(con, staging, batch.to_pandas())
                    rows += batch.num_rows
            yield pa.RecordBatch.from_pydict({"rows": [rows]})

        frame.mapInArrow(copy, "rows long").collect()

    def commit(self) -> None:
        self.con.execute(f"INSERT INTO pg_temp.scores_staging SELECT * FROM {self.staging}")
        self.con.execute(f"DROP TABLE {self.staging}")
        super().commit()

    def discard(self) -> None:
        super().discard()
        with psycopg.connect(self.dsn, autocommit=True) as con:
            con.execute(f"DROP TABLE IF EXISTS {self.staging}")


def spark_destination(out: str, as_of: date, extras: dict[str, str]
                      ) -> SparkParquet | SparkPostgres:
    if out.startswith(("postgresql://", "postgres://")):
        return SparkPostgres(out, as_of, extras)
    return SparkParquet(Path(out))


def _summary(scored: DataFrame) -> tuple[pd.DataFrame, list[float] | None, int]:
    """Per-segment totals, the churn probabilities' percentiles and how many got one."""
    from pyspark.sql import functions as F

    totals = scored.groupBy("segment").agg(
        F.count("*").alias("customers"),
        F.count("churn_probability").alias("scored"),
        F.sum("churn_probability").alias("churn_sum"),
        F.sum("value_at_risk").alias("value_at_risk"),
        F.sum(F.col("contactable").cast("long")).alias("contactable"),
    ).toArrow().to_pandas().set_index("segment").fillna({"churn_sum": 0.0, "value_at_risk": 0.0})
    levels = F.array(*[F.lit(q / 100) for q in range(101)])
    row = scored.where("churn_probability IS NOT NULL").agg(
        F.percentile("churn_probability", levels).alias("q"),
        F.count("*").alias("n")).collect()[0]
    quantiles = [float(v) for v in row["q"]] if row["n"] else None
    return segment_summary([totals]), quantiles, int(row["n"])


def _profile(scored: DataFrame, reference: Profile | None) -> Profile | None:
    if reference is None:
        return None
    from pyspark.sql.pandas.types import from_arrow_schema

    base = scored.where("churn_probability IS NOT NULL")
    parts = base.mapInArrow(profiler(reference), from_arrow_schema(PROFILE_SCHEMA))
    profile = reference.empty()
    for part in parts.toArrow().to_pylist():
        counts = np.asarray(part["counts"], dtype=float)
        previous = profile.counts.get(part["column"])
        profile.counts[part["column"]] = counts if previous is None else previous + counts
    return profile


def run_score_spark(cfg: ScoreJobConfig, loaded: LoadedModel, progress: Progress | None = None,
                    on_rows: Callable[[int, int], None] | None = None,
                    on_commit: Callable[[Destination, ScoreJobResult], None] | None = None,
                    on_start: Callable[[], None] | None = None) -> ScoreJobResult:
    """``serving.batch.run_score`` on Spark, with the same checks, columns and result."""
    from pyspark import StorageLevel
    from pyspark.sql.pandas.types import from_arrow_schema

    started = time.perf_counter()
    spark = spark_session()
    tables = load_tables(spark, cfg.data, cfg.on_bad_rows, progress=progress)
    stale = tables.check_as_of(cfg.as_of)
    # Unsorted: the scores are sorted at the end.
    unsorted, _ = split_order(scoring_query(tables.relations, cfg.as_of))
    features = spark.sql(unsorted).persist(StorageLevel.MEMORY_AND_DISK)
    total = features.count()
    if total == 0:
        raise ContractError(f"no customer to score as of {cfg.as_of} (none with profiling "
                            f"consent has a row before it); nothing was written")
    extras = extra_columns(loaded)
    schema = arrow_schema(extras)
    destination = spark_destination(cfg.out, cfg.as_of, extras)
    try:
        if on_start:
            on_start()
        reference = loaded.model.reference
        carried = carried_columns(reference, schema)
        wide = pa.schema([*schema, *[pa.field(c, pa.float64()) for c in carried]])
        scored = features.mapInArrow(
            scorer(loaded, cfg.policy, tier_cuts_for(loaded, cfg.policy), cfg.reasons, wide,
                   carried), from_arrow_schema(wide)).persist(StorageLevel.MEMORY_AND_DISK)
        destination.write(scored.select(*schema.names).orderBy("customer_id"))
        summary, quantiles, scored_rows = _summary(scored)
        features.unpersist()  # the scores hold all that is read from here on
        result = ScoreJobResult(total, destination_label(cfg.out), summary, 0.0,
                                [stale] if stale else [], _profile(scored, reference),
                                quantiles, (tables.start, tables.end), scored_rows)
        if on_rows:
            on_rows(total, total)
        if on_commit:
            on_commit(destination, result)
        destination.commit()
    except BaseException:
        destination.discard()
        raise
    result.seconds = time.perf_counter() - started
    return result
