"""Row-level validation of the contract tables, streamed in batches so memory stays bounded.

Each raw value is cast by DuckDB (one parser for validation and feature building); values
that do not parse, and typed rows that break a pandera rule, are reported with the file and
row they came from. By default a bad row stops the job; in quarantine mode bad rows go to a
rejects file with their reason and the clean rows go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow
import pyarrow.parquet as pq

from features.contract import (
    KNOWN_EVENT_TYPES,
    UTC_TIMESTAMP,
    BadRowsError,
    ContractError,
    TableSpec,
    duckdb_type,
    parse_rule,
    rule_screen,
)
from features.errors import setting
from features.sources import (
    TableSource,
    duckdb_error_line,
    present_columns,
    typed_columns_sql,
    typed_expressions,
)

BATCH_ROWS = 500_000
EXAMPLES_PER_PROBLEM = 3
RAW = "__raw_"
FILE = "__file"

Progress = Callable[[str, int], None]


class OnBadRows(StrEnum):
    stop = "stop"
    quarantine = "quarantine"


@dataclass
class Problem:
    """One (column, rule) that rows break: how many rows, and a few of them."""

    count: int = 0
    examples: list[str] = field(default_factory=list)


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def shown_value(value: object) -> str:
    """A value as an example in a report: its repr, or null."""
    if isinstance(value, Rendered):
        return str(value)
    return "null" if _is_null(value) else repr(value)


class Rendered(str):
    """A value already shown as text where its row was checked (on another machine)."""


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


@dataclass
class TableReport:
    """What validating one table found."""

    table: str
    rows: int = 0
    bad_rows: int = 0
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    unknown_event_types: dict[str, int] = field(default_factory=dict)
    rejects_file: Path | None = None

    def add(self, column: str, rule: str, where: str, value: object, count: int = 1) -> None:
        """Count ``count`` rows breaking (column, rule); the first few are kept as examples
        (``where``: the value)."""
        problem = self.problems.setdefault((column, rule), Problem())
        problem.count += count
        if len(problem.examples) < EXAMPLES_PER_PROBLEM:
            problem.examples.append(f"{where}: {shown_value(value)}")

    def describe(self) -> str:
        lines = [f"{self.table}: {_rows(self.bad_rows)} of {self.rows:,} break the contract"]
        for (column, rule), problem in self.problems.items():
            lines.append(
                f"  - column '{column}', rule '{rule}': {_rows(problem.count)}, "
                f"e.g. {'; '.join(problem.examples)}"
            )
        return "\n".join(lines)


@dataclass
class ValidatedTable:
    """A table that passed validation: SQL giving its clean typed rows, and the report."""

    spec: TableSpec
    relation: str
    report: TableReport


def check_items(spec: TableSpec, present: list[str]) -> list[str]:
    """Select-list items giving the typed columns, and beside each typed one the raw text
    of values that did not parse (``__raw_<column>``; null where the value parsed)."""
    items = typed_columns_sql(spec, present)
    for column in (c for c in spec.columns if c in present):
        sql_type = duckdb_type(spec, column)
        if sql_type != "VARCHAR":
            items.append(
                f'CASE WHEN "{column}" IS NOT NULL AND TRY_CAST("{column}" AS {sql_type}) IS NULL '
                f'THEN CAST("{column}" AS VARCHAR) END AS "{RAW}{column}"'
            )
    return items


def _check_query(source: TableSource, present: list[str]) -> str:
    items = check_items(source.spec, present)
    if source.spec.distinct_rows:  # each row's hash, made by DuckDB's threads
        items.append(f'hash({", ".join(typed_expressions(source.spec, present))}) '
                     f'AS "{ROW_HASH}"')
    multi = len(source.files) > 1
    if multi:
        items.append(f'filename AS "{FILE}"')
    return f"SELECT {', '.join(items)} FROM {source.raw_scan(with_filename=multi)}"


def screen_aggregates(spec: TableSpec, present: list[str]) -> list[str] | None:
    """The screen's aggregates over the typed rows (``check_items``): the rows, and how many
    rows, keys and whole rows may break a rule (see ``contract.rule_screen``). None when a
    rule has no screen."""
    flags = []
    for column in spec.columns:
        quoted = f'"{column}"'
        rules = spec.schema.columns[column]
        if column in present and duckdb_type(spec, column) != "VARCHAR":
            flags.append(f'"{RAW}{column}" IS NOT NULL')
        if not rules.nullable:
            flags.append(f"{quoted} IS NULL")
        for check in rules.checks:
            screen = rule_screen(check, quoted)
            if screen is None:
                return None
            flags.append(screen)
    aggregates = ["count(*)", f"count(*) FILTER (WHERE {' OR '.join(flags) or 'false'})"]
    if spec.unique_key:  # a repeated hash may be a collision: the exact check decides
        key = ", ".join(f'"{c}"' for c in spec.unique_key)
        complete = " AND ".join(f'"{c}" IS NOT NULL' for c in spec.unique_key)
        aggregates.append(f"count(*) FILTER (WHERE {complete}) - count(DISTINCT hash({key})) "
                          f"FILTER (WHERE {complete})")
    if spec.distinct_rows:
        everything = ", ".join(f'"{c}"' for c in spec.columns)
        aggregates.append(f"count(*) - count(DISTINCT hash({everything}))")
    return aggregates


def screen_query(source: TableSource, present: list[str]) -> str | None:
    """One pass of DuckDB over the table (``screen_aggregates``); None when a rule has no
    screen."""
    spec = source.spec
    aggregates = screen_aggregates(spec, present)
    if aggregates is None:
        return None
    return (f"SELECT {', '.join(aggregates)} FROM (SELECT {', '.join(check_items(spec, present))} "
            f"FROM {source.raw_scan()})")


@dataclass(frozen=True)
class Screen:
    """What the screen found: the table's rows, and how many rows, keys and whole rows it
    flags (keys and whole rows by hash, so a flag may be a collision)."""

    rows: int
    flagged: int
    repeated_keys: int = 0
    repeated_rows: int = 0

    @property
    def clean(self) -> bool:
        return not (self.flagged or self.repeated_keys or self.repeated_rows)

    @classmethod
    def of(cls, spec: TableSpec, row: tuple) -> Screen:
        """The screen from the row of ``screen_aggregates``."""
        rows, flagged, *repeats = row
        return cls(rows, flagged, repeats.pop(0) if spec.unique_key else 0,
                   repeats.pop(0) if spec.distinct_rows else 0)


def screen_table(con: duckdb.DuckDBPyConnection, source: TableSource, present: list[str]
                 ) -> Screen | None:
    """The table screened in one pass; None where a rule has no screen."""
    query = screen_query(source, present)
    if query is None:
        return None
    try:
        row = con.sql(query).fetchall()[0]
    except duckdb.Error as err:
        raise _unreadable(source, err) from None
    return Screen.of(source.spec, row)


def passes_screen(con: duckdb.DuckDBPyConnection, source: TableSource, present: list[str]
                  ) -> int | None:
    """The table's row count when the screen flags none of its rows, keys or whole rows
    (the exact check would find nothing); None when it flags any, or cannot screen."""
    screen = screen_table(con, source, present)
    return screen.rows if screen is not None and screen.clean else None


def _parse_failures(df: pd.DataFrame, spec: TableSpec) -> list[tuple[int, str, str, object]]:
    failures = []
    for raw_column in (c for c in df.columns if c.startswith(RAW)):
        column = raw_column[len(RAW):]
        rule = parse_rule(duckdb_type(spec, column))
        bad = df[raw_column].dropna()
        failures += [(int(pos), column, rule, value) for pos, value in bad.items()]
    return failures


def _schema_failures(df: pd.DataFrame, spec: TableSpec) -> list[tuple[int, str, str, object]]:
    try:
        spec.schema.validate(df[spec.columns], lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
        whole_table = cases[cases["index"].isna()]
        if len(whole_table):
            first = whole_table.iloc[0]
            raise ContractError(
                f"{spec.name}: column '{first['column']}' fails rule '{first['check']}' "
                f"({first['failure_case']})"
            ) from None
        return [
            (int(row["index"]), str(row["column"]), str(row["check"]), row["failure_case"])
            for _, row in cases.iterrows()
        ]
    return []


def _duplicate_failures(
    df: pd.DataFrame, spec: TableSpec, seen: set[str]
) -> list[tuple[int, str, str, object]]:
    if not spec.unique_key:
        return []
    complete = df[list(spec.unique_key)].notna().all(axis=1)  # null keys break another rule
    keys = df.loc[complete, spec.unique_key[0]].astype(str)
    for column in spec.unique_key[1:]:
        keys = keys + " / " + df.loc[complete, column].astype(str)
    values = keys.tolist()
    # A set lookup per key: pandas' isin() would turn the growing set into a list each batch.
    seen_before = np.fromiter((k in seen for k in values), dtype=bool, count=len(values))
    duplicate = keys.duplicated().to_numpy() | seen_before
    seen.update(values)
    duplicate = pd.Series(duplicate, index=keys.index)
    rule = f"unique ({', '.join(spec.unique_key)})"
    return [(int(pos), spec.unique_key[-1], rule, key) for pos, key in keys[duplicate].items()]


def row_hashes(df: pd.DataFrame, hashes: np.ndarray | None) -> np.ndarray:
    """Each row's 64-bit hash: ``hashes`` as given (DuckDB's), else pandas' of ``df``."""
    if hashes is None:
        return pd.util.hash_pandas_object(df, index=False).to_numpy()
    return np.asarray(hashes, dtype=np.uint64)


