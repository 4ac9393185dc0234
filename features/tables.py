"""Contract tables validated once and held in DuckDB, for jobs that query them many times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from features.contract import TABLES, ContractError
from features.errors import setting
from features.labels import data_span
from features.sources import empty_relation_sql, find_tables
from features.validation import OnBadRows, Progress, TableReport, validate_tables

DEFAULT_REJECTS = Path("rejects")
# How far past the last order an as-of may lie (a job scoring today on yesterday's extract),
# and past how many days without an order the data is called stale.
AS_OF_ALLOWANCE_DAYS = 31
STALE_DAYS = 7


@dataclass
class LoadedTables:
    """Validated contract tables held as DuckDB tables, plus what validation found."""

    relations: dict[str, str]
    reports: list[TableReport]
    end: date
    start: date
    present: frozenset[str] = frozenset()

    def check_as_of(self, as_of: date, allowance_days: int = AS_OF_ALLOWANCE_DAYS,
                    stale_days: int = STALE_DAYS) -> str | None:
        """Refuse an as-of outside the data's span (before the first order, or more than
        ``allowance_days`` after the data ends); return a warning when the newest order is
        more than ``stale_days`` before it."""
        last = self.end - timedelta(days=1)
        span = f"the data spans {self.start} .. {last}"
        if as_of <= self.start:
            raise ContractError(f"{setting('as_of')} {as_of}: on or before the first order; {span}")
        late = (as_of - last).days
        if late > allowance_days:
            raise ContractError(
                f"{setting('as_of')} {as_of}: {late:,} days after the data ends; {span}, so the "
                f"latest as-of is {last + timedelta(days=allowance_days)}. Load newer data")
        if late > stale_days:
            return (f"the newest order is {late} days before the as-of date {as_of} ({span}): "
                    f"customers look more lapsed than they may be; load newer data if it exists")
        return None

    def has(self, table: str) -> bool:
        """Whether the data folder holds ``table`` (absent optional tables are empty)."""
        return table in self.present

    def rows(self) -> dict[str, int]:
        return {r.table: r.rows for r in self.reports}


def load_tables(con: duckdb.DuckDBPyConnection, data_dir: Path, work_dir: Path,
                on_bad_rows: OnBadRows = OnBadRows.stop, rejects: Path = DEFAULT_REJECTS,
                progress: Progress | None = None,
                only: tuple[str, ...] | None = None, keep: bool = True) -> LoadedTables:
    """Validate the tables in ``data_dir`` once and keep their clean rows in ``con``.

    Every contract table gets a relation; an optional table the folder lacks is an empty one,
    and so is every table left out of ``only`` (when given), which is not read at all.
    ``keep=False`` makes them views over the files instead of tables held by DuckDB: for a
    job that reads them once (scoring), so a base larger than the memory limit still fits.

    With ``OnBadRows.quarantine`` the rejected rows go to ``rejects`` (kept after the job).
    """
    sources = {name: source for name, source in find_tables(data_dir).items()
               if only is None or name in only}
    validated = validate_tables(con, sources, on_bad_rows, work_dir, rejects, progress)
    relations = {}
    for name, spec in TABLES.items():
        source = validated[name].relation if name in validated else empty_relation_sql(spec)
        kind = "TABLE" if keep else "VIEW"
        con.sql(f"CREATE OR REPLACE TEMP {kind} contract_{name} AS SELECT * FROM {source}")
        relations[name] = f"contract_{name}"
    reports = [t.report for t in validated.values()]
    stray = stray_orders(con, relations["transactions"])
    if stray is not None:
        relations["transactions"] = set_aside_stray(con, relations["transactions"], stray,
                                                    on_bad_rows, rejects, reports, keep)
    start, end = data_span(con, relations["transactions"])
    return LoadedTables(relations, reports, end, start, frozenset(validated))


# Orders after a gap of more than STRAY_GAP_DAYS with no order, and together at most
# STRAY_SHARE of all rows, lie "far past the rest of the data": a mistyped date or a test
# row. Left in, such a row would move the data's end and make label windows that run past
# the real data look matured.
STRAY_GAP_DAYS = 30
STRAY_SHARE = 0.001


@dataclass(frozen=True)
class StrayOrders:
    """Rows dated far past the rest of the transactions."""

    rows: int
    first_day: date
    last_regular_day: date

    @property
    def gap_days(self) -> int:
        return (self.first_day - self.last_regular_day).days

    def describe(self) -> str:
        rows = "1 row" if self.rows == 1 else f"{self.rows:,} rows"
        return (f"transactions: {rows} dated from {self.first_day} on, {self.gap_days:,} days "
                f"after the rest of the data (which ends {self.last_regular_day}): a date "
                f"far past the data would make label windows beyond its real end look "
                f"matured")


def stray_orders(con: duckdb.DuckDBPyConnection, transactions: str) -> StrayOrders | None:
    """The rows after the latest gap of over ``STRAY_GAP_DAYS`` days, when they are at most
    ``STRAY_SHARE`` of the table; None when the data runs on to its last row."""
    found = con.sql(f"""
        WITH days AS (SELECT CAST(ordered_at AS DATE) AS day, count(*) AS n
                      FROM {transactions} GROUP BY ALL),
        spans AS (SELECT day, lag(day) OVER (ORDER BY day) AS before,
                         sum(n) OVER (ORDER BY day DESC) AS from_here,
                         sum(n) OVER () AS total FROM days)
        SELECT from_here, day, before FROM spans
        WHERE date_diff('day', before, day) > {STRAY_GAP_DAYS}
          AND from_here <= {STRAY_SHARE} * total
        ORDER BY day LIMIT 1""").fetchall()
    if not found:
        return None
    rows, first, before = found[0]
    return StrayOrders(int(rows), first, before)


def set_aside_stray(con: duckdb.DuckDBPyConnection, transactions: str, stray: StrayOrders,
                    on_bad_rows: OnBadRows, rejects: Path, reports: list[TableReport],
                    keep: bool = True) -> str:
    """Stop on stray rows, or (quarantine) move them to the rejects file and go on; returns
    the relation of the transactions kept."""
    refuse_stray(stray, on_bad_rows)
    rows = con.sql(f"SELECT * FROM {transactions} WHERE {stray_rows(stray)}").df()
    reject_stray(rows, stray, rejects, reports)
    if keep:
        con.execute(f"DELETE FROM {transactions} WHERE {stray_rows(stray)}")
        return transactions
    con.sql(f"CREATE TEMP VIEW {transactions}_kept AS SELECT * FROM {transactions} "
            f"WHERE NOT ({stray_rows(stray)})")
    return f"{transactions}_kept"


def stray_rows(stray: StrayOrders) -> str:
    """SQL condition true for the stray rows."""
    return f"CAST(ordered_at AS DATE) >= DATE '{stray.first_day}'"


def refuse_stray(stray: StrayOrders, on_bad_rows: OnBadRows) -> None:
    """Raise unless stray rows are to be quarantined."""
    if on_bad_rows is OnBadRows.stop:
        raise ContractError(f"{stray.describe()}. Nothing was written. Fix or remove them, or "
                            f"rerun with {setting('on_bad_rows')} quarantine to set them aside "
                            f"and go on.")


def reject_stray(rows: pd.DataFrame, stray: StrayOrders, rejects: Path,
                 reports: list[TableReport]) -> None:
    """Add the stray ``rows`` to the transactions rejects file and its report."""
    rows = rows.astype("string")
    rows["_where"] = f"dated {stray.gap_days:,} days after the rest of the data"
    rows["_reason"] = "column 'ordered_at': far past the rest of the data"
    path = rejects / "transactions.rejects.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, mode="a", header=not path.exists(), index=False)
    report = next((r for r in reports if r.table == "transactions"), None)
    if report is not None:
        report.bad_rows += stray.rows
        report.rejects_file = path
        report.add("ordered_at", "far past the rest of the data", "first", str(stray.first_day))
