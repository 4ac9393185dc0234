"""The batch scoring job: contract tables -> features -> scores and segments -> Parquet or SQL.

Atomic: Parquet goes to a temporary file renamed at the end; PostgreSQL rows go to a
temporary table and replace the as-of's rows in one transaction. Idempotent: re-running an
as-of replaces its rows, never adds to them.
"""

from __future__ import annotations

import fcntl
import glob
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import duckdb
import numpy as np
import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import ContractError
from features.engines import Engine
from features.errors import setting
from features.output import output_path, with_default_permissions
from features.point_in_time import connect, copy_features, feature_query
from features.tables import load_tables
from features.validation import OnBadRows, Progress
from models.drift import Profile
from serving.champion import LoadedModel
from serving.policy import SegmentPolicy
from serving.scoring import (
    extra_columns,
    score_features,
    segment_summary,
    segment_totals,
    tier_cuts_for,
)

CHUNK_ROWS = 200_000
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
PG_COLUMNS = {
    "customer_id": "text NOT NULL", "as_of": "date NOT NULL",
    "churn_probability": "double precision", "churn_percentile": "double precision",
    "risk_band": "text", "value_at_risk": "double precision",
    "uplift_spend": "double precision", "uplift_spend_low": "double precision",
    "uplift_spend_high": "double precision", "uplift_conversion": "double precision",
    "uplift_order_value": "double precision", "segment": "text NOT NULL",
    "spend_tier": "text NOT NULL", "contactable": "boolean NOT NULL", "reasons": "jsonb",
    "model_versions": "text NOT NULL",
}
# One row per scoring run in ``<table>_runs``, beside the scores (the MLflow run holds more).
RUN_COLUMNS = {
    "run_id": "text", "as_of": "date NOT NULL", "recorded_at": "timestamptz DEFAULT now()",
    "data_source": "text", "data_start": "date", "data_end": "date",
    "model_versions": "text NOT NULL", "rows": "bigint NOT NULL", "scored": "bigint",
    "segments": "jsonb", "churn_quantiles": "jsonb",
}
REASON = pa.struct([("feature", pa.string()), ("label", pa.string()), ("value", pa.float64()),
                    ("unit", pa.string()), ("typical", pa.float64()),
                    ("contribution", pa.float64()), ("text", pa.string())])
ARROW_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("as_of", pa.date32()), ("churn_probability", pa.float64()),
    ("churn_percentile", pa.float64()), ("risk_band", pa.string()),
    ("value_at_risk", pa.float64()), ("uplift_spend", pa.float64()),
    ("uplift_spend_low", pa.float64()), ("uplift_spend_high", pa.float64()),
    ("uplift_conversion", pa.float64()), ("uplift_order_value", pa.float64()),
    ("segment", pa.string()),
    ("spend_tier", pa.string()), ("contactable", pa.bool_()), ("reasons", pa.list_(REASON)),
    ("model_versions", pa.string()),
])


@dataclass(frozen=True)
class ScoreJobConfig:
    """Everything the scoring job needs, built from CLI flags or MLproject parameters."""

    data: Path
    as_of: date
    out: str
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    on_bad_rows: OnBadRows = OnBadRows.stop
    memory_limit: str | None = "4GB"
    reasons: bool = True
    model_name: str = "churn"
    uplift_model_name: str = "uplift"
    uplift: bool = True
    allow_data_mismatch: bool = False
    # Where the run is recorded: None for the tracking store, an MLflow store URI for
    # another one, "off" for nowhere.
    run_log: str | None = None
    engine: Engine = Engine.duckdb


@dataclass
class ScoreJobResult:
    """How many customers were scored, where to, and the segment summary."""

    rows: int
    destination: str
    summary: pd.DataFrame
    seconds: float
    warnings: list[str] = field(default_factory=list)
    # The scored base counted into the model's reference bins (None for a model without one),
    # the churn probabilities' 0th..100th percentiles, and the data's span [start, end).
    profile: Profile | None = None
    quantiles: list[float] | None = None
    data_span: tuple[date, date] | None = None
    scored: int = 0
    # The scoring run log's MLflow run, once recorded (``operations.runlog``).
    run_id: str | None = None


