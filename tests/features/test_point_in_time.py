"""Feature values on tiny hand-made tables, checked against hand computations."""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from features import point_in_time
from features.registry import feature_names
from tests.conftest import build, write_table

AS_OF = date(2024, 7, 1)


def days(text: str) -> float:
    """Days from a date to AS_OF, by calendar arithmetic."""
    return float((AS_OF - date.fromisoformat(text)).days)


@pytest.fixture()
def hand_made(tmp_path):
    data = tmp_path / "data"
    tx = [
        ("A", "o1", "2023-01-10", 100.0, "web"),
        ("A", "o2", "2024-03-01", 50.0, "store"),
        ("A", "o3", "2024-06-01", 30.0, "web"),  # exactly 30 days before AS_OF
        ("A", "o3", "2024-06-10", -10.0, "web"),  # a return: nets off, not an order
        ("A", "o4", "2024-07-01", 999.0, "web"),  # at AS_OF: not visible
        ("A", "o5", "2024-08-01", 999.0, "web"),  # future
        ("C", "c1", "2024-06-01", 20.0, "web"),  # C withheld profiling consent
    ]
    write_table(data, "transactions", pd.DataFrame(
        tx, columns=["customer_id", "order_id", "ordered_at", "amount", "channel"]))
    ev = [
        ("A", "2024-06-01T00:00:00Z", "cart_add"),  # with the last order, not after it
        ("A", "2024-06-05T12:00:00Z", "cart_add"),  # after it: abandoned
        ("B", "2024-04-01", "email_sent"),  # 91 days before: outside 90d
        ("B", "2024-06-10", "email_sent"),
        ("B", "2024-06-25", "email_sent"),
        ("B", "2024-06-26", "email_open"),
        ("B", "2024-06-26T01:00:00+01:00", "email_click"),  # = 2024-06-26 00:00 UTC
        ("B", "2024-06-20", "cart_add"),
        ("B", "2024-06-28", "unsubscribe"),
        ("B", "2024-06-01", "push_open"),  # unknown type: counted, ignored
        ("B", "2024-07-01", "site_visit"),  # at AS_OF: not visible
    ]
    write_table(data, "events", pd.DataFrame(
        ev, columns=["customer_id", "occurred_at", "event_type"]))
    cu = [
        ("A", "2022-12-01", True),
        ("C", "2023-01-01", False),
        ("D", "2024-06-15", True),  # new, no activity yet
        ("E", "2024-08-01", True),  # signs up after AS_OF
    ]
    write_table(data, "customers", pd.DataFrame(
        cu, columns=["customer_id", "signed_up_at", "profiling_consent"]))
    return build(data, AS_OF)


def test_population_is_everyone_seen_before_cutoff_with_consent(hand_made):
    assert list(hand_made.index) == ["A", "B", "D"]
    assert list(hand_made.columns) == ["as_of", *feature_names()]


def test_purchase_features_match_hand_computation(hand_made):
    a = hand_made.loc["A"]
    gaps = [days("2023-01-10") - days("2024-03-01"), days("2024-03-01") - days("2024-06-01")]
    expected = {
        "recency_days": 30.0,
        "tenure_days": days("2022-12-01"),
        "orders_30d": 1, "orders_90d": 1, "orders_365d": 2, "orders_total": 3,
        "spend_30d": 20.0, "spend_90d": 20.0, "spend_365d": 70.0, "spend_total": 170.0,
        "spend_prev_90d": 50.0,
        "aov_365d": 35.0, "aov_total": 170.0 / 3,
        "gap_mean_days": np.mean(gaps), "gap_std_days": np.std(gaps),
        "overdue_ratio": 30.0 / np.mean(gaps),
        "spend_trend_90d": (20.0 - 50.0) / (20.0 + 50.0),
        "channel_share_web": 2 / 3, "channel_share_store": 1 / 3,
        "channel_share_app": 0.0, "channel_share_other": 0.0, "channels_used": 2,
        "cart_add_30d": 2, "cart_adds_without_order_30d": 1,
    }
    for name, value in expected.items():
        assert a[name] == pytest.approx(value), name


