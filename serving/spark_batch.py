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
import pyarrow.compute as pc

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
from serving.scoring import (
    extra_columns,
    score_features,
    segment_summary,
    segment_totals,
    tier_cuts_for,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


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


# What each partition hands the driver in the one pass over the scores: a segment's totals
# (``TOTALS``, in that order), the churn probabilities one Arrow batch scored, or a profile
# column's counts.
SUMMARY_SCHEMA = pa.schema([("kind", pa.string()), ("key", pa.string()),
                            ("values", pa.list_(pa.float64()))])
TOTALS = ["customers", "scored", "churn_sum", "value_at_risk", "contactable"]


def summary_columns(reference: Profile | None, columns: list[str]) -> list[str]:
    """The score columns ``summariser`` reads (of ``columns``): handing Python the others,
    the reasons above all (an array of structs), cost the JVM 34 s of CPU per million rows,
    more than the scoring."""
    wanted = ("customer_id", "segment", "churn_probability", "value_at_risk", "contactable",
              *(reference.edges if reference else ()))
    return [c for c in dict.fromkeys(wanted) if c in columns]


def summariser(reference: Profile | None) -> Callable[[Iterator[pa.RecordBatch]],
                                                        Iterator[pa.RecordBatch]]:
    """Per partition, what the job's result needs from the scores: the segment totals, the
    churn probabilities (for their percentiles) and the scored base counted into the
    model's reference bins, all from one read."""
    def summarise(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        totals, probabilities = [], []
        profile = reference.empty() if reference else None
        for batch in batches:
            scores = batch.to_pandas()
            totals.append(segment_totals(scores))
            base = scores[scores["churn_probability"].notna()]
            probabilities.append(base["churn_probability"].to_numpy(dtype=float))
            if profile is not None:
                profile.add(base)
        summed = pd.concat(totals).groupby(level=0).sum() if totals else pd.DataFrame()
        rows = [("totals", segment, row[TOTALS].to_numpy(dtype=float))
                for segment, row in summed.iterrows()]
        rows += [("probabilities", "churn_probability", part) for part in probabilities]
        rows += [("profile", column, counts)
                 for column, counts in (profile.counts.items() if profile else [])]
        if rows:
            yield summary_batch(rows)
    return summarise


def summary_batch(rows: list[tuple[str, str, np.ndarray]]) -> pa.RecordBatch:
    """``SUMMARY_SCHEMA``'s rows, their values handed to Arrow as arrays (not Python lists:
    a partition's probabilities run to millions)."""
    kinds, keys, values = zip(*rows, strict=True)
    offsets = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
    flat = np.concatenate([np.asarray(v, dtype=float) for v in values])
    return pa.RecordBatch.from_arrays(
        [pa.array(kinds, pa.string()), pa.array(keys, pa.string()),
         pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))], schema=SUMMARY_SCHEMA)


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


def _summary(scored: DataFrame, reference: Profile | None
             ) -> tuple[pd.DataFrame, list[float] | None, int, Profile | None]:
    """Per-segment totals, the churn probabilities' percentiles, how many got one and the
    drift profile, from one pass over the scores (each partition's part summed here)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    read = summary_columns(reference, scored.columns)
    parts = scored.select(*read).mapInArrow(summariser(reference),
                                            from_arrow_schema(SUMMARY_SCHEMA)).toArrow()

    def of_kind(kind: str) -> pa.Table:
        return parts.filter(pc.equal(parts["kind"], kind))

    totals = of_kind("totals")
    summed = pd.DataFrame(totals["values"].to_pylist(), columns=TOTALS,
                          index=pd.Index(totals["key"].to_pylist(), name="segment"))
    summed = summed.astype({"customers": "int64", "scored": "int64", "contactable": "int64"})
    probabilities = pc.list_flatten(of_kind("probabilities")["values"]).to_numpy()
    profile = reference.empty() if reference else None
    for column, values in zip(*of_kind("profile").select(["key", "values"]).to_pydict().values(),
                              strict=True):
        counts = np.asarray(values, dtype=float)
        previous = profile.counts.get(column)
        profile.counts[column] = counts if previous is None else previous + counts
    quantiles = (np.percentile(probabilities, np.arange(101)).tolist() if len(probabilities)
                 else None)
    return segment_summary([summed]), quantiles, len(probabilities), profile


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
        summary, quantiles, scored_rows, profile = _summary(scored, reference)
        features.unpersist()  # the scores hold all that is read from here on
        result = ScoreJobResult(total, destination_label(cfg.out), summary, 0.0,
                                [stale] if stale else [], profile, quantiles,
                                (tables.start, tables.end), scored_rows)
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