class SeenRows:
    """64-bit hashes of the rows read so far, in a few sorted runs: 8 bytes a row, to find a
    row that repeats an earlier one in any batch. A new batch's run merges with the last
    ones while they are no more than twice its size, so there are O(log rows) runs and each
    hash is re-sorted O(log rows) times (one sorted array re-sorted per batch is quadratic)."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def _seen(self, hashes: np.ndarray) -> np.ndarray:
        order = np.argsort(hashes)
        needles = hashes[order]  # sorted, the searches walk each run in order
        found = np.zeros(len(hashes), dtype=bool)
        for run in self.runs:
            place = np.searchsorted(run, needles).clip(max=len(run) - 1)
            found |= run[place] == needles
        seen = np.empty_like(found)
        seen[order] = found
        return seen

    def _add(self, hashes: np.ndarray) -> None:
        run = np.sort(hashes)
        while self.runs and len(self.runs[-1]) <= 2 * len(run):
            run = np.sort(np.concatenate([self.runs.pop(), run]), kind="stable")
        self.runs.append(run)

    def repeats(self, df: pd.DataFrame, hashes: np.ndarray | None = None) -> np.ndarray:
        """Which rows of ``df`` equal an earlier row (of this or an earlier batch), by their
        64-bit ``hashes`` (made here when not given)."""
        hashes = row_hashes(df, hashes)
        repeated = self._seen(hashes) | pd.Series(hashes).duplicated().to_numpy()
        self._add(hashes)
        return repeated


REPEATED_ROW = "unique row (every column equal to an earlier row)"
ROW_HASH = "__row_hash"


def _repeated_row_failures(df: pd.DataFrame, spec: TableSpec, seen: SeenRows | None
                           ) -> list[tuple[int, str, str, object]]:
    if not spec.distinct_rows or seen is None:
        return []
    hashes = df[ROW_HASH].to_numpy() if ROW_HASH in df.columns else None
    repeated = seen.repeats(df[spec.columns], hashes)
    key = spec.columns[1]  # the id after customer_id: order_id
    return [(int(pos), key, REPEATED_ROW, df[key].iat[pos]) for pos in np.flatnonzero(repeated)]


def value_failures(df: pd.DataFrame, spec: TableSpec) -> list[tuple[int, str, str, object]]:
    """(row position, column, rule, value) for each value that does not parse or breaks a
    rule of the schema: every rule that looks at one row alone."""
    return _parse_failures(df, spec) + _schema_failures(df, spec)


def row_failures(
    df: pd.DataFrame, spec: TableSpec, seen_keys: set[str],
    seen_rows: SeenRows | None = None
) -> pd.DataFrame:
    """One row per (row position, column) that breaks a rule; parse failures take precedence."""
    failures = value_failures(df, spec)
    failures += _duplicate_failures(df, spec, seen_keys)
    failures += _repeated_row_failures(df, spec, seen_rows)
    frame = pd.DataFrame(failures, columns=["pos", "column", "rule", "value"])
    # A value that did not parse is also null and of the wrong type: report only the parse.
    return frame.drop_duplicates(subset=["pos", "column"], keep="first")


class _RowLabels:
    """Turns batch positions into 'row N' (or 'FILE row N'), counting rows per file."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()

    def labels(self, df: pd.DataFrame, positions: pd.Series) -> dict[int, str]:
        if FILE not in df.columns:
            out = {int(p): f"row {self.seen[''] + int(p) + 1}" for p in positions.unique()}
            self.seen[""] += len(df)
            return out
        files = df[FILE]
        in_file = files.groupby(files).cumcount() + 1
        out = {}
        for pos in positions.unique():
            name = files.iat[pos]
            out[int(pos)] = f"{Path(name).name} row {self.seen[name] + int(in_file.iat[pos])}"
        self.seen.update(files.value_counts().to_dict())
        return out


