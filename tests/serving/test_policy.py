"""The segmentation policy on hand-made customers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.labels import in_base
from serving.policy import (
    DEFAULT_POLICY,
    PolicyError,
    SegmentPolicy,
    expected_spend,
    readable,
    reasons,
    segment,
    spend_tiers,
    tier_cut_points,
)


def customers(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_the_default_file_is_the_documented_defaults():
    assert SegmentPolicy.load(DEFAULT_POLICY) == SegmentPolicy()


def test_segments_first_rule_that_fits_wins():
    policy = SegmentPolicy(new_within_days=90, at_risk_probability=0.5, min_value_at_risk=50)
    f = customers(
        recency_days=[400, 10, 30, 30, 30, 30, np.nan, 365],
        tenure_days=[900, 40, 500, 500, 500, 500, 20, 900],
        orders_total=[3, 1, 5, 5, 5, 5, 0, 2],
    )
    base = in_base(f["recency_days"], 365)
    churn = pd.Series([np.nan, 0.9, 0.2, 0.8, 0.8, 0.8, np.nan, 0.3])
    value = pd.Series([0, 100, 10, 100, 20, 100, 0, 5])
    contactable = pd.Series([True, True, True, True, True, False, True, True])
    got = segment(f, base, churn, value, contactable, policy).tolist()
    # The last one ordered exactly 365 days ago: still in the base, like the label's.
    assert list(got) == ["lapsed", "new", "active", "win_back", "at_risk", "at_risk", "new",
                         "active"]


def test_lapsed_follows_the_models_base():
    f = customers(recency_days=[100.0, 200.0], tenure_days=[500.0, 500.0],
                  orders_total=[4.0, 4.0])
    got = segment(f, in_base(f["recency_days"], 180), pd.Series([0.1, np.nan]),
                  pd.Series([0.0, 0.0]), pd.Series([True, True]), SegmentPolicy())
    assert got.tolist() == ["active", "lapsed"]


def test_a_policy_with_the_old_lapsed_setting_is_refused(tmp_path: Path):
    old = tmp_path / "old.toml"
    old.write_text(DEFAULT_POLICY.read_text().replace(
        "[segments]\n", "[segments]\nlapsed_after_days = 365\n"))
    with pytest.raises(PolicyError, match=r"lapsed_after_days is no longer read.*--base-days"):
        SegmentPolicy.load(old)


def test_tier_cuts_come_from_the_recorded_percentiles():
    percentiles = list(np.arange(101) * 2.0)  # spend p-th percentile = 2p
    assert tier_cut_points(percentiles, SegmentPolicy()) == (100.0, 160.0)
    assert tier_cut_points(None, SegmentPolicy()) == (np.inf, np.inf)


def test_spend_tiers_and_expected_spend():
    spend = pd.Series([0.0, 0.0, 10.0, 50.0, np.nan, 200.0])
    assert spend_tiers(spend, (0.0, 50.0)).tolist() == [
        "low", "low", "medium", "medium", "low", "high"]
    f = customers(spend_365d=[365.0, -20.0, np.nan])
    assert expected_spend(f, SegmentPolicy(horizon_days=90)).tolist() == [90.0, 0.0, 0.0]


def test_reasons_name_the_features_that_raise_the_score():
    contrib = pd.DataFrame({"recency_days": [1.2, -0.5], "orders_90d": [0.3, -0.1],
                            "email_open_rate_90d": [-0.4, 0.2]})
    values = pd.DataFrame({"recency_days": [143.0, 3.0], "orders_90d": [0.0, 2.0],
                           "email_open_rate_90d": [0.5, 0.25]})
    got = reasons(contrib, values, top=3)
    assert got[0] == "Days since the last order: 143; Orders in the last 90 days: 0"
    assert got[1] == f"{readable('email_open_rate_90d')}: 0.25"


def test_a_bad_policy_file_is_named(tmp_path: Path):
    broken = tmp_path / "p.toml"
    broken.write_text(DEFAULT_POLICY.read_text().replace("quantiles = [0.5, 0.8]",
                                                         "quantiles = [0.8, 0.5]"))
    with pytest.raises(PolicyError, match=r"spend_tier\.quantiles must be two numbers"):
        SegmentPolicy.load(broken)
    missing = tmp_path / "m.toml"
    missing.write_text("[segments]\nnew_within_days = 30\n")
    with pytest.raises(PolicyError, match=r"m.toml: missing or malformed setting"):
        SegmentPolicy.load(missing)
