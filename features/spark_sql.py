"""Spark SQL generated from the DuckDB SQL: one definition of every feature and label.

The DuckDB queries (``features.point_in_time``, ``features.labels``) are the source;
sqlglot transpiles them to Spark's dialect, with two rewrites so the results match to the bit
where the arithmetic allows: DuckDB's ``epoch_us`` is Spark's ``unix_micros``, and a literal
such as ``86400.0``, a DECIMAL in Spark's arithmetic (rounded to six places), is a DOUBLE,
as DuckDB divides with it.
"""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp


def _double(value: str) -> exp.Expression:
    return exp.Cast(this=exp.Literal.number(value), to=exp.DataType.build("DOUBLE"))


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        # DuckDB's [NOT] MATERIALIZED hint; Spark plans CTEs its own way. (Set in place:
        # ``transform`` works on a copy, and goes on into this node's children.)
        node.set("materialized", None)
    if isinstance(node, exp.Anonymous) and str(node.this).upper() == "EPOCH_US":
        return exp.Anonymous(this="UNIX_MICROS", expressions=node.expressions)
    if isinstance(node, exp.Literal) and node.is_number and "." in node.this:
        # Spark reads 86400.0 as a DECIMAL and divides in decimals, rounding to six places;
        # DuckDB divides such a literal into a DOUBLE in floating point.
        return _double(node.this)
    return node


@lru_cache(maxsize=256)
def to_spark(duckdb_sql: str) -> str:
    """``duckdb_sql`` in Spark SQL."""
    tree = sqlglot.parse_one(duckdb_sql, read="duckdb")
    return tree.transform(_rewrite).sql(dialect="spark")