def test_engagement_features_match_hand_computation(hand_made):
    b = hand_made.loc["B"]
    expected = {
        "email_sent_7d": 1, "email_sent_30d": 2, "email_sent_90d": 2,
        "days_since_email_sent": days("2024-06-25"),
        "email_open_rate_90d": 0.5, "email_click_rate_90d": 0.5,
        "days_since_email_click": days("2024-06-26"),
        "cart_adds_without_order_30d": 1, "unsubscribed": 1,
        "site_visit_7d": 0, "orders_total": 0, "spend_total": 0.0,
    }
    for name, value in expected.items():
        assert b[name] == pytest.approx(value), name
    assert np.isnan(b["recency_days"]) and np.isnan(b["aov_365d"])
    assert np.isnan(b["days_since_site_visit"]) and np.isnan(b["tenure_days"])


def test_new_customer_without_activity_has_tenure_only(hand_made):
    d = hand_made.loc["D"]
    assert d["tenure_days"] == days("2024-06-15")
    assert d["orders_total"] == 0 and np.isnan(d["recency_days"])
    assert d["unsubscribed"] == 0


def test_returns_net_off_spend_and_do_not_count_as_orders(tmp_path):
    tx = pd.DataFrame({
        "customer_id": ["R", "R", "R"],
        "order_id": ["r1", "r2", "r1-return"],
        "ordered_at": ["2024-06-01", "2024-06-15", "2024-06-20"],
        "amount": [80.0, 20.0, -30.0],
    })
    write_table(tmp_path / "data", "transactions", tx, fmt="parquet")
    r = build(tmp_path / "data", AS_OF).loc["R"]
    assert r["orders_30d"] == 2 and r["spend_30d"] == pytest.approx(70.0)
    assert r["aov_365d"] == pytest.approx(35.0)
    assert r["recency_days"] == days("2024-06-15")  # a return is not a purchase


def test_line_items_of_one_order_count_once(tmp_path):
    tx = pd.DataFrame({
        "customer_id": ["L", "L", "L"],
        "order_id": ["x", "x", "y"],
        "ordered_at": ["2024-06-01", "2024-06-01", "2024-06-11"],
        "amount": [10.0, 15.0, 5.0],
    })
    write_table(tmp_path / "data", "transactions", tx)
    r = build(tmp_path / "data", AS_OF).loc["L"]
    assert r["orders_total"] == 2 and r["aov_total"] == pytest.approx(15.0)


def test_timestamps_with_offsets_are_read_as_utc(tmp_path):
    tx = pd.DataFrame({
        "customer_id": ["Z", "Z"],
        "order_id": ["z1", "z2"],
        # 2024-07-01T01:00+02:00 is 2024-06-30T23:00Z: before the cutoff.
        "ordered_at": ["2024-07-01T01:00:00+02:00", "2024-07-01T00:30:00-01:00"],
        "amount": [10.0, 99.0],
    })
    write_table(tmp_path / "data", "transactions", tx)
    z = build(tmp_path / "data", AS_OF).loc["Z"]
    assert z["orders_total"] == 1
    assert z["recency_days"] == pytest.approx(1 / 24)


def test_a_base_too_large_for_memory_is_built_a_range_of_customers_at_a_time(
        synthetic_data, tmp_path, monkeypatch):
    """Each range's query sees only its customers' rows, so the features are the same
    to the bit, in the same customer order, as from one query over everyone."""
    data, cfg = synthetic_data
    whole = build(data, cfg.end, tmp_path / "whole.parquet")
    # As if every customer took 100 MB: with 1GB, about 10 customers per range.
    monkeypatch.setattr(point_in_time, "BYTES_PER_CUSTOMER", 100_000_000)
    with duckdb.connect() as con:
        con.sql("SET memory_limit = '1GB'")
        ranges = point_in_time.customer_ranges(
            con, f"read_parquet('{data / 'transactions.parquet'}')")
    assert len(ranges) > 50
    ranged = build(data, cfg.end, tmp_path / "ranged.parquet")
    assert list(ranged.index) == sorted(ranged.index)
    pd.testing.assert_frame_equal(ranged, whole)
