"""Uplift learners with LightGBM bases: T-, X-, doubly-robust and transformed-outcome.

Each estimates, for one treatment against the randomised control, the conditional effect
tau(x) = E[Y | x, treated] - E[Y | x, control]. They are scikit-learn meta-estimators: the
constructor stores parameters, ``fit(X, y, treatment)`` (1 treated, 0 control) learns and
returns ``self``, ``predict(X)`` gives tau(x), and ``sklearn.base.clone`` works on each. The
experiment is randomised, so the propensity is the treated share of the rows fitted on, not
a model.

Every fitted learner predicts a weighted sum of ``terms_``: LightGBM boosters and, for the
linear final stage, a ``LinearEffect`` of plain arrays. That is all a saved model holds
(LightGBM model text and JSON, see ``models.uplift_model``), so loading one needs neither
pickles nor this module's classes.
"""

from __future__ import annotations

from dataclasses import replace

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.optimize import nnls
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from sklearn.utils.validation import check_is_fitted

from models.uplift_terms import (
    Combined,
    Constant,
    LinearEffect,
    Product,
    Regressor,
    Term,
    predict_terms,
    signed_log,
)
from training.config import BaseParams

# Ridge penalty of the linear final stage, on standardised features: strong, because the
# pseudo-outcomes it fits are mostly noise (one customer's effect is never observed).
LINEAR_ALPHA = 1000.0


def fit_regressor(X: pd.DataFrame, target: np.ndarray, params: BaseParams) -> lgb.Booster:
    """One LightGBM regression of ``target`` on ``X`` (pandas categories used as such)."""
    return lgb.train(params.lightgbm(), lgb.Dataset(X, label=np.asarray(target, dtype=float)),
                     num_boost_round=params.rounds)


def fit_classifier(X: pd.DataFrame, target: np.ndarray, params: BaseParams) -> lgb.Booster:
    """One LightGBM binary classifier of ``target`` > 0 on ``X``; ``predict`` gives P(y > 0)."""
    label = (np.asarray(target, dtype=float) > 0).astype(float)
    return lgb.train({**params.lightgbm(), "objective": "binary"}, lgb.Dataset(X, label=label),
                     num_boost_round=params.rounds)


def fit_linear(X: pd.DataFrame, target: np.ndarray, alpha: float = LINEAR_ALPHA) -> LinearEffect:
    """A ridge regression on standardised numbers (raw and signed-log, missing imputed and
    flagged) and one-hot categories: a smooth effect model that noise cannot carve up."""
    numbers = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        FeatureUnion([("raw", FunctionTransformer()),
                      ("log", FunctionTransformer(signed_log))]),
        StandardScaler())
    design = ColumnTransformer([
        ("numbers", numbers, make_column_selector(dtype_exclude="category")),
        ("categories", OneHotEncoder(handle_unknown="ignore"),
         make_column_selector(dtype_include="category"))])
    pipeline = make_pipeline(design, Ridge(alpha=alpha)).fit(X, np.asarray(target, dtype=float))
    return LinearEffect.from_pipeline(pipeline, X)


def _split(treated: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    t = np.asarray(treated, dtype=bool)
    if t.all() or not t.any():
        raise ValueError("an uplift learner needs both treated and control rows")
    return t, ~t, float(t.mean())


class UpliftLearner(BaseEstimator):
    """A scikit-learn meta-estimator of effects: the constructor stores ``params`` (the
    LightGBM settings of every base model; None: ``BaseParams()``) and does no work;
    ``fit(X, y, treatment)`` sets ``terms_``; ``predict(X)`` sums them. ``clone`` gives the
    same learner unfitted."""

    name = "base"

    def __init__(self, params: BaseParams | None = None) -> None:
        self.params = params

    @property
    def base_params(self) -> BaseParams:
        return self.params if self.params is not None else BaseParams()

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> UpliftLearner:
        raise NotImplementedError

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        check_is_fitted(self, "terms_")
        return predict_terms(self.terms_, X)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "terms_")

    def combination(self) -> str:
        """How a fitted ensemble combined its members, in words ('' for one learner)."""
        return ""

    def compared(self) -> dict[str, Regressor]:
        """What the fitted learner holds that is worth scoring beside it on the same folds:
        an ensemble's members (nothing for a single learner)."""
        return {}


