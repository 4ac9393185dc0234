"""The engines a job can run on: DuckDB on this machine, or Apache Spark for bases that
outgrow it. Both run the same SQL (Spark's is transpiled from DuckDB's) and the same rules."""

from __future__ import annotations

from enum import StrEnum


class Engine(StrEnum):
    duckdb = "duckdb"
    spark = "spark"
