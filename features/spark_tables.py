"""Contract tables read and validated on Spark, by the same rules and with the same messages.

The files are found as on DuckDB (``features.sources``); each value is cast by the same select
list (``features.validation.check_items``, transpiled); the rules that look at one row (parse,
pandera's checks) run on every partition through ``mapInArrow``, those that compare rows
(unique keys, repeated rows) as window functions over the whole table. As on DuckDB, one
aggregate pass screens the table first; only a table it flags gets those exact checks.
A row is named by its file and its position in it, as on DuckDB: Spark's row ids grow with
the file's order within each partition, and partitions follow the file's splits in order.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa

from features.contract import TABLES, BadRowsError, ContractError, TableSpec
from features.errors import setting
from features.labels import data_span
from features.sources import TableSource, check_columns, empty_relation_sql, find_tables
from features.spark_sql import to_spark
from features.tables import (
    DEFAULT_REJECTS,
    LoadedTables,
    refuse_stray,
    reject_stray,
    stray_orders,
    stray_rows,
)
from features.validation import (
    FILE,
    RAW,
    REPEATED_ROW,
    OnBadRows,
    Progress,
    Rendered,
    Screen,
    TableReport,
    check_items,
    screen_aggregates,
    shown_value,
    unknown_event_types,
    value_failures,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

ROW_ID = "__id"
# Spark's monotonically_increasing_id keeps the partition in the bits above these.
PARTITION_SHIFT = 33
FAILURE_SCHEMA = pa.schema([(ROW_ID, pa.int64()), (FILE, pa.string()), ("column", pa.string()),
                            ("rule", pa.string()), ("shown", pa.string()),
                            ("priority", pa.int32())])


class SparkResult:
    """A Spark query's rows, handed over the way a DuckDB relation hands them."""

    def __init__(self, frame: DataFrame) -> None:
        self.frame = frame

    def df(self) -> pd.DataFrame:
        return self.frame.toArrow().to_pandas()

    def fetchall(self) -> list[tuple]:
        return [tuple(row.values()) for row in self.frame.toArrow().to_pylist()]