class TLearner(UpliftLearner):
    """Two outcome models, one per group; the effect is their difference."""

    name = "t_learner"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> TLearner:
        t, c, _ = _split(treatment)
        y = np.asarray(y, dtype=float)
        self.terms_: list[Term] = [(1.0, fit_regressor(X[t], y[t], self.base_params)),
                                   (-1.0, fit_regressor(X[c], y[c], self.base_params))]
        return self


class XLearner(UpliftLearner):
    """Kunzel et al. (2019): impute each group's effect from the other group's outcome model,
    model the imputed effects, and weight the two by the propensity."""

    name = "x_learner"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> XLearner:
        t, c, self.share_ = _split(treatment)
        y = np.asarray(y, dtype=float)
        mu_t = fit_regressor(X[t], y[t], self.base_params)
        mu_c = fit_regressor(X[c], y[c], self.base_params)
        effect_treated = fit_regressor(X[t], y[t] - mu_c.predict(X[t]), self.base_params)
        effect_control = fit_regressor(X[c], mu_t.predict(X[c]) - y[c], self.base_params)
        self.terms_ = [(self.share_, effect_control), (1.0 - self.share_, effect_treated)]
        return self


class DRLearner(UpliftLearner):
    """Kennedy (2023): a regression of the doubly-robust (AIPW) pseudo-outcome, whose outcome
    models are cross-fitted so no row's pseudo-outcome uses a model that saw it."""

    name = "dr_learner"

    def __init__(self, params: BaseParams | None = None, folds: int = 2) -> None:
        self.params = params
        self.folds = folds

    def pseudo_outcome(self, X: pd.DataFrame, y: np.ndarray, treated: np.ndarray) -> np.ndarray:
        t, c, share = _split(treated)
        y = np.asarray(y, dtype=float)
        rng = np.random.default_rng(self.base_params.seed)
        fold = rng.integers(0, self.folds, len(y))
        mu_t = np.empty(len(y))
        mu_c = np.empty(len(y))
        for k in range(self.folds):
            fit, out = fold != k, fold == k
            mu_t[out] = fit_regressor(X[fit & t], y[fit & t], self.base_params).predict(X[out])
            mu_c[out] = fit_regressor(X[fit & c], y[fit & c], self.base_params).predict(X[out])
        return (mu_t - mu_c + t * (y - mu_t) / share - c * (y - mu_c) / (1.0 - share))

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> DRLearner:
        self.terms_ = [(1.0, fit_regressor(X, self.pseudo_outcome(X, y, treatment),
                                           self.base_params))]
        return self


class LinearDRLearner(DRLearner):
    """The DR-learner with a ridge final stage: LightGBM outcome models, a linear effect."""

    name = "dr_linear"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> LinearDRLearner:
        self.terms_ = [(1.0, fit_linear(X, self.pseudo_outcome(X, y, treatment)))]
        return self


class TransformedOutcome(UpliftLearner):
    """Athey & Imbens (2015): regress Y (T - e) / (e (1 - e)), whose mean given x is tau(x)."""

    name = "transformed_outcome"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> TransformedOutcome:
        t, _, share = _split(treatment)
        z = np.asarray(y, dtype=float) * (t - share) / (share * (1.0 - share))
        self.terms_ = [(1.0, fit_regressor(X, z, self.base_params))]
        return self


class TwoPartLearner(UpliftLearner):
    """A hurdle model per group, for outcomes that are mostly zero with a long right tail
    (spend in a campaign window): P(y > 0 | x) from a classifier times E[y | y > 0, x] from a
    regression on the buyers only, so a few large orders move one part, not the whole
    estimate. The effect is treated minus control of that product; ``parts_`` holds the two
    parts' own differences: ``conversion`` (change in the probability of buying) and
    ``order_value`` (change in expected spend among buyers), and ``buy_if_contacted`` (the
    probability of buying when treated, for the policy's redemption cost)."""

    name = "two_part"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> TwoPartLearner:
        t, c, _ = _split(treatment)
        y = np.asarray(y, dtype=float)
        parts = {}
        for group, rows in (("treated", t), ("control", c)):
            buyers = rows & (y > 0)
            if buyers.sum() < 2 or buyers.sum() == rows.sum():
                raise ValueError(f"a two-part learner needs buyers and non-buyers among the "
                                 f"{group} rows")
            parts[group] = (fit_classifier(X[rows], y[rows], self.base_params),
                            fit_regressor(X[buyers], y[buyers], self.base_params))
        self.terms_: list[Term] = [(1.0, Product(parts["treated"])),
                                   (-1.0, Product(parts["control"]))]
        self.parts_ = {"conversion": [(1.0, parts["treated"][0]), (-1.0, parts["control"][0])],
                       "buy_if_contacted": [(1.0, parts["treated"][0])],
                       "order_value": [(1.0, parts["treated"][1]),
                                       (-1.0, parts["control"][1])],
                       "order_value_control": [(1.0, parts["control"][1])]}
        # The least spend among buyers that ``reconcile`` divides by: fixed here, over the
        # fitted rows, so a customer's effects never depend on who else is scored with them.
        control_value = predict_terms(self.parts_["order_value_control"], X)
        floor = max(float(np.mean(np.abs(control_value))) * 0.01, 1e-9)
        self.parts_["value_floor"] = [(1.0, Constant(floor))]
        return self


