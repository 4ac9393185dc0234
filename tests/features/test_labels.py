"""The churn label on hand-made histories: base window, horizon window, returns, maturity."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from features.contract import ContractError
from features.labels import (
    ChurnLabelConfig,
    LabelWindowError,
    check_matured,
    churn_label_query,
    data_span,
)

CUTOFF = date(2025, 7, 1)


def labels(rows: list[tuple[str, str, float]], cfg: ChurnLabelConfig) -> dict[str, int]:
    frame = pd.DataFrame(rows, columns=["customer_id", "ordered_at", "amount"])
    frame["ordered_at"] = pd.to_datetime(frame["ordered_at"], utc=True, format="ISO8601")
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.register("tx", frame)
    out = con.sql(churn_label_query("tx", CUTOFF, cfg)).fetchall()
    return dict(out)


def test_base_and_horizon_windows_are_half_open():
    cfg = ChurnLabelConfig(horizon_days=30, base_days=60)
    got = labels([
        ("stays", "2025-06-15", 10), ("stays", "2025-07-30 23:59", 5),   # last horizon day
        ("churns", "2025-06-15", 10), ("churns", "2025-07-31", 5),       # T + 30d: outside
        ("base_edge", "2025-05-02", 10),                                 # exactly T - 60d
        ("too_old", "2025-05-01 23:59", 10), ("too_old", "2025-07-02", 10),
        ("at_cutoff", "2025-07-01", 10),                                 # first seen at T
    ], cfg)
    assert got == {"stays": 0, "churns": 1, "base_edge": 1}


def test_a_return_is_not_an_order():
    got = labels([("a", "2025-06-01", 20), ("a", "2025-07-10", -20),
                  ("b", "2025-06-01", 20), ("b", "2025-07-10", 0)], ChurnLabelConfig())
    assert got == {"a": 1, "b": 0}


def test_maturity_names_the_late_cutoff_and_the_latest_good_one():
    end = date(2025, 10, 1)
    check_matured([date(2025, 7, 3)], 90, end)
    with pytest.raises(LabelWindowError) as err:
        check_matured([date(2025, 6, 1), date(2025, 7, 4)], 90, end)
    assert "cutoff 2025-07-04" in str(err.value)
    assert "latest cutoff with a matured label is 2025-07-03" in str(err.value)


def test_data_end_is_the_day_after_the_last_order():
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql("CREATE TABLE tx AS SELECT * FROM (VALUES "
            "(TIMESTAMPTZ '2025-09-30 18:00:00+00', 10.0), "
            "(TIMESTAMPTZ '2025-03-02 09:00:00+00', 5.0)) t(ordered_at, amount)")
    assert data_span(con, "tx") == (date(2025, 3, 2), date(2025, 10, 1))


def test_windows_must_be_positive():
    with pytest.raises(ContractError, match=r"^horizon_days must be at least 1 day"):
        ChurnLabelConfig(horizon_days=0)