class SparkConnection:
    """What the jobs use of a DuckDB connection (``sql(query).df()``, ``.fetchall()``) on a
    Spark session: the query, written for DuckDB, runs transpiled."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def sql(self, query: str) -> SparkResult:
        return SparkResult(self.spark.sql(to_spark(query)))


def _spark_error_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _read_raw(spark: SparkSession, source: TableSource) -> DataFrame:
    """The files as they are (CSV as text, in the contract's dialect), with each row's file
    and an id that grows with its position in the file."""
    from pyspark.sql import functions as F

    frames = []
    for path in source.files:
        if source.format == "csv":
            frame = spark.read.options(header=True, inferSchema=False, sep=",", quote='"',
                                       escape='"', mode="FAILFAST", encoding="UTF-8").csv(str(path))
        else:
            frame = spark.read.parquet(str(path))
        frames.append(frame.withColumn(FILE, F.lit(str(path))))
    raw = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    return raw.withColumn(ROW_ID, F.monotonically_increasing_id())


def _value_check(spec: TableSpec):
    """The per-partition check: each row's values against the parse and schema rules."""
    def check(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            df = batch.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
            found = pd.DataFrame(value_failures(df, spec),
                                 columns=["pos", "column", "rule", "value"])
            found = found.drop_duplicates(subset=["pos", "column"], keep="first")
            positions = found["pos"].to_numpy(dtype=int)
            yield pa.RecordBatch.from_pydict({
                ROW_ID: df[ROW_ID].to_numpy()[positions].astype("int64"),
                FILE: df[FILE].to_numpy()[positions].astype(object),
                "column": found["column"].astype(object).to_numpy(),
                "rule": found["rule"].astype(object).to_numpy(),
                "shown": [shown_value(v) for v in found["value"]],
                "priority": [0] * len(found)}, schema=FAILURE_SCHEMA)
    return check


def _key_failures(typed: DataFrame, spec: TableSpec) -> list[DataFrame]:
    """Rows repeating an earlier row's key (or, where the contract asks, all its columns);
    the value shown is the key (or order_id) as text, made a repr on the driver."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    found = []
    if spec.unique_key:
        keys = [F.col(k) for k in spec.unique_key]
        complete = reduce(lambda a, b: a & b, [k.isNotNull() for k in keys])
        later = typed.where(complete).withColumn(
            "_n", F.row_number().over(Window.partitionBy(*keys).orderBy(ROW_ID)))
        found.append(later.where("_n > 1").select(
            ROW_ID, FILE, F.lit(spec.unique_key[-1]).alias("column"),
            F.lit(f"unique ({', '.join(spec.unique_key)})").alias("rule"),
            F.concat_ws(" / ", *[k.cast("string") for k in keys]).alias("shown"),
            F.lit(1).alias("priority")))
    if spec.distinct_rows:
        key = spec.columns[1]
        later = typed.withColumn(
            "_n", F.row_number().over(Window.partitionBy(*spec.columns).orderBy(ROW_ID)))
        found.append(later.where("_n > 1").select(
            ROW_ID, FILE, F.lit(key).alias("column"), F.lit(REPEATED_ROW).alias("rule"),
            F.col(key).cast("string").alias("shown"), F.lit(2).alias("priority")))
    return found


@dataclass
class _Positions:
    """Turns row ids into 'row N' (or 'FILE row N') from per-partition counts per file."""

    starts: dict[tuple[str, int], tuple[int, int]]  # (file, partition) -> (rows before, first id)
    multi: bool

    @classmethod
    def of(cls, typed: DataFrame, multi: bool) -> _Positions:
        from pyspark.sql import functions as F

        parts = typed.groupBy(FILE, F.shiftright(ROW_ID, PARTITION_SHIFT).alias("part")).agg(
            F.count("*").alias("rows"), F.min(ROW_ID).alias("first")).toArrow().to_pylist()
        starts, before = {}, {}
        for part in sorted(parts, key=lambda p: (p[FILE], p["part"])):
            done = before.get(part[FILE], 0)
            starts[(part[FILE], part["part"])] = (done, part["first"])
            before[part[FILE]] = done + part["rows"]
        return cls(starts, multi)

    def label(self, file: str, row_id: int) -> str:
        done, first = self.starts[(file, row_id >> PARTITION_SHIFT)]
        row = done + row_id - first + 1
        return f"{Path(file).name} row {row}" if self.multi else f"row {row}"


def _report(spec: TableSpec, rows: int, failures: DataFrame,
            positions: _Positions) -> TableReport:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    report = TableReport(spec.name, rows=rows)
    report.bad_rows = failures.select(ROW_ID).distinct().count()
    if not report.bad_rows:
        return report
    by_problem = Window.partitionBy("column", "rule")
    examples = failures.withColumn("_n", F.row_number().over(by_problem.orderBy(ROW_ID))) \
        .withColumn("_count", F.count("*").over(by_problem)) \
        .withColumn("_first", F.min(ROW_ID).over(by_problem)) \
        .where("_n <= 3").orderBy("_first", "priority", "_n").toArrow().to_pylist()
    for ex in examples:
        shown = Rendered(ex["shown"]) if ex["priority"] == 0 else (
            Rendered("null") if ex["shown"] is None else ex["shown"])
        report.add(ex["column"], ex["rule"], positions.label(ex[FILE], ex[ROW_ID]), shown,
                   count=ex["_count"] if ex["_n"] == 1 else 0)
    return report


def _write_rejects(typed: DataFrame, failures: DataFrame, spec: TableSpec,
                   positions: _Positions, path: Path) -> None:
    """The bad rows, their raw text where a value did not parse, where they were and why."""
    from pyspark.sql import functions as F

    reasons = failures.groupBy(ROW_ID).agg(F.sort_array(F.collect_list(F.struct(
        "priority", "column", "rule"))).alias("_why"))
    bad = typed.join(reasons, ROW_ID).orderBy(ROW_ID).toArrow().to_pandas()
    rows = bad[spec.columns].astype("string")
    for raw_column in (c for c in bad.columns if c.startswith(RAW)):
        raw = bad[raw_column].dropna()
        rows.loc[raw.index, raw_column[len(RAW):]] = raw.astype("string")
    rows["_where"] = [positions.label(f, i) for f, i in zip(bad[FILE], bad[ROW_ID], strict=True)]
    rows["_reason"] = ["; ".join(f"column '{w['column']}': {w['rule']}" for w in why)
                       for why in bad["_why"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, index=False)


@dataclass
class SparkTable:
    """One validated table: a temporary view of its clean typed rows, and the report."""

    view: str
    report: TableReport


def validate_table(spark: SparkSession, source: TableSource, on_bad_rows: OnBadRows,
                   rejects_dir: Path, view: str, progress: Progress | None = None
                   ) -> SparkTable:
    """Check every row of one table against the contract on Spark."""
    from pyspark import StorageLevel
    from pyspark.errors import PySparkException
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    spec = source.spec
    where = source.files[0] if len(source.files) == 1 else source.files[0].parent
    try:
        raw = _read_raw(spark, source)
        present = check_columns(source, [c for c in raw.columns if c not in (FILE, ROW_ID)])
        raw.createOrReplaceTempView(f"{view}_raw")
        items = ", ".join([*check_items(spec, present), f'"{FILE}"', f'"{ROW_ID}"'])
        typed = spark.sql(to_spark(f"SELECT {items} FROM {view}_raw"))
        typed.createOrReplaceTempView(f"{view}_typed")
        screen = _screen(spark, spec, present, f"{view}_typed")
        if screen is None or not screen.clean:  # the exact checks read it several times
            typed = typed.persist(StorageLevel.MEMORY_AND_DISK)
        rows = typed.count() if screen is None else screen.rows
    except PySparkException as err:
        raise ContractError(f"{spec.name}: cannot read {where}: {_spark_error_line(err)}") \
            from None
    if screen is not None and screen.clean:
        report, failures, positions = TableReport(spec.name, rows=rows), None, None
        typed = typed.select(*spec.columns).persist(StorageLevel.MEMORY_AND_DISK)
        typed.count()  # held for the feature queries, which read it several times
    else:
        values = typed.mapInArrow(_value_check(spec), _spark_schema(FAILURE_SCHEMA))
        found = reduce(lambda a, b: a.unionByName(b), [values, *_key_failures(typed, spec)])
        first = F.row_number().over(Window.partitionBy(ROW_ID, "column").orderBy("priority"))
        failures = found.withColumn("_k", first).where("_k = 1").drop("_k").persist(
            StorageLevel.MEMORY_AND_DISK)
        positions = _Positions.of(typed, len(source.files) > 1)
        report = _report(spec, rows, failures, positions)
    if progress is not None:
        progress(spec.name, rows)
    clean = typed
    if report.bad_rows:
        if on_bad_rows is OnBadRows.stop:
            raise BadRowsError(report.describe())
        report.rejects_file = rejects_dir / f"{spec.name}.rejects.csv"
        _write_rejects(typed, failures, spec, positions, report.rejects_file)
        clean = typed.join(failures.select(ROW_ID), ROW_ID, "left_anti")
    clean.select(*spec.columns).createOrReplaceTempView(view)
    if spec.name == "events":
        report.unknown_event_types = unknown_event_types(SparkConnection(spark), view)
    return SparkTable(view, report)


def _screen(spark: SparkSession, spec: TableSpec, present: list[str], typed: str
            ) -> Screen | None:
    """The screen of the typed rows (one aggregate pass, as on DuckDB): a table it flags
    nothing in would pass the exact checks, which then need not run. None where a rule has
    no screen."""
    aggregates = screen_aggregates(spec, present)
    if aggregates is None:
        return None
    return Screen.of(spec, tuple(spark.sql(
        to_spark(f"SELECT {', '.join(aggregates)} FROM {typed}")).collect()[0]))


def _spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def validate_tables(spark: SparkSession, sources: dict[str, TableSource],
                    on_bad_rows: OnBadRows, rejects_dir: Path, prefix: str,
                    progress: Progress | None = None) -> dict[str, SparkTable]:
    """Validate every table; report the problems of all tables at once (as on DuckDB)."""
    validated, errors, bad_rows = {}, [], False
    for name, source in sources.items():
        try:
            validated[name] = validate_table(spark, source, on_bad_rows, rejects_dir,
                                             f"{prefix}_{name}", progress)
        except ContractError as err:
            errors.append(str(err))
            bad_rows = bad_rows or isinstance(err, BadRowsError)
    if errors:
        hint = "Nothing was written."
        if bad_rows:
            hint += (f" Fix the rows, or rerun with {setting('on_bad_rows')} quarantine to set "
                     "bad rows aside and go on.")
        raise ContractError("\n".join([*errors, hint]))
    return validated


def validated_relations(spark: SparkSession, data_dir: Path,
                        on_bad_rows: OnBadRows = OnBadRows.stop, rejects: Path = DEFAULT_REJECTS,
                        progress: Progress | None = None, only: tuple[str, ...] | None = None
                        ) -> tuple[dict[str, str], list[TableReport], frozenset[str]]:
    """Every contract table validated into a temporary view (absent ones, and those left out
    of ``only``, empty): the views by table, the reports, and the tables the folder holds."""
    prefix = f"contract_{uuid.uuid4().hex[:8]}"
    sources = {name: source for name, source in find_tables(data_dir).items()
               if only is None or name in only}
    validated = validate_tables(spark, sources, on_bad_rows, rejects, prefix, progress)
    relations = {}
    for name, spec in TABLES.items():
        if name in validated:
            relations[name] = validated[name].view
        else:
            relations[name] = f"{prefix}_{name}"
            spark.sql(to_spark(empty_relation_sql(spec))).createOrReplaceTempView(
                relations[name])
    return relations, [t.report for t in validated.values()], frozenset(validated)


def load_tables(spark: SparkSession, data_dir: Path, on_bad_rows: OnBadRows = OnBadRows.stop,
                rejects: Path = DEFAULT_REJECTS, progress: Progress | None = None,
                only: tuple[str, ...] | None = None) -> LoadedTables:
    """``features.tables.load_tables`` on Spark: the tables validated into temporary views,
    stray orders set aside, the data's span measured."""
    relations, reports, present = validated_relations(spark, data_dir, on_bad_rows, rejects,
                                                      progress, only)
    con = SparkConnection(spark)
    stray = stray_orders(con, relations["transactions"])
    if stray is not None:
        refuse_stray(stray, on_bad_rows)
        condition = to_spark(stray_rows(stray))
        table = spark.table(relations["transactions"])
        reject_stray(table.where(condition).toArrow().to_pandas(), stray, rejects, reports)
        relations["transactions"] = f"{relations['transactions']}_kept"
        table.where(f"NOT ({condition})").createOrReplaceTempView(relations["transactions"])
    start, end = data_span(con, relations["transactions"])
    return LoadedTables(relations, reports, end, start, present)