def standardised_mean(fitted: list[np.ndarray]) -> tuple[list[float], float]:
    """Weights and a constant that average several learners' estimates on one scale.

    Each learner's estimate is standardised by its mean and spread over the rows it was
    fitted on, the standardised estimates are averaged, and the average is put back in the
    outcome's units: mean effect = the learners' mean, spread = their mean spread. So a
    learner whose estimates are noisy and wide (a transformed outcome) counts as much as a
    smooth one, not more. Returns ``(weights, constant)`` with
    ``sum(w * estimate) + constant`` equal to that average.
    """
    means = np.array([float(np.mean(f)) for f in fitted])
    spreads = np.array([max(float(np.std(f)), 1e-12) for f in fitted])
    weights = spreads.mean() / (len(fitted) * spreads)
    return weights.tolist(), float(means.mean() - weights @ means)


class EnsembleLearner(UpliftLearner):
    """Several learners, each fitted on all the rows, averaged on one scale (see
    ``standardised_mean``): no choice among them is made on noisy folds, and their errors
    partly cancel. Still a weighted sum of terms: every member's, scaled, and a constant.
    ``parts_`` are the two-part member's."""

    name = "ensemble"
    members = ("t_learner", "x_learner", "dr_learner", "dr_linear", "transformed_outcome",
               "two_part")

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> EnsembleLearner:
        self.fitted_ = {}
        for name in self.members:
            try:
                self.fitted_[name] = LEARNERS[name](self.params).fit(X, y, treatment)
            except ValueError:
                if name != "two_part":  # too few buyers (or non-buyers) for a hurdle
                    raise
        self._combine(*standardised_mean([m.predict(X) for m in self.fitted_.values()]))
        return self

    def _combine(self, weights: list[float], constant: float) -> None:
        """``terms_``: every fitted member's terms scaled by its weight, plus the constant;
        ``parts_``: the two-part member's."""
        self.terms_ = [(scale * weight, model)
                       for scale, learner in zip(weights, self.fitted_.values(), strict=True)
                       for weight, model in learner.terms_] + [(1.0, Constant(constant))]
        self.parts_ = self.fitted_["two_part"].parts_ if "two_part" in self.fitted_ else {}

    def combination(self) -> str:
        return "equal weights on one scale"

    def compared(self) -> dict[str, Regressor]:
        return dict(self.fitted_)


def r_loss_weights(estimates: list[np.ndarray], residual_y: np.ndarray,
                   residual_t: np.ndarray) -> tuple[list[float], float]:
    """Non-negative weights and a free constant for the members' out-of-fold estimates that
    minimise the R-loss sum((residual_y - residual_t * (c + sum(w * estimate)))**2)
    (Nie and Wager's objective for effects; the residuals are the outcome's and the
    treatment's, each minus its out-of-fold prediction)."""
    # Each estimate on a unit scale first: effects of a few thousandths (conversion) would
    # otherwise fall under the solver's tolerance and get weight 0 whatever they rank.
    spreads = [max(float(np.std(e)), 1e-12) for e in estimates]
    design = np.column_stack([residual_t, -residual_t,
                              *[residual_t * e / s for e, s in zip(estimates, spreads,
                                                                   strict=True)]])
    solution, _ = nnls(design, residual_y)
    weights = [w / s for w, s in zip(solution[2:], spreads, strict=True)]
    return weights, float(solution[0] - solution[1])