class _Quarantine:
    """Writes clean rows to a staging Parquet file and bad rows to a rejects CSV."""

    def __init__(self, spec: TableSpec, staging: Path, rejects: Path) -> None:
        self.spec, self.staging, self.rejects = spec, staging, rejects
        self.writer: pq.ParquetWriter | None = None
        self.rejects_written = False

    def write(self, batch: pyarrow.RecordBatch, df: pd.DataFrame, failures: pd.DataFrame,
              labels: dict[int, str]) -> None:
        bad = failures["pos"].unique()
        keep = ~df.index.isin(bad)
        clean = pyarrow.Table.from_batches([batch]).select(self.spec.columns).filter(keep)
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.staging, clean.schema)
        self.writer.write_table(clean)
        if len(bad):
            self._write_rejects(df, failures, labels)

    def _write_rejects(self, df: pd.DataFrame, failures: pd.DataFrame,
                       labels: dict[int, str]) -> None:
        rows = df.loc[failures["pos"].unique(), self.spec.columns].astype("string")
        for raw_column in (c for c in df.columns if c.startswith(RAW)):
            raw = df.loc[rows.index, raw_column].dropna()
            rows.loc[raw.index, raw_column[len(RAW):]] = raw.astype("string")
        reasons = failures.assign(
            text="column '" + failures["column"] + "': " + failures["rule"]
        ).groupby("pos")["text"].agg("; ".join)
        rows["_where"] = [labels[p] for p in rows.index]
        rows["_reason"] = reasons.reindex(rows.index).to_numpy()
        self.rejects.parent.mkdir(parents=True, exist_ok=True)
        rows.to_csv(self.rejects, mode="a", header=not self.rejects_written, index=False)
        self.rejects_written = True

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def validate_table(
    con: duckdb.DuckDBPyConnection,
    source: TableSource,
    on_bad_rows: OnBadRows,
    staging_dir: Path,
    rejects_dir: Path | None = None,
    progress: Progress | None = None,
) -> ValidatedTable:
    """Check every row of one table against the contract.

    DuckDB first screens the whole table in one pass (``screen_query``); a table it flags
    nothing in is clean. Otherwise the rules run exactly, in batches, and name the rows;
    repeated rows are looked for only where the screen saw any."""
    spec = source.spec
    present = present_columns(con, source)
    report = TableReport(spec.name)
    labels, seen_keys = _RowLabels(), set()
    quarantine = None
    if on_bad_rows is OnBadRows.quarantine:
        rejects_dir = rejects_dir or staging_dir
        report.rejects_file = rejects_dir / f"{spec.name}.rejects.csv"
        report.rejects_file.unlink(missing_ok=True)
        quarantine = _Quarantine(spec, staging_dir / f"{spec.name}.parquet", report.rejects_file)
    screen = screen_table(con, source, present)
    if screen is not None and screen.clean:
        report.rows = screen.rows
        if progress is not None:
            progress(spec.name, screen.rows)
        return _validated(con, source, present, report)
    seen_rows = SeenRows() if screen is None or screen.repeated_rows else None
    try:
        reader = con.sql(_check_query(source, present)).to_arrow_reader(BATCH_ROWS)
    except duckdb.Error as err:
        raise _unreadable(source, err) from None
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (duckdb.Error, OSError) as err:  # DuckDB's read errors arrive as OSError here
            raise _unreadable(source, err) from None
        _check_batch(batch, spec, report, labels, (seen_keys, seen_rows), quarantine,
                     progress)
    if quarantine is not None:
        quarantine.close()
    if report.bad_rows and quarantine is None:
        raise BadRowsError(report.describe())
    staged = quarantine.staging if report.bad_rows else None
    return _validated(con, source, present, report, staged)


