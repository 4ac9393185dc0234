"""Contract tables validated once and held in DuckDB, for jobs that query them many times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from features.labels import data_end
from features.sources import find_tables
from features.validation import OnBadRows, Progress, TableReport, validate_tables

DEFAULT_REJECTS = Path("rejects")


@dataclass
class LoadedTables:
    """Validated contract tables held as DuckDB tables, plus what validation found."""

    relations: dict[str, str]
    reports: list[TableReport]
    end: date

    def rows(self) -> dict[str, int]:
        return {r.table: r.rows for r in self.reports}


def load_tables(con: duckdb.DuckDBPyConnection, data_dir: Path, work_dir: Path,
                on_bad_rows: OnBadRows = OnBadRows.stop, rejects: Path = DEFAULT_REJECTS,
                progress: Progress | None = None) -> LoadedTables:
    """Validate the tables in ``data_dir`` once and keep their clean rows in ``con``.

    With ``OnBadRows.quarantine`` the rejected rows go to ``rejects`` (kept after the job).
    """
    validated = validate_tables(con, find_tables(data_dir), on_bad_rows, work_dir, rejects,
                                progress)
    relations = {}
    for name, table in validated.items():
        con.sql(f"CREATE OR REPLACE TEMP TABLE contract_{name} AS SELECT * FROM {table.relation}")
        relations[name] = f"contract_{name}"
    return LoadedTables(relations, [t.report for t in validated.values()],
                        data_end(con, relations["transactions"]))
