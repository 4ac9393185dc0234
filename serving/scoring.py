"""Scores for a frame of features: churn probability, value at risk, segment and reasons.

Used by the batch job and the online service alike, so both give the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving.champion import LoadedModel
from serving.policy import (
    ArrayLike,
    SegmentPolicy,
    expected_spend,
    reasons,
    risk_bands,
    segment,
    spend_tiers,
    tier_cut_points,
)

OUTPUT_COLUMNS = ("customer_id", "as_of", "churn_probability", "churn_percentile", "risk_band",
                  "value_at_risk", "uplift_spend", "uplift_conversion", "uplift_order_value",
                  "segment", "spend_tier", "contactable",
                  "reasons", "model_versions")


def score_features(features: pd.DataFrame, contactable: ArrayLike, loaded: LoadedModel,
                   policy: SegmentPolicy,
                   tier_cuts: tuple[float, float] | None = None,
                   explain: bool = True) -> pd.DataFrame:
    """One output row per feature row (``customer_id``, ``as_of`` and the registry's features).

    ``tier_cuts`` are the spend amounts between low/medium and medium/high; without them
    they are the policy's quantiles of the spend the model recorded. ``explain=False`` leaves
    ``reasons`` empty, which makes scoring many times faster (TreeSHAP costs far more than
    predict).
    """
    columns = score_matrix(features["customer_id"].to_numpy(), features["as_of"].to_numpy(),
                           features[loaded.model.features].to_numpy(dtype=np.float64),
                           contactable, loaded, policy, tier_cuts, explain)
    return pd.DataFrame(columns, columns=list(OUTPUT_COLUMNS))


def score_matrix(ids: np.ndarray, as_of: np.ndarray | None, matrix: np.ndarray,
                 contactable: ArrayLike, loaded: LoadedModel, policy: SegmentPolicy,
                 tier_cuts: tuple[float, float] | None = None,
                 explain: bool = True) -> dict[str, np.ndarray]:
    """``score_features`` on a float matrix whose columns are the model's features, as one
    array per output column (what the service turns into JSON without a DataFrame).

    The churn model speaks for its own base only (an order within the base window it was
    trained for); others get no probability.
    """
    names = loaded.model.features
    columns = {name: matrix[:, i] for i, name in enumerate(names)}
    if tier_cuts is None:
        tier_cuts = tier_cut_points(loaded.model.spend_percentiles, policy)
    base = loaded.model.in_base(columns["recency_days"])
    probability = np.full(len(matrix), np.nan)
    if base.any():
        probability[base] = loaded.model.predict_proba_matrix(
            matrix if base.all() else matrix[base])
    why = np.full(len(matrix), None, dtype=object)
    at_risk = np.nan_to_num(probability, nan=0.0) >= policy.at_risk_probability
    # Reasons (TreeSHAP, far slower than prediction) for those at risk: the ones contacted.
    if explain and policy.top_reasons and at_risk.any():
        contributions = loaded.model.contributions_matrix(matrix[at_risk])
        chosen = reasons(contributions, matrix[at_risk], names, policy.top_reasons)
        for row, listed in zip(np.flatnonzero(at_risk), chosen, strict=True):
            why[row] = listed
    value = probability * expected_spend(columns, policy)
    reach = _flags(contactable, len(matrix))
    effects = {name: np.full(len(matrix), np.nan) for name in UPLIFT_COLUMNS}
    uplift = buy = None
    if loaded.uplift is not None and policy.uses_uplift and len(matrix):
        predicted = loaded.uplift.model.predict_arm_parts(matrix, loaded.uplift.arm)
        effects = {name: predicted[name] for name in UPLIFT_COLUMNS}
        uplift, buy = predicted["uplift_spend"], predicted["buy_if_contacted"]
    return {
        "customer_id": np.asarray(ids),
        "as_of": np.full(len(matrix), None, dtype=object) if as_of is None else as_of,
        "churn_probability": probability,
        "churn_percentile": np.round(loaded.model.churn_percentile(probability), 1),
        "risk_band": risk_bands(probability, policy.risk_cuts),
        "value_at_risk": value,
        **effects,
        "segment": segment(columns, base, probability, np.nan_to_num(value, nan=0.0), reach,
                           policy, uplift, buy),
        "spend_tier": spend_tiers(columns["spend_365d"], tier_cuts),
        "contactable": reach,
        "reasons": why,
        "model_versions": np.full(len(matrix), loaded.label, dtype=object),
    }


UPLIFT_COLUMNS = ("uplift_spend", "uplift_conversion", "uplift_order_value")


def _flags(contactable: ArrayLike, rows: int) -> np.ndarray:
    """Booleans, with a missing value read as True (contactable unless told otherwise)."""
    values = np.asarray(contactable)
    if values.dtype == bool:
        return values if values.shape else np.full(rows, bool(values))
    return np.asarray(pd.Series(values, dtype=object).fillna(True), dtype=bool)


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
