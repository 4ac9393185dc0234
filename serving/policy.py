"""The segmentation policy: features and churn scores -> segment, tier, value, reasons.

Thresholds come from one TOML file (serving/segments.toml holds the documented defaults).
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import ChurnError, setting
from features.registry import FEATURES_BY_NAME, unit_of

ArrayLike = np.ndarray | pd.Series
Columns = Mapping[str, ArrayLike] | pd.DataFrame

DEFAULT_POLICY = Path(__file__).with_name("segments.toml")
SEGMENTS = ("new", "active", "at_risk", "lapsed", "win_back")
SPEND_TIERS = ("low", "medium", "high")
RISK_BANDS = ("low", "medium", "high")


class PolicyError(ChurnError, ValueError):
    """A policy file that cannot be used."""


TIER_SOURCES = ("last_year", "predicted")
RISK_BY = ("probability", "percentile")


@dataclass(frozen=True)
class SegmentPolicy:
    """The thresholds of segments.toml, typed."""

    new_within_days: float = 90
    at_risk_probability: float = 0.5
    min_value_at_risk: float = 50.0
    uses_uplift: bool = True
    contact_cost: float = 2.0
    margin_rate: float = 1.0
    redemption_cost: float = 0.0
    uplift_arm: str = ""
    horizon_days: float = 90
    tier_quantiles: tuple[float, float] = (0.5, 0.8)
    # What spend tiers cut: last year's spend, or (with a value champion) predicted spend.
    tier_source: str = "last_year"
    top_reasons: int = 3
    risk_cuts: tuple[float, float] = (50.0, 80.0)
    # What risk bands cut: "percentile" (cuts are percentiles of the model's base at its test
    # cutoff, 0-100: bands relative to the base, which never disagree with churn_percentile)
    # or "probability" (cuts are probabilities).
    risk_by: str = "percentile"

    @classmethod
    def load(cls, path: Path = DEFAULT_POLICY) -> SegmentPolicy:
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise PolicyError(f"policy {path}: {err}") from None
        if "lapsed_after_days" in raw.get("segments", {}):
            raise PolicyError(
                f"policy {path}: segments.lapsed_after_days is no longer read: lapsed now means "
                f"outside the churn model's own base (its {setting('base_days')}); "
                f"remove the line")
        problem = settings_problem(raw)
        if problem:
            raise PolicyError(f"policy {path}: {problem}")
        try:
            policy = cls(
                new_within_days=float(raw["segments"]["new_within_days"]),
                at_risk_probability=float(raw["segments"]["at_risk_probability"]),
                min_value_at_risk=float(raw["win_back"]["min_value_at_risk"]),
                uses_uplift=_flag(raw["win_back"].get("uses_uplift", True),
                                  "win_back.uses_uplift"),
                contact_cost=float(raw["win_back"].get("contact_cost", 2.0)),
                margin_rate=float(raw["win_back"].get("margin_rate", 1.0)),
                redemption_cost=float(raw["win_back"].get("redemption_cost", 0.0)),
                uplift_arm=str(raw["win_back"].get("uplift_arm", "")),
                horizon_days=float(raw["value"]["horizon_days"]),
                tier_quantiles=tuple(float(q) for q in raw["spend_tier"]["quantiles"]),
                tier_source=str(raw["spend_tier"].get("source", "last_year")),
                top_reasons=int(raw["reasons"]["top"]),
                risk_cuts=tuple(float(c) for c in raw.get("risk_band", {}).get(
                    "cuts", cls.risk_cuts)),
                risk_by=str(raw.get("risk_band", {}).get("by", cls.risk_by)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise PolicyError(f"policy {path}: missing or malformed setting {err}") from None
        policy.check(path)
        return policy

    def check(self, path: Path | str = "policy") -> None:
        numbers = {"segments.new_within_days": self.new_within_days,
                   "win_back.min_value_at_risk": self.min_value_at_risk,
                   "win_back.contact_cost": self.contact_cost,
                   "win_back.redemption_cost": self.redemption_cost,
                   "value.horizon_days": self.horizon_days}
        for name, value in numbers.items():
            if not np.isfinite(value) or value < 0:
                raise PolicyError(f"{path}: {name} must be a finite number, 0 or more "
                                  f"(got {value})")
        if self.horizon_days <= 0:
            raise PolicyError(f"{path}: value.horizon_days must be more than 0 days (got "
                              f"{self.horizon_days:g}): value at risk is spend over it")
        cuts = self.tier_quantiles
        if len(cuts) != 2 or not 0 < cuts[0] < cuts[1] < 1:
            raise PolicyError(f"{path}: spend_tier.quantiles must be two numbers, "
                              f"0 < first < second < 1")
        if self.tier_source not in TIER_SOURCES:
            raise PolicyError(f"{path}: spend_tier.source must be one of "
                              f"{', '.join(TIER_SOURCES)}, not {self.tier_source!r}")
        risk = self.risk_cuts
        if self.risk_by not in RISK_BY:
            raise PolicyError(f"{path}: risk_band.by must be one of {', '.join(RISK_BY)}, not "
                              f"{self.risk_by!r}")
        if self.risk_by == "percentile":
            if len(risk) != 2 or not 0 < risk[0] < risk[1] < 100:
                raise PolicyError(f"{path}: risk_band.cuts must be two percentiles, "
                                  f"0 < first < second < 100")
        elif len(risk) != 2 or not 0 < risk[0] < risk[1] < 1:
            raise PolicyError(f"{path}: risk_band.cuts must be two probabilities, "
                              f"0 < first < second < 1")
        if not 0 < self.at_risk_probability < 1:
            raise PolicyError(f"{path}: segments.at_risk_probability must be between 0 and 1")
        if self.contact_cost < 0:
            raise PolicyError(f"{path}: win_back.contact_cost must be 0 or more")
        if not 0 < self.margin_rate <= 1:
            raise PolicyError(f"{path}: win_back.margin_rate is the share of incremental spend "
                              f"kept as margin, more than 0 and at most 1 "
                              f"(got {self.margin_rate})")
        if self.top_reasons < 0:
            raise PolicyError(f"{path}: reasons.top must be 0 or more")


# Every setting a policy file may hold, by section, and the kind of value it takes.
SETTINGS: dict[str, dict[str, str]] = {
    "segments": {"new_within_days": "number", "at_risk_probability": "number"},
    "win_back": {"uses_uplift": "true or false", "contact_cost": "number",
                 "margin_rate": "number", "redemption_cost": "number", "uplift_arm": "text",
                 "min_value_at_risk": "number"},
    "value": {"horizon_days": "number"},
    "spend_tier": {"quantiles": "list of numbers", "source": "text"},
    "risk_band": {"by": "text", "cuts": "list of numbers"},
    "reasons": {"top": "whole number"},
}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


KINDS = {
    "number": _is_number,
    "whole number": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "true or false": lambda v: isinstance(v, bool),
    "text": lambda v: isinstance(v, str),
    "list of numbers": lambda v: isinstance(v, list) and all(_is_number(x) for x in v),
}


SAYS = {"number": "a number, without quotes", "whole number": "a whole number, without quotes",
        "true or false": "true or false, without quotes", "text": "text in quotes",
        "list of numbers": "a list of numbers, e.g. [0.5, 0.8]"}


def settings_problem(raw: dict) -> str | None:
    """The first unknown section or setting (with the known one it looks like) or value of
    the wrong kind (a quoted number, say) in a parsed policy file; None when all are known."""
    for section, values in raw.items():
        known = SETTINGS.get(section)
        if known is None or not isinstance(values, dict):
            return f"unknown section [{section}]{_did_you_mean(section, SETTINGS)}"
        for key, value in values.items():
            if key not in known:
                return (f"unknown setting {section}.{key}"
                        f"{_did_you_mean(key, known, section + '.')}")
            if not KINDS[known[key]](value):
                return f"{section}.{key} must be {SAYS[known[key]]} (got {value!r})"
    return None


def _did_you_mean(name: str, known: dict, prefix: str = "") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    listed = ", ".join(prefix + k for k in known)
    return f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {listed})"


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, without quotes (got {value!r})")
    return value


def reasons(contributions: np.ndarray, values: np.ndarray, names: list[str],
            top: int, typical: dict[str, float] | None = None,
            quiet: list[str] | None = None) -> list[list[dict]]:
    """Per row, the ``top`` features that raised the churn score most (largest positive
    contribution first), each as ``{feature, label, value, unit, typical, contribution,
    text}``: the column, its label in words, the customer's value (None when unknown), its
    unit, the median over the model's training rows, the contribution to the churn log-odds,
    and a sentence. Features in ``quiet`` (barely varying where the model was fitted) are
    never named. Columns of both arrays are ``names``."""
    typical, skip = typical or {}, set(quiet or ())
    usable = np.array([name not in skip for name in names])
    ranked = np.where(usable, contributions, -np.inf)
    order = np.argsort(-ranked, axis=1)[:, :top]
    labels = [FEATURES_BY_NAME[name].label for name in names]
    units = [unit_of(name) for name in names]
    out = []
    for row, picks in enumerate(order):
        out.append([_reason(names[j], labels[j], units[j], _value(values[row, j]),
                            typical.get(names[j]), float(contributions[row, j]))
                    for j in picks if np.isfinite(ranked[row, j]) and ranked[row, j] > 0])
    return out


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.2f}"


def _reason(feature: str, label: str, unit: str, value: float | None, typical: float | None,
            contribution: float) -> dict:
    said = "unknown" if value is None else f"{_number(value)} {unit}"
    usual = "" if typical is None else f" (typical customer: {_number(typical)})"
    return {"feature": feature, "label": label, "value": value, "unit": unit,
            "typical": None if typical is None else round(typical, 4),
            "contribution": round(contribution, 4), "text": f"{label}: {said}{usual}"}


def _value(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 4)


def risk_bands(probability: ArrayLike, cuts: tuple[float, float]) -> np.ndarray:
    """low below the first cut, high from the second, medium between; None without a
    probability (outside the model's base)."""
    p = np.asarray(probability, dtype=float)
    with np.errstate(invalid="ignore"):
        bands = np.where(p >= cuts[1], "high", np.where(p >= cuts[0], "medium", "low"))
    return np.where(np.isnan(p), None, bands.astype(object))


def tier_cut_points(percentiles: list[float] | None,
                    policy: SegmentPolicy) -> tuple[float, float]:
    """The spend amounts at the policy's tier quantiles, read off the 0th..100th percentiles
    of spend that the churn model recorded over its test base (so batch and online cut the
    same way). A model without them cuts nothing: every customer is ``low``."""
    if not percentiles:
        return (np.inf, np.inf)
    grid = np.arange(len(percentiles)) * 100.0 / (len(percentiles) - 1)
    low, high = np.interp([q * 100.0 for q in policy.tier_quantiles], grid, percentiles)
    return float(low), float(high)


def spend_tiers(spend: ArrayLike, cuts: tuple[float, float]) -> np.ndarray:
    """low up to the first cut, high above the second, medium between (missing spend is 0)."""
    filled = np.nan_to_num(np.asarray(spend, dtype=float), nan=0.0)
    low, high = cuts
    return np.where(filled > high, "high", np.where(filled > low, "medium", "low"))


def segment(features: Columns, in_base: ArrayLike, churn_probability: ArrayLike,
            value_at_risk: ArrayLike, contactable: ArrayLike, policy: SegmentPolicy,
            uplift_spend: ArrayLike | None = None,
            buy_if_contacted: ArrayLike | None = None) -> np.ndarray:
    """The lifecycle segment of each customer; the first rule that fits wins.

    ``in_base`` says who is in the churn model's base: a customer with orders but outside it
    is lapsed.

    With ``uplift_spend`` (the campaign's predicted incremental spend), win_back is a lapsed
    or at-risk, contactable customer whose incremental margin (``incremental_margin``) beats
    the contact cost, checked first. Without it, win_back falls back to at-risk customers
    with enough value at risk.
    """
    recency = np.asarray(features["recency_days"], dtype=float)
    tenure = np.nan_to_num(np.asarray(features["tenure_days"], dtype=float), nan=0.0)
    with np.errstate(invalid="ignore"):
        lapsed = ~np.asarray(in_base, dtype=bool) & ~np.isnan(recency)
        new = (tenure < policy.new_within_days) | (
            np.asarray(features["orders_total"], dtype=float) == 0)
        at_risk = np.asarray(churn_probability, dtype=float) >= policy.at_risk_probability
        worth = np.asarray(value_at_risk, dtype=float) >= policy.min_value_at_risk
    reach = np.asarray(contactable, dtype=bool)
    if uplift_spend is not None:
        with np.errstate(invalid="ignore"):
            moved = incremental_margin(uplift_spend, buy_if_contacted, policy) > \
                policy.contact_cost
        win_back = (lapsed | at_risk) & reach & moved
        return np.select([win_back, lapsed, new, at_risk],
                         ["win_back", "lapsed", "new", "at_risk"], "active")
    win_back = at_risk & reach & worth
    return np.select([lapsed, new, win_back, at_risk],
                     ["lapsed", "new", "win_back", "at_risk"], "active")


def incremental_margin(uplift_spend: ArrayLike, buy_if_contacted: ArrayLike | None,
                       policy: SegmentPolicy) -> np.ndarray:
    """What a contact earns before its own cost: ``margin_rate`` x incremental spend, less
    ``redemption_cost`` x the probability of buying when contacted (every buyer redeems).

    The spend uplift already carries what a discount takes off the baskets of those who
    buy; the margin rate turns revenue into margin, and the redemption cost charges each
    expected redemption, including those of customers who would have bought anyway. With a
    redemption cost but no probability of buying (an uplift model without its two parts)
    the margin is unknown (NaN), and such customers are not put in win_back.
    """
    margin = policy.margin_rate * np.asarray(uplift_spend, dtype=float)
    if policy.redemption_cost == 0:
        return margin
    if buy_if_contacted is None:
        return np.full(len(margin), np.nan)
    return margin - policy.redemption_cost * np.asarray(buy_if_contacted, dtype=float)


def expected_spend(features: Columns, policy: SegmentPolicy) -> np.ndarray:
    """Spend expected over the horizon at the customer's last-year run rate."""
    spend = np.nan_to_num(np.asarray(features["spend_365d"], dtype=float), nan=0.0)
    return np.clip(spend, 0.0, None) * policy.horizon_days / 365.0