def scoring_query(relations: dict[str, str], as_of: date) -> str:
    """The features of everyone to score, with ``contactable`` (a customer with no consent
    row is contactable)."""
    return feature_query(relations, as_of, contactable=True)


class Destination(Protocol):
    """Where scored chunks go; ``commit`` makes them visible at once, ``discard`` drops them."""

    def write(self, chunk: pd.DataFrame) -> None: ...

    def commit(self) -> None: ...

    def discard(self) -> None: ...


PG_KINDS = {"double": "double precision", "date": "date"}
ARROW_KINDS = {"double": pa.float64(), "date": pa.date32()}
# Columns the propensity and value champions add (``serving.scoring.extra_columns``).
OPTIONAL_COLUMN = re.compile(r"(purchase_probability|predicted_orders|predicted_spend)_\d+d|"
                             r"p_alive|next_order_expected_by")


def arrow_schema(extras: dict[str, str]) -> pa.Schema:
    """The scores' Arrow schema: the fixed columns with ``extras`` after value_at_risk."""
    fields = list(ARROW_SCHEMA)
    at = ARROW_SCHEMA.get_field_index("value_at_risk") + 1
    added = [pa.field(name, ARROW_KINDS[kind]) for name, kind in extras.items()]
    return pa.schema([*fields[:at], *added, *fields[at:]])