def inner_folds(treated: np.ndarray, seed: int) -> np.ndarray:
    """Two folds (0 or 1) inside the fitted rows, balanced within each group."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(treated), dtype=int)
    for group in (0, 1):
        rows = np.flatnonzero(np.asarray(treated) == group)
        fold[rows] = rng.permutation(len(rows)) % 2
    return fold


def r_loss_gain(candidate: np.ndarray, reference: np.ndarray, residual_y: np.ndarray,
                residual_t: np.ndarray) -> tuple[float, float]:
    """How much lower the R-loss of ``candidate`` is than that of ``reference``, per row, and
    the standard error of that gain. Each estimate gets its own best scale and constant first
    (two numbers on thousands of rows), so only how they rank customers differs."""
    losses = []
    for estimate in (reference, candidate):
        (scale,), constant = r_loss_weights([estimate], residual_y, residual_t)
        losses.append((residual_y - residual_t * (constant + scale * estimate)) ** 2)
    gain = losses[0] - losses[1]
    return float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(len(gain)))


def cross_fitted_gain(estimate: np.ndarray, fold: np.ndarray, residual_y: np.ndarray,
                      residual_t: np.ndarray) -> tuple[float, float]:
    """How much lower the R-loss of ``estimate`` is than a constant effect's, per row, and
    its standard error, each calibrated (scale and constant) on one fold and judged on the
    other: unlike ``r_loss_gain``, negative when the estimate is worse than a constant."""
    member, constant = np.empty(len(estimate)), np.empty(len(estimate))
    for k in (0, 1):
        fit, out = fold != k, fold == k
        (scale,), offset = r_loss_weights([estimate[fit]], residual_y[fit], residual_t[fit])
        average = float(np.sum(residual_y[fit] * residual_t[fit])
                        / np.sum(residual_t[fit] ** 2))
        constant[out] = (residual_y[out] - residual_t[out] * average) ** 2
        # Calibrated to no spread at all, the estimate is the constant effect: gain exactly 0
        # (not the rounding difference of two solvers, whose ratio to its own tiny standard
        # error would be an arbitrary large number).
        member[out] = constant[out] if scale <= 0.0 else (
            residual_y[out] - residual_t[out] * (offset + scale * estimate[out])) ** 2
    gain = constant - member
    return float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(len(gain)))


# Each customer's interval is that of the customers ranked like them: the rows split into
# this many equal groups by their held-out estimate (Chernozhukov et al.'s sorted group
# average treatment effects), each group's effect the mean of its doubly-robust
# pseudo-outcomes, with a 95% normal interval.
INTERVAL_GROUPS = 5
INTERVAL_Z = 1.96


def group_intervals(held_out: np.ndarray, pseudo: np.ndarray, fitted: np.ndarray,
                    groups: int = INTERVAL_GROUPS) -> dict[str, list[float]]:
    """The interval of the average effect in each group of rows ranked by ``held_out`` (an
    estimate made by models that never saw the row), from the rows' cross-fitted pseudo-
    outcomes ``pseudo``; ``edges`` place a customer in a group by the model's estimate,
    at the quantiles ``fitted`` (that estimate on the same rows) has between groups."""
    order = np.argsort(held_out, kind="stable")
    low, high = [], []
    for rows in np.array_split(order, groups):
        mean = float(np.mean(pseudo[rows]))
        error = float(np.std(pseudo[rows], ddof=1) / np.sqrt(len(rows)))
        low.append(mean - INTERVAL_Z * error)
        high.append(mean + INTERVAL_Z * error)
    edges = np.quantile(fitted, np.arange(1, groups) / groups)
    return {"edges": edges.tolist(), "low": low, "high": high}


# Effects are shrunk toward the average by the held-out scale, but never below this share:
# the ranking the members agree on survives even where held-out rows are too few to show it.
MIN_SCALE = 0.1


class StackedLearner(EnsembleLearner):
    """The ensemble's members, weighted by the R-loss of their out-of-fold estimates (two
    folds inside the fitted rows) instead of equally; then fitted on all the rows."""

    name = "stacked"

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> StackedLearner:
        y = np.asarray(y, dtype=float)
        treated = np.asarray(treatment)
        fold = inner_folds(treated, self.base_params.seed)
        estimates = {name: np.zeros(len(y)) for name in self.members}
        baseline = np.zeros(len(y))
        for k in (0, 1):
            fit, out = fold != k, fold == k
            for name in list(estimates):
                try:
                    member = LEARNERS[name](self.params).fit(X[fit], y[fit], treated[fit])
                except ValueError:
                    if name != "two_part":
                        raise
                    estimates.pop(name)
                    continue
                estimates[name][out] = member.predict(X[out])
            baseline[out] = fit_regressor(X[fit], y[fit], self.base_params).predict(X[out])
        weights, constant = r_loss_weights(list(estimates.values()), y - baseline,
                                           treated - treated.mean())
        self.weights_ = dict(zip(estimates, weights, strict=True))
        self.fitted_ = {name: LEARNERS[name](self.params).fit(X, y, treatment)
                        for name in estimates}
        self._combine(weights, constant)
        return self

    def combination(self) -> str:
        return "R-loss weights: " + ", ".join(f"{name} {w:.3g}"
                                              for name, w in self.weights_.items())


# The distilled ensemble's surrogate: small, slow-learning trees that cannot follow the
# members' fold-to-fold noise (the "smaller trees" of bench/uplift_synthetic.py).
SURROGATE = BaseParams(learning_rate=0.03, num_leaves=7, min_data_in_leaf=200, rounds=150,
                       lambda_l2=10.0)


class DistilledEnsembleLearner(EnsembleLearner):
    """The ensemble, or a smooth surrogate of it when the data say the surrogate ranks better.

    The ensemble's average carries each member's noise: trees of 31 leaves fitted to outcomes
    that are mostly zero. A surrogate, small trees fitted to the ensemble's own estimates on
    the training rows (distillation), keeps the broad shape of the effect and drops that
    noise; where the effect lives in fine interactions it loses them. Which one applies is
    decided on two folds inside the fitted rows: the ensemble is fitted on one, both
    estimates are made on the other, and the surrogate is used only when its R-loss (Nie and
    Wager) on those held-out rows is lower by more than one standard error of the gain; a
    tie keeps the plain ensemble. ``parts_`` are always the two-part member's.
    """

    name = "ensemble_or_distilled"
    standard_errors = 1.0

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray
            ) -> DistilledEnsembleLearner:
        y = np.asarray(y, dtype=float)
        treated = np.asarray(treatment)
        fold = inner_folds(treated, self.base_params.seed)
        ensemble, distilled, baseline = (np.zeros(len(y)) for _ in range(3))
        for k in (0, 1):
            fit, out = fold != k, fold == k
            inner = EnsembleLearner(self.params).fit(X[fit], y[fit], treated[fit])
            ensemble[out] = inner.predict(X[out])
            distilled[out] = self._distil(X[fit], inner.predict(X[fit])).predict(X[out])
            baseline[out] = fit_regressor(X[fit], y[fit], self.base_params).predict(X[out])
        self.gain_ = r_loss_gain(distilled, ensemble, y - baseline, treated - treated.mean())
        super().fit(X, y, treatment)
        self.average_ = Combined(self.terms_)
        mean, error = self.gain_
        self.distilled_ = mean > self.standard_errors * error
        if self.distilled_:
            self.terms_ = [(1.0, self._distil(X, self.predict(X)))]
        return self

    def _distil(self, X: pd.DataFrame, estimate: np.ndarray) -> lgb.Booster:
        return fit_regressor(X, estimate, replace(SURROGATE, seed=self.base_params.seed,
                                                 threads=self.base_params.threads))

    def combination(self) -> str:
        mean, error = self.gain_
        gain = (f"the surrogate's held-out R-loss gain {mean:.3g} per row, standard error "
                f"{error:.3g}")
        if self.distilled_:
            return f"distilled into small trees ({gain})"
        return f"equal weights on one scale, not distilled ({gain})"

    def compared(self) -> dict[str, Regressor]:
        return {**self.fitted_, "ensemble": self.average_}


def shrunk_parts(parts: dict[str, list[Term]], scale: float, X: pd.DataFrame,
                 cache: dict | None = None) -> dict[str, list[Term]]:
    """A two-part model's conversion and order-value effects shrunk toward their means by
    ``scale`` (the spend effect's), and the spread of each over ``X`` after that, which
    ``models.uplift_model.reconcile`` uses to share out the gap between parts and effect."""
    out = dict(parts)
    for name in ("conversion", "order_value"):
        mean = float(np.mean(predict_terms(parts[name], X, cache)))
        out[name] = [(scale * weight, model) for weight, model in parts[name]] + [
            (1.0, Constant((1.0 - scale) * mean))]
        out[f"spread_{name}"] = [(1.0, Constant(float(np.std(predict_terms(out[name], X,
                                                                           cache)))))]
    return out


# The members that share the outcome models and the pseudo-outcome.
SHARED = ("t_learner", "x_learner", "dr_learner", "dr_linear", "transformed_outcome")


class AdaptiveLearner(EnsembleLearner):
    """The ensemble's members, weighted by what the experiment's own held-out rows show.

    1. Held-out evidence, on two folds inside the fitted rows: per fold, one outcome model
       per group, shared by the members (the T-learner is their difference, the X-learner
       imputes effects from them, the DR pseudo-outcome and the ridge DR use their
       out-of-fold predictions; the transformed outcome needs none, the two-part model has
       its own). Each member fitted on one fold estimates the other fold's rows.
    2. Skill: each member's held-out R-loss (Nie and Wager) against a constant effect, each
       calibrated (scale, constant) on one fold and judged on the other (see
       ``cross_fitted_gain``). Unless some member beats the constant effect by more than
       two standard errors of the per-row gain, the gains are noise: every member is kept
       and they get the plain average of all (step 3's standardised mean). Otherwise a
       member worse than the constant effect on rows it never saw, by more than two
       standard errors, or calibrated to no spread at all on both folds, gets no weight
       and is not fitted again.
    3. Weights: the other members' standardised mean (the plain ensemble's rule, on their
       fits on every row), unless R-loss weights, fitted on one fold and judged on the
       other, beat that mean by more than one standard error of the per-row gain.
    4. Scale: the weighted held-out estimate's own R-loss fit gives how far effects may
       spread; they are shrunk toward the average effect by it, never stretched (at most 1)
       and never below ``MIN_SCALE``. Scaling does not change the ranking.
    5. The skilled members fitted again on every row (sharing one outcome model per group
       and the cross-fitted pseudo-outcome), weighted, scaled and centred on the calibrated
       average effect.

    6. Intervals: the rows in five equal groups by the held-out estimate of step 4, each
       group's average effect (mean doubly-robust pseudo-outcome) with its 95% interval;
       ``intervals_`` place a customer in a group by the fitted estimate (see
       ``group_intervals``).

    ``parts_`` are the two-part model's (fitted on every row), which ``models.uplift_model``
    reconciles with the effect so the parts add up to it.
    """

    name = "adaptive"
    standard_errors = 1.0
    # A member is left out when it is worse than a constant effect held out by more than
    # this many standard errors of the per-row gain, and only when some member beats the
    # constant by more than ``skill_errors``: until then the gains are noise.
    drop_errors = 2.0
    skill_errors = 2.0

    def fit(self, X: pd.DataFrame, y: np.ndarray, treatment: np.ndarray) -> AdaptiveLearner:
        t, c, share = _split(treatment)
        y = np.asarray(y, dtype=float)
        self._failed: list[str] = []
        fold = inner_folds(t.astype(int), self.base_params.seed)
        nuisance, mu_t, mu_c = self._nuisances(X, y, t, c, fold)
        residual_y = y - (share * mu_t + (1.0 - share) * mu_c)
        residual_t = t - share
        pseudo = mu_t - mu_c + t * (y - mu_t) / share - c * (y - mu_c) / (1.0 - share)
        held_out = self._held_out(X, y, t, c, share, fold, nuisance, pseudo, mu_t, mu_c)
        self.skill_ = {name: cross_fitted_gain(estimate, fold, residual_y, residual_t)
                       for name, estimate in held_out.items()}
        # Held-out gains are noisy: a member is left out when it is worse than a constant
        # effect by more than two standard errors, not when it merely fails to beat one; or
        # when its held-out estimate earned no weight on either fold (a gain of exactly 0).
        skilled = [name for name, (gain, error) in self.skill_.items()
                   if gain > -self.drop_errors * error]
        # Unless some member beats a constant effect by two standard errors, the held-out
        # gains are noise (one inner split of a weak effect) and choosing by them loses to
        # the plain average of all: every member kept, averaged, shrunk.
        weak = not any(gain > self.skill_errors * error for gain, error in self.skill_.values())
        skilled = list(held_out) if weak else skilled
        self.weights_ = dict.fromkeys(held_out, 0.0)
        final = self._final(X, y, t, c, share, pseudo, ["two_part", *skilled])
        # One scale for the members, read off their fits on every row (as the plain ensemble
        # does), unless held-out R-loss weights are better by a standard error.
        on_rows: dict = {}  # every booster's predictions on X, made once
        equal = standardised_mean([predict_terms(final[n], X, on_rows) for n in skilled])
        if weak:
            self.rule_ = ("no member beat a constant effect held out by two standard errors: "
                          "the plain average")
            weights, constant = equal
        else:
            weights, constant = self._weights(skilled, held_out, fold, residual_y, residual_t,
                                              equal)
        combined = constant + sum(w * held_out[n] for n, w in zip(skilled, weights,
                                                                    strict=True))
        (scale,), offset = r_loss_weights([combined], residual_y, residual_t)
        self.scale_ = min(max(scale, MIN_SCALE), 1.0)
        target = float(np.mean(pseudo)) if scale > 1.0 else float(
            np.mean(scale * combined + offset))
        self.weights_.update(zip(skilled, weights, strict=True))
        terms = [(self.scale_ * w * weight, model)
                 for name, w in zip(skilled, weights, strict=True)
                 for weight, model in final[name]]
        # The members refitted on every row: centred so the mean effect is the calibrated
        # combination's (or, if scaling would stretch it, the average effect).
        self.terms_ = [*terms, (1.0, Constant(target - float(np.mean(
            predict_terms(terms, X, on_rows)))))]
        self.fitted_ = {name: _Fitted(terms) for name, terms in final.items()}
        self.parts_ = (shrunk_parts(self.two_part_, self.scale_, X, on_rows)
                       if self.two_part_ else {})
        self.intervals_ = group_intervals(combined, pseudo, predict_terms(self.terms_, X,
                                                                          on_rows))
        return self

    def _nuisances(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray, c: np.ndarray,
                   fold: np.ndarray) -> tuple[list, np.ndarray, np.ndarray]:
        """Per fold, the outcome models of each group fitted on the other fold; and every
        row's out-of-fold predictions of both."""
        models, mu_t, mu_c = [], np.empty(len(y)), np.empty(len(y))
        for k in (0, 1):
            fit, out = fold != k, fold == k
            pair = (fit_regressor(X[fit & t], y[fit & t], self.base_params),
                    fit_regressor(X[fit & c], y[fit & c], self.base_params))
            mu_t[out], mu_c[out] = pair[0].predict(X[out]), pair[1].predict(X[out])
            models.append(pair)
        return models, mu_t, mu_c

    def _held_out(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray, c: np.ndarray,
                  share: float, fold: np.ndarray, nuisance: list, pseudo: np.ndarray,
                  mu_t: np.ndarray, mu_c: np.ndarray) -> dict[str, np.ndarray]:
        """Each member's estimates of the rows of the inner fold it was not fitted on (the
        outcome models' predictions there are ``mu_t`` and ``mu_c``, made once)."""
        held_out: dict[str, np.ndarray] = {}
        for k in (0, 1):
            fit, out = fold != k, fold == k
            members = self._member_terms(X[fit], y[fit], t[fit], c[fit], share, nuisance[k],
                                         pseudo[fit], [*SHARED, "two_part"])
            X_out = X[out]
            known = {id(nuisance[k][0]): mu_t[out], id(nuisance[k][1]): mu_c[out]}
            for name, terms in members.items():
                held_out.setdefault(name, np.zeros(len(y)))[out] = predict_terms(terms, X_out,
                                                                                 known)
        if "two_part" in held_out and self._failed:  # fitted on one fold only
            held_out.pop("two_part")
        return held_out

    def _final(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray, c: np.ndarray,
               share: float, pseudo: np.ndarray, names: list[str]) -> dict[str, list[Term]]:
        """The named members fitted on every row, sharing one outcome model per group (and
        the cross-fitted pseudo-outcome); sets ``two_part_`` to the hurdle's parts."""
        needs_outcomes = {"t_learner", "x_learner"} & set(names)
        pair = ((fit_regressor(X[t], y[t], self.base_params),
                 fit_regressor(X[c], y[c], self.base_params)) if needs_outcomes else None)
        self.two_part_ = {}
        return self._member_terms(X, y, t, c, share, pair, pseudo, names, keep_parts=True)

    def _member_terms(self, X: pd.DataFrame, y: np.ndarray, t: np.ndarray, c: np.ndarray,
                      share: float, pair: tuple | None, pseudo: np.ndarray, names: list[str],
                      keep_parts: bool = False) -> dict[str, list[Term]]:
        """The terms of each named member fitted on these rows, from the outcome models
        ``pair`` (treated, control) and the pseudo-outcome where they need them."""
        out: dict[str, list[Term]] = {}
        for name in dict.fromkeys(names):
            if name == "t_learner":
                out[name] = [(1.0, pair[0]), (-1.0, pair[1])]
            elif name == "x_learner":
                out[name] = [
                    (share, fit_regressor(X[c], pair[0].predict(X[c]) - y[c],
                                          self.base_params)),
                    (1.0 - share, fit_regressor(X[t], y[t] - pair[1].predict(X[t]),
                                                self.base_params))]
            elif name == "dr_learner":
                out[name] = [(1.0, fit_regressor(X, pseudo, self.base_params))]
            elif name == "dr_linear":
                out[name] = [(1.0, fit_linear(X, pseudo))]
            elif name == "transformed_outcome":
                z = y * (t - share) / (share * (1.0 - share))
                out[name] = [(1.0, fit_regressor(X, z, self.base_params))]
            elif name == "two_part":
                try:
                    hurdle = TwoPartLearner(self.params).fit(X, y, t)
                except ValueError:  # too few buyers (or non-buyers) in a group for a hurdle
                    self._failed.append(name)
                    continue
                out[name] = hurdle.terms_
                if keep_parts:
                    self.two_part_ = hurdle.parts_
        return out

    def _weights(self, skilled: list[str], held_out: dict[str, np.ndarray], fold: np.ndarray,
                 residual_y: np.ndarray, residual_t: np.ndarray,
                 equal: tuple[list[float], float]) -> tuple[list[float], float]:
        """``equal`` (the skilled members' standardised mean), or R-loss weights when those,
        fitted on one fold, beat it on the other by more than ``standard_errors``."""
        estimates = [held_out[name] for name in skilled]
        if len(skilled) == 1:
            self.rule_ = "one skilled member"
            return equal
        stacked = np.zeros(len(residual_y))
        for k in (0, 1):
            fit, out = fold != k, fold == k
            weights, constant = r_loss_weights([e[fit] for e in estimates], residual_y[fit],
                                               residual_t[fit])
            stacked[out] = constant + sum(w * e[out] for w, e in zip(weights, estimates,
                                                                   strict=True))
        averaged = equal[1] + sum(w * e for w, e in zip(equal[0], estimates, strict=True))
        self.stacking_gain_ = r_loss_gain(stacked, averaged, residual_y, residual_t)
        mean, error = self.stacking_gain_
        if mean > self.standard_errors * error:
            self.rule_ = "held-out R-loss weights"
            return r_loss_weights(estimates, residual_y, residual_t)
        self.rule_ = "standardised mean"
        return equal

    def combination(self) -> str:
        weights = ", ".join(f"{name} {w:.3g}" for name, w in self.weights_.items())
        return (f"{self.rule_}: {weights}; shrunk by {self.scale_:.3g} to the held-out "
                f"effect scale")

    def compared(self) -> dict[str, Regressor]:
        return dict(self.fitted_)


class _Fitted:
    """A member kept as its (fold-averaged) terms: what ``compared`` and the weights use."""

    def __init__(self, terms: list[Term]) -> None:
        self.terms_ = terms

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return predict_terms(self.terms_, X)


LEARNERS: dict[str, type[UpliftLearner]] = {
    cls.name: cls for cls in (TLearner, XLearner, DRLearner, LinearDRLearner,
                               TransformedOutcome, TwoPartLearner, EnsembleLearner,
                               StackedLearner, DistilledEnsembleLearner, AdaptiveLearner)}


def make_learner(name: str, params: BaseParams | None = None, seed: int | None = None
                 ) -> UpliftLearner:
    """A learner by name (see ``LEARNERS``), optionally with another seed."""
    if name not in LEARNERS:
        raise ValueError(f"unknown uplift learner {name!r}; choose from {sorted(LEARNERS)}")
    params = params or BaseParams()
    return LEARNERS[name](replace(params, seed=params.seed if seed is None else seed))
