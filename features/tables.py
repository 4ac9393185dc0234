"""Contract tables validated once and held in DuckDB, for jobs that query them many times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb

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
                only: tuple[str, ...] | None = None) -> LoadedTables:
    """Validate the tables in ``data_dir`` once and keep their clean rows in ``con``.

    Every contract table gets a relation; an optional table the folder lacks is an empty one,
    and so is every table left out of ``only`` (when given), which is not read at all.

    With ``OnBadRows.quarantine`` the rejected rows go to ``rejects`` (kept after the job).
    """
    sources = {name: source for name, source in find_tables(data_dir).items()
               if only is None or name in only}
    validated = validate_tables(con, sources, on_bad_rows, work_dir, rejects, progress)
    relations = {}
    for name, spec in TABLES.items():
        source = validated[name].relation if name in validated else empty_relation_sql(spec)
        con.sql(f"CREATE OR REPLACE TEMP TABLE contract_{name} AS SELECT * FROM {source}")
        relations[name] = f"contract_{name}"
    start, end = data_span(con, relations["transactions"])
    return LoadedTables(relations, [t.report for t in validated.values()], end, start,
                        frozenset(validated))