class ParquetDestination:
    """Rows go to a temporary file of this run's own, renamed over ``path`` at the end.

    One run at a time writes a given file: a second is refused while the first holds the
    lock file beside it (an advisory ``flock``, let go by the system if the run dies).
    Holding the lock, a run first removes temporary files that killed runs left behind.
    """

    def __init__(self, path: Path, extras: dict[str, str] | None = None) -> None:
        check_destination(str(path))
        path = output_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = _hold_lock(path.with_name(f".{path.name}.lock"), path)
        for left in path.parent.glob(f".{glob.escape(path.name)}.*tmp"):
            left.unlink(missing_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(handle)
        self.tmp = Path(name)
        with_default_permissions(self.tmp)
        self.schema = arrow_schema(extras or {})
        self.writer = pq.ParquetWriter(self.tmp, self.schema)

    def write(self, chunk: pd.DataFrame) -> None:
        self.writer.write_table(pa.Table.from_pandas(chunk, self.schema, preserve_index=False))

    def commit(self) -> None:
        self.writer.close()
        self.tmp.replace(self.path)
        self.lock.close()

    def discard(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
        self.lock.close()


def _hold_lock(lock: Path, out: Path) -> IO[str]:
    """An exclusive lock on ``lock`` for as long as the returned file stays open."""
    handle = lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ContractError(f"{setting('out')} {out}: another scoring run ({holder}) is writing "
                            "this file; wait for it to finish or write elsewhere") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def safe_url(url: str) -> str:
    """``url`` without its query and with any password masked, for messages."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    login = f"{user}:***@" if parts.password is not None else (f"{user}@" if user else "")
    return f"{parts.scheme}://{login}{host}{parts.path}"


def destination_label(out: str) -> str:
    """Where scores go, as printed and recorded: an absolute Parquet path, or the PostgreSQL
    URL with its table and without a password (PGPASSWORD supplies it when read back)."""
    if out.startswith(("postgresql://", "postgres://")):
        table = parse_qs(urlsplit(out).query).get("table", [""])[0]
        return f"{safe_url(out).replace(':***@', '@')}?table={table}"
    return str(Path(out).resolve())


def parse_postgres_url(url: str) -> tuple[str, str]:
    """``postgresql://HOST/DB?table=T`` -> (connection URL without ``table``, table)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    tables = query.pop("table", [])
    if len(tables) != 1 or not TABLE_NAME.match(tables[0]):
        raise ContractError(f"{setting('out')} {safe_url(url)}: add ?table=NAME (letters, digits, "
                            "_; optionally schema.name)")
    if tables[0] != tables[0].lower():
        raise ContractError(f"{setting('out')} {safe_url(url)}: table={tables[0]} has capitals, "
                            f"which PostgreSQL folds to lowercase in plain SQL; use "
                            f"table={tables[0].lower()}")
    clean = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return clean, tables[0]


class PostgresDestination:
    """Rows COPY into a temporary table; one transaction swaps them in for the as-of."""

    def __init__(self, url: str, as_of: date, extras: dict[str, str] | None = None) -> None:
        dsn, self.table = parse_postgres_url(url)
        self.extras = {name: PG_KINDS[kind] for name, kind in (extras or {}).items()}
        try:
            # Waiting on another run's lock is bounded; a stuck one ends this run with a line.
            self.con = psycopg.connect(dsn, connect_timeout=10,
                                       options="-c lock_timeout=300s")
        except psycopg.OperationalError as err:
            detail = str(err).strip().splitlines()[0]
            password = urlsplit(url).password
            if password:
                detail = detail.replace(password, "***")
            raise ContractError(f"{setting('out')} {safe_url(url)}: cannot connect to PostgreSQL: "
                                f"{detail}") from None
        self.as_of = as_of
        names = list(PG_COLUMNS)
        at = names.index("value_at_risk") + 1
        ordered = {**{n: PG_COLUMNS[n] for n in names[:at]}, **self.extras,
                   **{n: PG_COLUMNS[n] for n in names[at:]}}
        columns = ", ".join(f"{name} {kind}" for name, kind in ordered.items())
        if "." not in self.table:
            # Qualified, so no temporary table of the same name can stand in for it.
            schema = self.con.execute("SELECT current_schema()").fetchone()[0]
            self.table = f"{schema}.{self.table}"
        with self.con.transaction():
            # Two runs creating the table at once would collide inside PostgreSQL's catalog.
            self.con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns}, "
                             f"PRIMARY KEY (customer_id, as_of))")
        self._check_columns()
        for name, kind in self.extras.items():
            self.con.execute(f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {name} {kind}")
        self.con.commit()
        # Everything below runs in one open transaction until commit (or a lost connection).
        self.con.execute(f"CREATE TEMP TABLE scores_staging (LIKE {self.table}) "
                         f"ON COMMIT DROP")

    def _check_columns(self) -> None:
        """Refuse a table made for other columns (an older release's, say), naming them."""
        schema, _, name = self.table.rpartition(".")  # qualified by now
        found = [row[0] for row in self.con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = coalesce(nullif(%s, ''), current_schema()) "
            "ORDER BY ordinal_position", (name, schema)).fetchall()]
        fixed = [c for c in found if not OPTIONAL_COLUMN.fullmatch(c)]
        if fixed != list(PG_COLUMNS):
            self.con.close()
            missing = [c for c in PG_COLUMNS if c not in found]
            extra = [c for c in fixed if c not in PG_COLUMNS]
            raise ContractError(
                f"{setting('out')}: table {self.table} has other columns than scores need (missing "
                f"{missing or 'none'}, unexpected {extra or 'none'}; an older release's table?): "
                f"write to a new one with ?table=NAME, or rename or drop it")

    def write(self, chunk: pd.DataFrame) -> None:
        copy_scores(self.con, "pg_temp.scores_staging", chunk)

    def record_run(self, row: dict[str, object]) -> None:
        """Add ``row`` to the ``<table>_runs`` log, in the transaction that swaps the scores."""
        log = f"{self.table}_runs"
        columns = ", ".join(f"{name} {kind}" for name, kind in RUN_COLUMNS.items())
        with self.con.transaction():
            self.con.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (log,))
            self.con.execute(f"CREATE TABLE IF NOT EXISTS {log} ({columns})")
            names = [c for c in RUN_COLUMNS if c in row]
            self.con.execute(
                f"INSERT INTO {log} ({', '.join(names)}) VALUES "
                f"({', '.join(['%s'] * len(names))})",
                [orjson.dumps(row[c]).decode() if RUN_COLUMNS[c] == "jsonb" else row[c]
                 for c in names])

    def commit(self) -> None:
        # Runs that finish together take turns: each replaces the as-of's rows whole.
        self.con.execute(f"LOCK TABLE {self.table} IN SHARE ROW EXCLUSIVE MODE")
        self.con.execute(f"DELETE FROM {self.table} WHERE as_of = %s", (self.as_of,))
        self.con.execute(f"INSERT INTO {self.table} SELECT * FROM pg_temp.scores_staging")
        self.con.commit()
        self.con.close()

    def discard(self) -> None:
        self.con.rollback()
        self.con.close()


