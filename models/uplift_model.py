"""The fitted uplift model: one learner per arm, the columns it reads, save and load.

Saved as plain files, like the churn model: ``model.json`` (columns, categories, outcome,
and per arm the weighted terms whose sum is the effect) and one LightGBM model text file per
boosted term; a linear term's arrays sit in the JSON. Loading needs LightGBM and NumPy, not
the classes that fitted it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.registry import feature_names
from models.forest import CompiledBooster
from models.uplift_terms import Constant, LinearEffect, Product, Regressor, Term, predict_terms

PARTS = ("conversion", "order_value")


@dataclass
class Effect:
    """One arm's fitted effect: the weighted terms a learner left (see ``predict_terms``).

    ``parts`` (from a two-part model, when the outcome is spend) split it: ``conversion``,
    the change in the probability of buying, and ``order_value``, the change in expected
    spend among buyers (buyers under treatment and under control may be different people,
    so this is the observable difference between the two groups' buyers, not the effect on
    the same customers' baskets).

    ``intervals`` (from the adaptive learner) give each customer the 95% interval of the
    average effect among the customers ranked like them: ``edges`` split the estimates into
    groups, ``low`` and ``high`` are each group's bounds, measured on held-out rows.
    """

    terms: list[Term]
    parts: dict[str, list[Term]] = field(default_factory=dict)
    intervals: dict[str, list[float]] = field(default_factory=dict)

    def predict(self, X: pd.DataFrame, cache: dict | None = None) -> np.ndarray:
        return predict_terms(self.terms, X, cache)

    def predict_part(self, X: pd.DataFrame, part: str, cache: dict | None = None
                     ) -> np.ndarray:
        """One part's estimate, NaN for every row when the model has no parts."""
        if part not in self.parts:
            return np.full(len(X), np.nan)
        return predict_terms(self.parts[part], X, cache)

    def predict_all(self, X: pd.DataFrame, cache: dict | None = None) -> dict[str, np.ndarray]:
        """The effect (``spend``), its ``conversion`` and ``order_value`` parts reconciled
        with it (see ``reconcile``; as fitted for a model saved without what that needs),
        and ``buy_if_contacted``."""
        cache = {} if cache is None else cache
        spend = self.predict(X, cache)
        parts = {part: self.predict_part(X, part, cache) for part in
                 (*PARTS, "buy_if_contacted", "order_value_control")}
        if "order_value_control" in self.parts:
            spreads = tuple(self._constant(X, f"spread_{part}") for part in PARTS)
            parts["conversion"], parts["order_value"] = reconcile(
                spend, parts["conversion"], parts["order_value"], parts["buy_if_contacted"],
                parts["order_value_control"], spreads, self._constant(X, "value_floor"))
        return {"spend": spend, **parts, **self.interval(spend)}

    def interval(self, spend: np.ndarray) -> dict[str, np.ndarray]:
        """``spend_low`` and ``spend_high`` for these estimates: the bounds of the group each
        falls in (NaN for a model without intervals, or a missing estimate)."""
        if not self.intervals:
            return {"spend_low": np.full(len(spend), np.nan),
                    "spend_high": np.full(len(spend), np.nan)}
        group = np.searchsorted(np.asarray(self.intervals["edges"]), spend, side="right")
        missing = np.isnan(spend)
        return {f"spend_{bound}": np.where(missing, np.nan,
                                           np.asarray(self.intervals[bound])[group])
                for bound in ("low", "high")}

    def _constant(self, X: pd.DataFrame, part: str) -> float | None:
        """A part that is one number fixed at fit time (None in a model saved without it)."""
        if part not in self.parts or not len(X):
            return None
        return float(self.predict_part(X.head(1), part)[0])


def reconcile(spend: np.ndarray, conversion: np.ndarray, order_value: np.ndarray,
              buy_treated: np.ndarray, value_control: np.ndarray,
              spreads: tuple[float | None, float | None] = (None, None),
              floor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Conversion and order-value effects that add up to the spend effect.

    With buying probabilities p and spend among buyers v in each group, spend changes by
    p_t v_t - p_c v_c = dp * v_mean + p_mean * dv exactly. The two-part model estimates dp
    and dv on its own; the spend effect comes from the whole model. The gap g between the
    two is shared out as the smallest change to the parts, each measured against its own
    spread s over the fitted rows: dp += g s_p^2 v_mean / D, dv += g s_v^2 p_mean / D with
    D = s_p^2 v_mean^2 + s_v^2 p_mean^2, so the identity holds for the model's effect and a
    spend effect can no longer have the opposite sign to both parts. The conversion effect
    stays one that probabilities can have (P(buy | treated) within [0, 1]); where that bound
    bites (rarely), the identity gives way to it. Without the spreads (an older model) the
    gap is split evenly in spend units. ``floor`` is the least spend among buyers to divide
    by, fixed when the model was fitted (an older model takes a hundredth of these rows'
    mean).
    """
    buy_control = np.clip(buy_treated - conversion, 0.0, 1.0)
    value_treated = value_control + order_value
    p_mean = np.maximum((buy_treated + buy_control) / 2.0, 0.01)
    if floor is None:
        floor = max(float(np.nanmean(np.abs(value_control))) * 0.01, 1e-9)
    v_mean = np.maximum((value_treated + value_control) / 2.0, floor)
    gap = spend - (conversion * v_mean + p_mean * order_value)
    s_p, s_v = spreads
    if not s_p or not s_v:
        reconciled = (conversion + gap / (2.0 * v_mean), order_value + gap / (2.0 * p_mean))
    else:
        share = s_p**2 * v_mean**2 + s_v**2 * p_mean**2
        reconciled = (conversion + gap * s_p**2 * v_mean / share,
                      order_value + gap * s_v**2 * p_mean / share)
    # Still a change in a probability: P(buy | treated) = P(buy | control) + it, in [0, 1].
    # The bound holds 0, so it never flips the sign that agreed with the spend effect.
    return np.clip(reconciled[0], -buy_control, 1.0 - buy_control), reconciled[1]


def _save_booster(booster: lgb.Booster, folder: Path, name: str, saved: dict[int, str]) -> str:
    """The file holding ``booster``: written once, however many terms share it."""
    if id(booster) not in saved:
        booster.save_model(folder / name)
        saved[id(booster)] = name
    return saved[id(booster)]


def _save_terms(terms: list[Term], folder: Path, stem: str, saved: dict[int, str]
                ) -> list[dict]:
    out = []
    for i, (weight, model) in enumerate(terms):
        if isinstance(model, lgb.Booster | CompiledBooster):
            out.append({"weight": weight,
                        "lightgbm": _save_booster(model, folder, f"{stem}_{i}.txt", saved)})
        elif isinstance(model, LinearEffect):
            out.append({"weight": weight, "linear": asdict(model)})
        elif isinstance(model, Product):
            names = [_save_booster(factor, folder, f"{stem}_{i}_{k}.txt", saved)
                     for k, factor in enumerate(model.factors)]
            out.append({"weight": weight, "product": names})
        elif isinstance(model, Constant):
            out.append({"weight": weight, "constant": model.value})
        else:
            raise TypeError(f"cannot save an uplift term of type {type(model).__name__}")
    return out


def _load_term(spec: dict, folder: Path, boosters: dict[str, lgb.Booster],
               wrap: Callable[[lgb.Booster], lgb.Booster] | None = None) -> Regressor:
    def booster(name: str) -> lgb.Booster:
        if name not in boosters:  # a file shared by several terms is loaded once
            loaded = lgb.Booster(model_file=str(folder / name))
            boosters[name] = wrap(loaded) if wrap else loaded
        return boosters[name]

    if "lightgbm" in spec:
        return booster(spec["lightgbm"])
    if "product" in spec:
        return Product(tuple(booster(name) for name in spec["product"]))  # type: ignore[arg-type]
    if "constant" in spec:
        return Constant(float(spec["constant"]))
    return LinearEffect(**spec["linear"])


def _load_terms(specs: list[dict], folder: Path, boosters: dict[str, lgb.Booster],
                wrap: Callable[[lgb.Booster], lgb.Booster] | None = None) -> list[Term]:
    return [(float(spec["weight"]), _load_term(spec, folder, boosters, wrap))
            for spec in specs]

ARTIFACT_KEY = "uplift_model"


@dataclass
class UpliftModel:
    """Estimated effect of each arm against control on the modelled outcome, per customer."""

    learners: dict[str, Effect]
    features: list[str]
    categories: dict[str, list] = field(default_factory=dict)
    outcome: str = "spend"
    winners: dict[str, str] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        return list(self.learners)

    def uses_registry_features(self) -> bool:
        """True when the model reads the feature registry's columns (contract-trained)."""
        return self.features == feature_names()

    def frame(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The model's columns from ``rows``, categories as they were in training."""
        missing = [c for c in self.features if c not in rows.columns]
        if missing:
            raise ValueError(f"uplift model needs columns {missing[:5]}")
        X = rows[self.features].copy()
        for column, levels in self.categories.items():
            X[column] = pd.Categorical(X[column], categories=levels)
        return X

    def predict(self, rows: pd.DataFrame) -> pd.DataFrame:
        """One ``uplift_<arm>`` column per arm, for an arm with parts
        ``uplift_conversion_<arm>`` and ``uplift_order_value_<arm>``, and for one with
        intervals ``uplift_low_<arm>`` and ``uplift_high_<arm>``."""
        X = self.frame(rows)
        columns, cache = {}, {}
        for arm, effect in self.learners.items():
            answers = effect.predict_all(X, cache)
            columns[f"uplift_{arm}"] = answers["spend"]
            for part in PARTS if effect.parts else ():
                columns[f"uplift_{part}_{arm}"] = answers[part]
            for bound in ("low", "high") if effect.intervals else ():
                columns[f"uplift_{bound}_{arm}"] = answers[f"spend_{bound}"]
        return pd.DataFrame(columns, index=rows.index)

    def predict_arm(self, matrix: np.ndarray, arm: str | None = None) -> np.ndarray:
        """Effects of ``arm`` (default: the first) for a float matrix of ``features``."""
        arm = arm or self.arms[0]
        return self.learners[arm].predict(self.frame(pd.DataFrame(matrix, columns=self.features)))

    def predict_arm_parts(self, matrix: np.ndarray, arm: str | None = None
                          ) -> dict[str, np.ndarray]:
        """``uplift_spend`` with its interval (``uplift_spend_low``, ``uplift_spend_high``),
        ``uplift_conversion``, ``uplift_order_value`` and ``buy_if_contacted`` (the
        probability of buying when treated) of ``arm`` for a float matrix of ``features``
        (the parts and interval NaN when the model has none)."""
        effect = self.learners[arm or self.arms[0]]
        X = self.frame(pd.DataFrame(matrix, columns=self.features))
        answers = effect.predict_all(X)  # the two-part boosters serve the effect and parts
        return {"uplift_spend": answers["spend"], "uplift_spend_low": answers["spend_low"],
                "uplift_spend_high": answers["spend_high"],
                **{f"uplift_{part}": answers[part] for part in PARTS},
                "buy_if_contacted": answers["buy_if_contacted"]}

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        saved: dict[int, str] = {}
        arms = {arm: _save_terms(effect.terms, folder, f"arm{i}", saved)
                for i, (arm, effect) in enumerate(self.learners.items())}
        parts = {arm: {part: _save_terms(terms, folder, f"arm{i}_{part}", saved)
                       for part, terms in effect.parts.items()}
                 for i, (arm, effect) in enumerate(self.learners.items()) if effect.parts}
        intervals = {arm: effect.intervals for arm, effect in self.learners.items()
                     if effect.intervals}
        (folder / "model.json").write_text(json.dumps({
            "features": self.features, "categories": self.categories, "outcome": self.outcome,
            "winners": self.winners, "arms": arms, "parts": parts, "intervals": intervals},
            indent=2, default=str))
        return folder

    @classmethod
    def load(cls, folder: Path, wrap: Callable[[lgb.Booster], lgb.Booster] | None = None
             ) -> UpliftModel:
        """The saved model; ``wrap`` (e.g. ``models.forest.compiled``) is applied to each
        booster once, however many terms share it."""
        meta = json.loads((folder / "model.json").read_text())
        parts, boosters = meta.get("parts", {}), {}
        effects = {arm: Effect(_load_terms(specs, folder, boosters, wrap),
                               {part: _load_terms(terms, folder, boosters, wrap)
                                for part, terms in parts.get(arm, {}).items()},
                               meta.get("intervals", {}).get(arm, {}))
                   for arm, specs in meta["arms"].items()}
        return cls(effects, meta["features"], meta["categories"], meta["outcome"],
                   meta["winners"])
