"""Spark SQL generated from the DuckDB SQL: one definition of every feature and label.

The DuckDB queries (``features.point_in_time``, ``features.labels``) are the source;
sqlglot transpiles them to Spark's dialect, with rewrites so the results match to the bit
where the arithmetic allows: DuckDB's ``epoch_us`` is Spark's ``unix_micros``, and a literal
such as ``86400.0``, a DECIMAL in Spark's arithmetic (rounded to six places), is a DOUBLE,
as DuckDB divides with it. The contract's screen needs two more: DuckDB's 64-bit ``hash``
is Spark's ``xxhash64`` (Spark's ``hash`` has 32 bits, so tens of millions of rows would
collide by the hundred thousand), and ``isfinite``, which Spark lacks, is spelled out.
"""

from __future__ import annotations

from functools import lru_cache

import sqlglot
from sqlglot import exp


def _double(value: str) -> exp.Expression:
    return exp.Cast(this=exp.Literal.number(value), to=exp.DataType.build("DOUBLE"))


RENAMED = {"EPOCH_US": "UNIX_MICROS", "HASH": "XXHASH64"}


def _rewrite(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.CTE) and node.args.get("materialized") is not None:
        # DuckDB's [NOT] MATERIALIZED hint; Spark plans CTEs its own way. (Set in place:
        # ``transform`` works on a copy, and goes on into this node's children.)
        node.set("materialized", None)
    name = str(node.this).upper() if isinstance(node, exp.Anonymous) else None
    if name in RENAMED:
        return exp.Anonymous(this=RENAMED[name], expressions=node.expressions)
    if name == "ISFINITE":
        (value,) = node.expressions
        return sqlglot.parse_one(f"(NOT isnan({value.sql('spark')}) AND abs("
                                 f"{value.sql('spark')}) < double('Infinity'))", read="spark")
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


def split_order(duckdb_sql: str) -> tuple[str, list[tuple[str, bool, bool]]]:
    """``duckdb_sql`` in Spark SQL without its final ORDER BY, and that order as (output
    column, descending, nulls first) triples; the query whole, and no order, where the order
    is not by plain columns."""
    tree = sqlglot.parse_one(to_spark(duckdb_sql), read="spark")
    order = tree.args.get("order")
    if order is None or not all(isinstance(o.this, exp.Column) for o in order.expressions):
        return tree.sql(dialect="spark"), []
    tree.set("order", None)
    return tree.sql(dialect="spark"), [
        (o.this.name, bool(o.args.get("desc")), bool(o.args.get("nulls_first")))
        for o in order.expressions]
