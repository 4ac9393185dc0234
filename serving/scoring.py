"""Scores for a frame of features: churn probability, value at risk, segment and reasons.

Used by the batch job and the online service alike, so both give the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.champion import LoadedModel
from serving.policy import (
    SegmentPolicy,
    expected_spend,
    reasons,
    segment,
    spend_tiers,
    tier_cut_points,
)

OUTPUT_COLUMNS = ("customer_id", "as_of", "churn_probability", "value_at_risk", "uplift_spend",
                  "segment", "spend_tier", "contactable", "reasons", "model_versions")


def in_base(features: pd.DataFrame, policy: SegmentPolicy) -> pd.Series:
    """Customers the churn model speaks for: an order within the base window."""
    return features["recency_days"].lt(policy.lapsed_after_days)


def score_features(features: pd.DataFrame, contactable: pd.Series, loaded: LoadedModel,
                   policy: SegmentPolicy,
                   tier_cuts: tuple[float, float] | None = None,
                   explain: bool = True) -> pd.DataFrame:
    """One output row per feature row (``customer_id``, ``as_of`` and the registry's features).

    ``tier_cuts`` are the spend amounts between low/medium and medium/high; without them
    they are the policy's quantiles of the rows given. ``explain=False`` leaves ``reasons``
    empty, which makes scoring many times faster (TreeSHAP costs far more than predict).
    """
    if tier_cuts is None:
        tier_cuts = tier_cut_points(features["spend_365d"], policy)
    base = in_base(features, policy).to_numpy()
    probability = np.full(len(features), np.nan)
    why: list[str | None] = [None] * len(features)
    if base.any():
        probability[base] = loaded.model.predict_proba(features[base])
    # Reasons (TreeSHAP, far slower than prediction) for those at risk: the ones contacted.
    at_risk = np.nan_to_num(probability, nan=0.0) >= policy.at_risk_probability
    if explain and policy.top_reasons and at_risk.any():
        rows = features[at_risk]
        picked = reasons(loaded.model.contributions(rows), rows, policy.top_reasons)
        for i, text in zip(np.flatnonzero(at_risk), picked, strict=True):
            why[i] = text
    churn = pd.Series(probability, index=features.index)
    value = churn * expected_spend(features, policy)
    contactable = contactable.reindex(features.index).fillna(True).astype(bool)
    return pd.DataFrame({
        "customer_id": features["customer_id"],
        "as_of": features["as_of"],
        "churn_probability": churn,
        "value_at_risk": value,
        "uplift_spend": np.nan,
        "segment": segment(features, churn, value.fillna(0.0), contactable, policy),
        "spend_tier": spend_tiers(features["spend_365d"], tier_cuts),
        "contactable": contactable,
        "reasons": why,
        "model_versions": loaded.label,
    }, index=features.index)[list(OUTPUT_COLUMNS)]


def segment_totals(scores: pd.DataFrame) -> pd.DataFrame:
    """Additive per-segment totals of one chunk of scores, for ``segment_summary``."""
    return scores.assign(scored=scores["churn_probability"].notna()).groupby("segment").agg(
        customers=("customer_id", "size"), scored=("scored", "sum"),
        churn_sum=("churn_probability", "sum"), value_at_risk=("value_at_risk", "sum"),
        contactable=("contactable", "sum"))


def segment_summary(totals: list[pd.DataFrame]) -> pd.DataFrame:
    """Customers, mean churn probability, value at risk and contactable count per segment."""
    if not totals:
        return pd.DataFrame(columns=["customers", "mean_churn_probability", "value_at_risk",
                                     "contactable"])
    summed = pd.concat(totals).groupby(level=0).sum()
    summed["mean_churn_probability"] = summed["churn_sum"] / summed["scored"].where(
        summed["scored"] > 0)
    order = [s for s in ("new", "active", "at_risk", "win_back", "lapsed") if s in summed.index]
    return summed.loc[order, ["customers", "mean_churn_probability", "value_at_risk",
                              "contactable"]]
