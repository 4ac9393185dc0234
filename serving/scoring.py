"""Scores for a frame of features: churn probability, value at risk, segment and reasons.

Used by the batch job and the online service alike, so both give the same numbers.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from models.forest import shared_inputs
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
                  "value_at_risk", "uplift_spend", "uplift_spend_low", "uplift_spend_high",
                  "uplift_conversion", "uplift_order_value", "segment", "spend_tier", "contactable",
                  "reasons", "model_versions")


def tier_cuts_for(loaded: LoadedModel, policy: SegmentPolicy) -> tuple[float, float]:
    """The spend amounts between tiers: over predicted spend when the policy asks and a value
    champion answers, else over last year's spend."""
    if policy.tier_source == "predicted" and loaded.value is not None:
        return tier_cut_points(loaded.value.model.spend_percentiles, policy)
    return tier_cut_points(loaded.model.spend_percentiles, policy)


def extra_columns(loaded: LoadedModel) -> dict[str, str]:
    """The columns the propensity and value champions add, by name, with their kind
    (``double`` or ``date``); none without those champions."""
    out = {}
    if loaded.propensity is not None:
        out[f"purchase_probability_{loaded.propensity.horizon_days}d"] = "double"
    if loaded.value is not None:
        days = loaded.value.horizon_days
        out |= {f"predicted_orders_{days}d": "double", f"predicted_spend_{days}d": "double",
                "p_alive": "double", "next_order_expected_by": "date"}
    return out


def output_columns(loaded: LoadedModel) -> list[str]:
    """Every output column, in order: the value columns follow ``value_at_risk``."""
    base = list(OUTPUT_COLUMNS)
    at = base.index("value_at_risk") + 1
    return [*base[:at], *extra_columns(loaded), *base[at:]]


def _first_day(as_of: np.ndarray | None) -> date | None:
    if as_of is None or not len(as_of) or as_of[0] is None:
        return None
    return pd.Timestamp(as_of[0]).date()


def value_outputs(loaded: LoadedModel, matrix: np.ndarray, columns: dict[str, np.ndarray],
                  as_of: np.ndarray | None) -> dict[str, np.ndarray]:
    """Purchase probability, predicted orders and spend, P(alive) and the day the next order
    is due, for customers with a past order (others get none)."""
    out: dict[str, np.ndarray] = {}
    bought = ~np.isnan(columns["recency_days"])
    if loaded.propensity is not None:
        probability = np.full(len(matrix), np.nan)
        if bought.any():
            probability[bought] = 1.0 - loaded.propensity.model.predict_proba_matrix(
                matrix[bought])
        out[f"purchase_probability_{loaded.propensity.horizon_days}d"] = probability
    if loaded.value is not None:
        model, days = loaded.value.model, loaded.value.horizon_days
        spend, orders, alive = (np.full(len(matrix), np.nan) for _ in range(3))
        due = np.full(len(matrix), None, dtype=object)
        if bought.any():
            frame = pd.DataFrame(matrix[bought], columns=loaded.model.features)
            spend[bought], orders[bought] = model.predict_spend(frame), model.predict_orders(frame)
            alive[bought] = model.p_alive(frame)
            day = _first_day(as_of)
            if day is not None:
                due[bought] = model.next_order_due(orders[bought], day)
        out |= {f"predicted_orders_{days}d": orders, f"predicted_spend_{days}d": spend,
                "p_alive": alive, "next_order_expected_by": due}
    return out


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
    return pd.DataFrame(columns, columns=output_columns(loaded))


def score_matrix(ids: np.ndarray, as_of: np.ndarray | None, matrix: np.ndarray,
                 contactable: ArrayLike, loaded: LoadedModel, policy: SegmentPolicy,
                 tier_cuts: tuple[float, float] | None = None,
                 explain: bool = True) -> dict[str, np.ndarray]:
    """``score_features`` on a float matrix whose columns are the model's features, as one
    array per output column (what the service turns into JSON without a DataFrame).

    The churn model speaks for its own base only (an order within the base window it was
    trained for); others get no probability.
    """
    with shared_inputs():  # the rows are read once for the dozen boosters that score them
        return _score_matrix(ids, as_of, matrix, contactable, loaded, policy, tier_cuts,
                             explain)


def _score_matrix(ids: np.ndarray, as_of: np.ndarray | None, matrix: np.ndarray,
                  contactable: ArrayLike, loaded: LoadedModel, policy: SegmentPolicy,
                  tier_cuts: tuple[float, float] | None, explain: bool
                  ) -> dict[str, np.ndarray]:
    names = loaded.model.features
    columns = {name: matrix[:, i] for i, name in enumerate(names)}
    if tier_cuts is None:
        tier_cuts = tier_cuts_for(loaded, policy)
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
        chosen = reasons(contributions, matrix[at_risk], names, policy.top_reasons,
                         loaded.model.typical, loaded.model.quiet)
        for row, listed in zip(np.flatnonzero(at_risk), chosen, strict=True):
            why[row] = listed
    forecasts = value_outputs(loaded, matrix, columns, as_of)
    percentile = np.round(loaded.model.churn_percentile(probability), 1)
    # With a value champion, the spend at risk is what the customer is forecast to spend
    # (over the policy's horizon); without one, last year's run rate.
    if loaded.value is not None:
        days = loaded.value.horizon_days
        spend = np.nan_to_num(forecasts[f"predicted_spend_{days}d"]) * policy.horizon_days / days
    else:
        spend = expected_spend(columns, policy)
    value = probability * spend
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
        "churn_percentile": percentile,
        "risk_band": risk_bands(percentile if policy.risk_by == "percentile" else probability,
                                policy.risk_cuts),
        "value_at_risk": value,
        **forecasts,
        **effects,
        "segment": segment(columns, base, probability, np.nan_to_num(value, nan=0.0), reach,
                           policy, uplift, buy),
        "spend_tier": spend_tiers(_tier_spend(loaded, policy, columns, forecasts), tier_cuts),
        "contactable": reach,
        "reasons": why,
        "model_versions": np.full(len(matrix), loaded.label, dtype=object),
    }


UPLIFT_COLUMNS = ("uplift_spend", "uplift_spend_low", "uplift_spend_high", "uplift_conversion",
                  "uplift_order_value")


def _tier_spend(loaded: LoadedModel, policy: SegmentPolicy, columns: dict[str, np.ndarray],
                forecasts: dict[str, np.ndarray]) -> np.ndarray:
    if policy.tier_source == "predicted" and loaded.value is not None:
        return forecasts[f"predicted_spend_{loaded.value.horizon_days}d"]
    return columns["spend_365d"]


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