def copy_scores(con: psycopg.Connection, table: str, chunk: pd.DataFrame) -> None:
    """COPY a chunk of scores into ``table`` (reasons as JSON)."""
    names = ", ".join(chunk.columns)
    chunk = chunk.assign(reasons=[None if r is None else orjson.dumps(
        list(r) if isinstance(r, np.ndarray) else r).decode() for r in chunk["reasons"]])
    # CSV: an empty unquoted field is NULL, so NaN and missing reasons arrive as NULL.
    text = chunk.to_csv(index=False, header=False, date_format="%Y-%m-%d")
    with con.cursor().copy(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(text)


def check_destination(out: str) -> None:
    """Refuse a destination the scores cannot go to, before any work is done."""
    if out.startswith(("postgresql://", "postgres://")):
        parse_postgres_url(out)
    elif Path(out).suffix != ".parquet":
        raise ContractError(f"{setting('out')} {out}: use a .parquet file or a postgresql:// URL")


def destination_for(out: str, as_of: date, extras: dict[str, str] | None = None
                    ) -> Destination:
    """Where scores go; ``extras`` are the columns the propensity and value champions add."""
    if out.startswith(("postgresql://", "postgres://")):
        return PostgresDestination(out, as_of, extras)
    return ParquetDestination(Path(out), extras)


def _chunks(con: duckdb.DuckDBPyConnection, scoring: Scoring) -> Iterator[pd.DataFrame]:
    reader = con.sql(f"SELECT * FROM read_parquet('{scoring.path}')").to_arrow_reader(CHUNK_ROWS)
    for batch in reader:
        yield batch.to_pandas()


def read_ahead(chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """``chunks``, the next one read on a thread of its own while the caller scores this
    one (the forests keep both cores busy; reading would otherwise leave one idle)."""
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader:
        ahead = reader.submit(next, chunks, None)
        while (chunk := ahead.result()) is not None:
            ahead = reader.submit(next, chunks, None)
            yield chunk


class WriteBehind:
    """A destination's ``write`` on a thread of its own, one chunk at a time and in order,
    while the next chunk is scored; ``flush`` waits for the last one (and raises its
    error)."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="write")
        self.pending: Future | None = None

    def write(self, chunk: pd.DataFrame) -> None:
        self.flush()
        self.pending = self.writer.submit(self.destination.write, chunk)

    def flush(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Wait for a write in flight, without its error (the job is failing already)."""
        if self.pending is not None:
            self.pending.exception()
        self.writer.shutdown()


@dataclass(frozen=True)
class Scoring:
    """Everyone to score: their features and whether marketing may contact them, by
    customer, in a Parquet file (a base larger than DuckDB's memory limit spills there
    rather than failing)."""

    path: Path
    rows: int


def _scoring_table(con: duckdb.DuckDBPyConnection, cfg: ScoreJobConfig, work: Path,
                   progress: Progress | None) -> tuple[Scoring, str | None, tuple[date, date]]:
    """Everyone to score as of ``cfg.as_of``, a warning when the data looks stale, and the
    data's span."""
    tables = load_tables(con, cfg.data, work, cfg.on_bad_rows, progress=progress, keep=False)
    stale = tables.check_as_of(cfg.as_of)
    path = work / "scoring.parquet"
    copy_features(con, tables.relations, cfg.as_of, path, "FORMAT parquet", contactable=True)
    total = con.sql(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]
    if total == 0:
        raise ContractError(f"no customer to score as of {cfg.as_of} (none with profiling "
                            f"consent has a row before it); nothing was written")
    return Scoring(path, total), stale, (tables.start, tables.end)


def score_frame(cfg: ScoreJobConfig, loaded: LoadedModel,
                progress: Progress | None = None) -> tuple[pd.DataFrame, list[str]]:
    """What ``run_score`` would write (``cfg.out`` is ignored), as a DataFrame, with any
    warning about the data."""
    with tempfile.TemporaryDirectory(prefix="churn-score-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill") as con:
        scoring, stale, _ = _scoring_table(con, cfg, Path(work), progress)
        rows = con.sql(f"SELECT * FROM read_parquet('{scoring.path}')").df()
    cuts = tier_cuts_for(loaded, cfg.policy)
    scores = score_features(rows, rows["contactable"], loaded, cfg.policy, cuts, cfg.reasons)
    return scores, [stale] if stale else []


def run_score(cfg: ScoreJobConfig, loaded: LoadedModel, progress: Progress | None = None,
              on_rows: Callable[[int, int], None] | None = None,
              on_commit: Callable[[Destination, ScoreJobResult], None] | None = None,
              on_start: Callable[[], None] | None = None) -> ScoreJobResult:
    """Score every consenting customer as of ``cfg.as_of`` and write them to ``cfg.out``.

    ``on_start`` is called once the data, the as-of and the destination have been checked,
    before any row is scored (the run log opens its run there, so a mistake in the arguments
    leaves no run behind); ``on_commit`` with the destination and the result just before the
    rows are made visible (the run log adds its row to a PostgreSQL destination's
    transaction there)."""
    check_destination(cfg.out)
    if cfg.engine is Engine.spark:
        # Spark is an optional extra: imported only when asked for.
        from features.spark_session import spark_job_errors  # noqa: PLC0415
        from serving.spark_batch import run_score_spark  # noqa: PLC0415

        with spark_job_errors():
            return run_score_spark(cfg, loaded, progress, on_rows, on_commit, on_start)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="churn-score-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill") as con:
        scoring, stale, span = _scoring_table(con, cfg, Path(work), progress)
        total = scoring.rows
        cuts = tier_cuts_for(loaded, cfg.policy)
        reference = loaded.model.reference
        profile = reference.empty() if reference else None
        destination = destination_for(cfg.out, cfg.as_of, extra_columns(loaded))
        totals, probabilities, done = [], [], 0
        writer, chunks = WriteBehind(destination), read_ahead(_chunks(con, scoring))
        try:
            if on_start:
                on_start()
            for chunk in chunks:
                scores = score_features(chunk, chunk["contactable"], loaded, cfg.policy, cuts,
                                        cfg.reasons)
                writer.write(scores)
                totals.append(segment_totals(scores))
                base = scores["churn_probability"].notna().to_numpy()
                probabilities.append(scores["churn_probability"].to_numpy()[base])
                if profile is not None:
                    profile.add(chunk[base].assign(churn_probability=probabilities[-1]))
                done += len(chunk)
                if on_rows:
                    on_rows(done, total)
            writer.flush()
            scored = np.concatenate(probabilities) if probabilities else np.array([])
            result = ScoreJobResult(
                done, destination_label(cfg.out), segment_summary(totals), 0.0,
                [stale] if stale else [], profile,
                np.percentile(scored, np.arange(101)).tolist() if len(scored) else None, span,
                len(scored))
            if on_commit:
                on_commit(destination, result)
            destination.commit()
        except BaseException:
            chunks.close()  # waits for a read in flight, before the connection closes
            writer.close()
            destination.discard()
            raise
        writer.close()
    result.seconds = time.perf_counter() - started
    return result
