"""BG/NBD: the published CDNOW fit, and what its predictions must look like."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from features.clv import clv_summary_query
from tests.conftest import shared_file
from training.bgnbd import BGNBD


def summary_of(transactions: pd.DataFrame, cutoff: date) -> pd.DataFrame:
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.register("tx", transactions)
    return con.sql(clv_summary_query("tx", cutoff)).df()


def test_reproduces_the_published_cdnow_fit():
    raw = pd.read_csv(shared_file("cdnow/CDNOW_sample.txt"), sep=r"\s+", header=None,
                      names=["master_id", "customer_id", "day", "cds", "amount"],
                      dtype={"day": str})
    raw["ordered_at"] = pd.to_datetime(raw["day"]).dt.tz_localize("UTC")
    # The 39-week calibration period 1997-01-01 .. 1997-09-30: cutoff 1997-10-01.
    summary = summary_of(raw, date(1997, 10, 1))
    assert len(summary) == 2357
    model = BGNBD().fit(summary)
    fitted = [model.r_, model.alpha_, model.a_, model.b_]
    assert fitted == pytest.approx([0.243, 4.414, 0.793, 2.426], abs=5e-4)
    assert model.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)


def test_summary_merges_same_day_orders_and_ignores_returns():
    tx = pd.DataFrame({
        "customer_id": ["a", "a", "a", "a", "b"],
        "ordered_at": pd.to_datetime(["2025-01-01 09:00", "2025-01-01 18:00", "2025-01-15",
                                      "2025-01-20", "2025-01-29"], utc=True, format="ISO8601"),
        "amount": [10.0, 5.0, 8.0, -8.0, 3.0],
    })
    got = summary_of(tx, date(2025, 1, 30)).set_index("customer_id")
    # a: purchase days Jan 1 and Jan 15 (the Jan 20 return is not a purchase); last day Jan 29.
    assert got.loc["a", ["x", "t_x", "T"]].tolist() == pytest.approx([1, 14 / 7, 28 / 7])
    assert got.loc["b", ["x", "t_x", "T"]].tolist() == pytest.approx([0, 0, 0])
    # Gamma-Gamma's input: the mean spend of the repeat purchase days (none for b).
    assert got["monetary"].tolist() == pytest.approx([8.0, 0.0])


def test_predictions_behave():
    summary = pd.DataFrame({"x": [0, 5, 5, 5], "t_x": [0, 30, 30, 10], "T": [40, 40, 31, 40]})
    model = BGNBD()
    model.r_, model.alpha_, model.a_, model.b_ = 0.243, 4.414, 0.793, 2.426
    alive = model.p_alive(summary)
    # No repeat purchase means the model cannot have seen a drop-out.
    assert alive[0] == 1.0
    # Same history, longer silence since the last purchase: less likely alive.
    assert alive[2] > alive[1] > alive[3]
    expected = model.expected_purchases(summary, 13.0)
    assert np.all(expected > 0)
    assert expected[2] > expected[1] > expected[3]
    assert np.all(model.expected_purchases(summary, 26.0) > expected)