def _validated(con: duckdb.DuckDBPyConnection, source: TableSource, present: list[str],
               report: TableReport, staged: Path | None = None) -> ValidatedTable:
    """The checked table: the files typed, or the clean rows ``staged`` in quarantine."""
    spec = source.spec
    relation = f"(SELECT {', '.join(typed_columns_sql(spec, present))} FROM {source.raw_scan()})"
    if staged is not None:
        relation = f"read_parquet('{staged}')"
    else:
        report.rejects_file = None
    if spec.name == "events":
        report.unknown_event_types = unknown_event_types(con, relation)
    return ValidatedTable(spec, relation, report)


def _unreadable(source: TableSource, err: Exception) -> ContractError:
    where = source.files[0] if len(source.files) == 1 else source.files[0].parent
    return ContractError(f"{source.spec.name}: cannot read {where}: "
                         f"{duckdb_error_line(err, where)}")


def _check_batch(batch: pyarrow.RecordBatch, spec: TableSpec, report: TableReport,
                 labels: _RowLabels, seen: tuple[set, SeenRows | None],
                 quarantine: _Quarantine | None, progress: Progress | None) -> None:
    """The contract's rules on one batch of rows: counted, reported, set aside if asked."""
    df = batch.to_pandas(types_mapper={pyarrow.bool_(): pd.BooleanDtype()}.get)
    failures = row_failures(df, spec, *seen)
    where = labels.labels(df, failures["pos"])
    for row in failures.itertuples():
        report.add(row.column, row.rule, where[row.pos], row.value)
    report.rows += len(df)
    report.bad_rows += failures["pos"].nunique()
    if quarantine is not None:
        quarantine.write(batch, df, failures, where)
    if progress is not None:
        progress(spec.name, len(df))


