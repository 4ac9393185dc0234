"""The Spark SQL generated from the DuckDB SQL (sqlglot; no Spark needed to check it)."""

from __future__ import annotations

from datetime import date

from features.point_in_time import feature_query
from features.spark_sql import split_order, to_spark


def test_duckdb_functions_get_their_spark_names():
    sql = to_spark('SELECT epoch_us(t), count(DISTINCT hash(a, b)), NOT isfinite("x") FROM r')
    assert "UNIX_MICROS(t)" in sql and "XXHASH64(a, b)" in sql
    assert "ISNAN(`x`)" in sql and "ISFINITE" not in sql


def test_the_scoring_query_can_leave_the_sort_to_the_scores():
    unsorted, order = split_order(feature_query({"transactions": "tx_view"}, date(2025, 1, 1)))
    assert order == [("customer_id", False, False)]  # DuckDB puts nulls last
    assert "ORDER BY CUSTOMER_ID" not in unsorted.upper()
    assert "ORDER BY CUSTOMER_ID" in to_spark(feature_query({"transactions": "t"},
                                                            date(2025, 1, 1))).upper()


def test_an_order_that_is_not_by_columns_stays_in_the_query():
    assert split_order("SELECT a FROM t ORDER BY a DESC, b") == (
        "SELECT a FROM t", [("a", True, False), ("b", False, False)])
    sql, order = split_order("SELECT a FROM t ORDER BY a + 1")
    assert order == [] and "ORDER BY a + 1" in sql
