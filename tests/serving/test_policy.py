"""The segmentation policy on hand-made customers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.labels import in_base
from models.churn_model import percentile_rank
from serving.policy import (
    DEFAULT_POLICY,
    PolicyError,
    SegmentPolicy,
    expected_spend,
    reasons,
    risk_bands,
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


def test_win_back_on_margin_leaves_out_customers_a_coupon_loses_money_on(tmp_path: Path):
    f = customers(recency_days=[400.0] * 4, tenure_days=[900.0] * 4, orders_total=[3.0] * 4)
    base, churn = in_base(f["recency_days"], 365), pd.Series([np.nan] * 4)
    value, reach = pd.Series([0.0] * 4), pd.Series([True] * 4)
    # Incremental spend, and the probability of buying when contacted (every buyer redeems).
    uplift = np.array([12.0, 12.0, 3.0, 12.0])
    buy = np.array([0.1, 0.9, 0.1, np.nan])
    on_revenue = segment(f, base, churn, value, reach, SegmentPolicy(), uplift, buy)
    assert on_revenue.tolist() == ["win_back"] * 4
    changed = tmp_path / "margin.toml"
    changed.write_text(DEFAULT_POLICY.read_text()
                       .replace("margin_rate = 1.0", "margin_rate = 0.4")
                       .replace("redemption_cost = 0.0", "redemption_cost = 3.0"))
    policy = SegmentPolicy.load(changed)
    # 0.4 x 12 - 3 x 0.1 = 4.5 > 2; 0.4 x 12 - 3 x 0.9 = 2.1 > 2; 0.4 x 3 - 0.3 = 0.9 < 2;
    # no probability of buying: margin unknown, so not contacted.
    on_margin = segment(f, base, churn, value, reach, policy, uplift, buy)
    assert on_margin.tolist() == ["win_back", "win_back", "lapsed", "lapsed"]
    costly = SegmentPolicy(margin_rate=0.4, redemption_cost=3.5)
    assert segment(f, base, churn, value, reach, costly, uplift, buy).tolist() == [
        "win_back", "lapsed", "lapsed", "lapsed"]


def test_a_margin_rate_outside_zero_to_one_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEFAULT_POLICY.read_text().replace("margin_rate = 1.0", "margin_rate = 1.5"))
    with pytest.raises(PolicyError, match=r"win_back.margin_rate .* at most 1 \(got 1.5\)"):
        SegmentPolicy.load(bad)


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
    with pytest.raises(PolicyError, match=r"lapsed_after_days is no longer read.*base_days"):
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


def test_reasons_name_the_features_that_raise_the_score_in_words():
    names = ["recency_days", "orders_90d", "email_open_rate_90d"]
    contrib = np.array([[1.2, 0.3, -0.4], [-0.5, -0.1, 0.2]])
    values = np.array([[143.0, 0.0, np.nan], [3.0, 2.0, 0.25]])
    typical = {"recency_days": 35.0, "orders_90d": 1.0}
    got = reasons(contrib, values, names, top=3, typical=typical)
    assert got[0] == [
        {"feature": "recency_days", "label": "Days since last order", "value": 143.0,
         "unit": "days", "typical": 35.0, "contribution": 1.2,
         "text": "Days since last order: 143 days (typical customer: 35)"},
        {"feature": "orders_90d", "label": "Orders in the last 3 months", "value": 0.0,
         "unit": "orders", "typical": 1.0, "contribution": 0.3,
         "text": "Orders in the last 3 months: 0 orders (typical customer: 1)"}]
    assert got[1] == [{"feature": "email_open_rate_90d",
                       "label": "E-mail open rate, last 3 months", "value": 0.25,
                       "unit": "(share)", "typical": None, "contribution": 0.2,
                       "text": "E-mail open rate, last 3 months: 0.25 (share)"}]
    assert reasons(contrib, values, names, top=1)[0][0]["feature"] == "recency_days"
    # A feature that barely varied where the model was fitted is never a reason.
    quiet = reasons(contrib, values, names, top=3, quiet=["recency_days"])
    assert [r["feature"] for r in quiet[0]] == ["orders_90d"]


def test_risk_bands_cut_at_the_policy_and_leave_the_unscored_out(tmp_path: Path):
    probability = np.array([0.1, 0.25, 0.49, 0.5, 0.9, np.nan])
    assert risk_bands(probability, (0.25, 0.5)).tolist() == [
        "low", "medium", "medium", "high", "high", None]
    # The packaged policy cuts at percentiles of the model's base: 50 and 80.
    packaged = SegmentPolicy.load(DEFAULT_POLICY)
    assert (packaged.risk_by, packaged.risk_cuts) == ("percentile", (50.0, 80.0))
    percentile = np.array([10.0, 50.0, 79.9, 80.0, 99.0, np.nan])
    assert risk_bands(percentile, packaged.risk_cuts).tolist() == [
        "low", "medium", "medium", "high", "high", None]
    own = tmp_path / "p.toml"
    by_probability = DEFAULT_POLICY.read_text().replace('by = "percentile"',
                                                        'by = "probability"')
    own.write_text(by_probability.replace("cuts = [50, 80]", "cuts = [0.4, 0.8]"))
    assert risk_bands(probability, SegmentPolicy.load(own).risk_cuts).tolist() == [
        "low", "low", "medium", "medium", "high", None]
    own.write_text(by_probability.replace("cuts = [50, 80]", "cuts = [0.8, 0.4]"))
    with pytest.raises(PolicyError, match=r"risk_band\.cuts must be two probabilities"):
        SegmentPolicy.load(own)
    own.write_text(DEFAULT_POLICY.read_text().replace("cuts = [50, 80]", "cuts = [50, 180]"))
    with pytest.raises(PolicyError, match=r"risk_band\.cuts must be two percentiles"):
        SegmentPolicy.load(own)
    # A policy file written before risk bands existed keeps working with the defaults.
    older = tmp_path / "older.toml"
    text = DEFAULT_POLICY.read_text()
    older.write_text(text[:text.index("[risk_band]")] + text[text.index("[reasons]"):])
    assert SegmentPolicy.load(older).risk_cuts == (50.0, 80.0)


def test_churn_percentile_reads_the_recorded_base():
    percentiles = list(np.linspace(0.0, 1.0, 101))  # probabilities spread evenly
    assert percentile_rank(np.array([0.0, 0.25, 0.5, 1.0, np.nan]), percentiles)[:4].tolist() \
        == pytest.approx([0.0, 25.0, 50.0, 100.0])
    assert np.isnan(percentile_rank(np.array([np.nan]), percentiles)[0])
    # A plateau (isotonic calibration) ranks in its middle, not at one end.
    plateau = [0.1] * 41 + list(np.linspace(0.2, 0.9, 60))
    assert percentile_rank(np.array([0.1]), plateau)[0] == pytest.approx(20.0)
    assert np.isnan(percentile_rank(np.array([0.3]), None)[0])


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


@pytest.mark.parametrize(("old", "new", "message"), [
    ("uses_uplift = true", 'uses_uplift = "false"', r"uses_uplift must be true or false"),
    ("contact_cost = 2.0", "contact_cost = nan", r"win_back.contact_cost must be a finite"),
    ("min_value_at_risk = 50.0", "min_value_at_risk = -5", r"min_value_at_risk must be a"),
    ("new_within_days = 90", "new_within_days = inf", r"new_within_days must be a finite"),
    ("at_risk_probability = 0.5", "at_risk_probability = nan", r"at_risk_probability must"),
    ("contact_cost = 2.0", "contact_cots = 2.0",
     r"unknown setting win_back\.contact_cots \(did you mean win_back\.contact_cost\?\)"),
    ("at_risk_probability = 0.5", 'at_risk_probability = "0.5"',
     r"segments\.at_risk_probability must be a number, without quotes \(got '0\.5'\)"),
    ("horizon_days = 90", "horizon_days = 0", r"value\.horizon_days must be more than 0 days"),
    ("top = 3", "top = 2.5", r"reasons\.top must be a whole number"),
    ("[reasons]", "[reason]", r"unknown section \[reason\] \(did you mean reasons\?\)"),
    ("cuts = [50, 80]", 'cuts = ["50", 80]', r"risk_band\.cuts must be a list of numbers"),
])
def test_a_policy_value_of_the_wrong_kind_is_refused(tmp_path: Path, old, new, message):
    policy = tmp_path / "p.toml"
    assert old in DEFAULT_POLICY.read_text()
    policy.write_text(DEFAULT_POLICY.read_text().replace(old, new, 1))
    with pytest.raises(PolicyError, match=message):
        SegmentPolicy.load(policy)