def unknown_event_types(con: duckdb.DuckDBPyConnection, events: str) -> dict[str, int]:
    """Counts of event types outside the contract's list (ignored by the features)."""
    known = ", ".join(f"'{t}'" for t in KNOWN_EVENT_TYPES)
    rows = con.sql(
        f"SELECT event_type, count(*) FROM {events} WHERE event_type NOT IN ({known}) "
        "GROUP BY event_type ORDER BY count(*) DESC, event_type"
    ).fetchall()
    return {name: count for name, count in rows}


def validate_tables(
    con: duckdb.DuckDBPyConnection,
    sources: dict[str, TableSource],
    on_bad_rows: OnBadRows,
    staging_dir: Path,
    rejects_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, ValidatedTable]:
    """Validate every table; report the problems of all tables at once."""
    validated, errors, bad_rows = {}, [], False
    for name, source in sources.items():
        try:
            validated[name] = validate_table(
                con, source, on_bad_rows, staging_dir, rejects_dir, progress
            )
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


def frame_problems(frame: pd.DataFrame, spec: TableSpec) -> list[str]:
    """What in an in-memory table (e.g. the rows of a request) breaks the contract, by the
    same rules as files: one line per column and rule with the rows (1-based) that break it,
    never the values (they may be customer data). Empty when every row is clean."""
    if frame.empty:
        return []
    typed = frame.copy()
    for name, column in spec.schema.columns.items():
        kind = str(column.dtype)
        if name not in typed.columns:
            typed[name] = pd.Series(pd.NA if column.nullable else None, index=typed.index,
                                    dtype=object)
        if kind.startswith("datetime64"):
            typed[name] = pd.to_datetime(typed[name], utc=True).astype(UTC_TIMESTAMP)
        elif kind == "boolean":
            typed[name] = typed[name].astype("boolean")
        elif kind.startswith("str"):
            typed[name] = typed[name].astype("str")
    failures = row_failures(typed, spec, set(), SeenRows())
    return [_problem_line(spec.name, column, rule, part["pos"])
            for (column, rule), part in failures.groupby(["column", "rule"], sort=False)]


def _problem_line(table: str, column: str, rule: str, positions: Iterable[int]) -> str:
    rows = sorted(int(p) + 1 for p in positions)
    shown = ", ".join(map(str, rows[:EXAMPLES_PER_PROBLEM]))
    more = f" and {len(rows) - EXAMPLES_PER_PROBLEM:,} more" if len(rows) > 3 else ""
    return f"{table}: column '{column}', rule '{rule}': row {shown}{more}"


def id_problems(ids: list[str], spec: TableSpec) -> list[str]:
    """``frame_problems`` for a list of customer ids alone, against the key rules of ``spec``
    (not blank; each once where the table keys on customer_id), without pandera's overhead:
    an online request pays for this on every call."""
    lines = []
    # str.strip is what the contract's not_empty rule (pandas' .str.strip) applies per value;
    # a test holds the two to the same answers.
    blank = [i for i, value in enumerate(ids) if not value.strip()]
    if blank:
        lines.append(_problem_line(spec.name, "customer_id", "not_empty", blank))
    nul = [i for i, value in enumerate(ids) if "\x00" in value]
    if nul:
        lines.append(_problem_line(spec.name, "customer_id", "no NUL character", nul))
    if spec.unique_key == ("customer_id",) and len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = [i for i, value in enumerate(ids) if value in seen or seen.add(value)]
        lines.append(_problem_line(spec.name, "customer_id", "unique (customer_id)", repeated))
    return lines
