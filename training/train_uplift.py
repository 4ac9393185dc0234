"""Train and evaluate uplift models on a randomised experiment.

For each arm against control: check the experiment is clean (sample ratio, covariate
balance), report the average effects on spend, conversion and order value among buyers,
pick a learner by out-of-fold Qini (or use the one asked for), and fit it on every row.
``evaluate_uplift`` gives honest out-of-fold scores: the learner is chosen again inside
each outer fold, so the fold it is scored on never took part in choosing it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.model_selection import StratifiedKFold

from features.cores import job_threads
from features.errors import setting
from features.tables import load_tables
from models.uplift_model import PARTS, Effect, UpliftModel
from training.config import AUTO, BaseParams, ExperimentError, UpliftTrainConfig
from training.uplift_data import (
    CONTROL,
    Experiment,
    GroupSpec,
    experiment_from_contract,
    experiment_from_table,
    read_table,
)
from training.uplift_learners import UpliftLearner, make_learner
from training.uplift_metrics import UpliftMetrics, average_effect

SRM_P_VALUE = 0.001
BALANCE_SMD = 0.1
MIN_GROUP_ROWS = 50

Progress = Callable[[str], None]


def with_threads(cfg: UpliftTrainConfig) -> UpliftTrainConfig:
    """``cfg`` with its LightGBM threads fixed: those asked for, or the cores free now."""
    return replace(cfg, params=replace(cfg.params, threads=job_threads(cfg.params.threads)))


def load_experiment(cfg: UpliftTrainConfig) -> Experiment:
    """The experiment named by ``cfg``, from contract tables or a flat table."""
    cfg.check()
    if cfg.table is not None:
        return experiment_from_table(
            read_table(cfg.table),
            [GroupSpec.parse(t, setting("treatment")) for t in cfg.treatments],
            GroupSpec.parse(cfg.control or "", setting("control")), cfg.outcome,
            list(cfg.ignore), str(cfg.table))
    assert cfg.data is not None
    with tempfile.TemporaryDirectory(prefix="churn-uplift-") as tmp, duckdb.connect() as con:
        con.sql("SET TimeZone = 'UTC'")
        loaded = load_tables(con, cfg.data, Path(tmp), cfg.on_bad_rows, cfg.rejects)
        return experiment_from_contract(con, loaded, cfg.campaign, cfg.horizon_days)


# --- is the experiment clean? ----------------------------------------------------------


@dataclass(frozen=True)
class ExperimentChecks:
    """Sample ratio and covariate balance of one arm against control."""

    treated_share: float
    expected_share: float
    srm_p_value: float
    worst_feature: str
    worst_smd: float

    def warnings(self) -> list[str]:
        out = []
        if self.srm_p_value < SRM_P_VALUE:
            out.append(f"sample ratio mismatch: treated share {self.treated_share:.3f}, "
                       f"designed {self.expected_share:.3f} (chi-square p = "
                       f"{self.srm_p_value:.2g}); the split may not be random")
        if abs(self.worst_smd) > BALANCE_SMD:
            out.append(f"covariate imbalance: {self.worst_feature} differs between treated "
                       f"and control by {self.worst_smd:+.2f} standard deviations "
                       f"(more than {BALANCE_SMD})")
        return out


def standardized_differences(X: pd.DataFrame, treated: np.ndarray) -> pd.Series:
    """(treated mean - control mean) / pooled sd, per number and per category level."""
    design = pd.get_dummies(X, dtype=float) if len(X.columns) else X
    t = np.asarray(treated, dtype=bool)
    a, b = design[t], design[~t]
    pooled = np.sqrt((a.var() + b.var()) / 2.0)
    return ((a.mean() - b.mean()) / pooled.where(pooled > 0)).dropna()


def check_experiment(X: pd.DataFrame, treated: np.ndarray,
                     expected_share: float) -> ExperimentChecks:
    """Sample ratio (chi-square against the designed share) and the least balanced feature."""
    n = len(treated)
    n_t = int(np.sum(treated))
    p = stats.chisquare([n_t, n - n_t], [n * expected_share, n * (1 - expected_share)]).pvalue
    smd = standardized_differences(X, treated)
    worst = smd.abs().idxmax() if len(smd) else ""
    return ExperimentChecks(n_t / n, expected_share, float(p), str(worst),
                            float(smd[worst]) if len(smd) else 0.0)


# --- choosing and fitting a learner ----------------------------------------------------


def _folds(treated: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds stratified by group, so each keeps the experiment's treated share."""
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(treated)), treated))


def fold_rank(scores: np.ndarray) -> np.ndarray:
    """Scores as percentile ranks within one fold.

    Pooled out-of-fold scores come from different models. A model fitted where the
    experiment's effect happened to run high predicts higher for everyone, and its held-out
    fold, the rest of the data, then runs low: ranking the pooled raw scores would reward
    that artefact, not the ranking. Ranks within each fold remove it.
    """
    return stats.rankdata(scores) / len(scores)


def out_of_fold(name: str, X: pd.DataFrame, y: np.ndarray, t: np.ndarray,
                folds: list[tuple[np.ndarray, np.ndarray]], params: BaseParams,
                seed: int) -> np.ndarray:
    """Each row's percentile rank by ``name`` fitted on the other folds, within its fold."""
    scores = np.empty(len(y))
    for fit, held in folds:
        learner = make_learner(name, params, seed).fit(X.iloc[fit], y[fit], t[fit])
        scores[held] = fold_rank(learner.predict(X.iloc[held]))
    return scores


@dataclass
class Selection:
    """Out-of-fold Qini of each candidate learner, and the one chosen."""

    qini: dict[str, float]
    winner: str
    scores: np.ndarray

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"learner": list(self.qini), "oof_qini": list(self.qini.values()),
                             "chosen": [n == self.winner for n in self.qini]})


def select_learner(X: pd.DataFrame, y: np.ndarray, t: np.ndarray, candidates: list[str],
                   folds: int, params: BaseParams, seed: int) -> Selection:
    """The candidate with the highest out-of-fold Qini on these rows."""
    splits = _folds(t, folds, seed)
    qini, scores = {}, {}
    for name in candidates:
        scores[name] = out_of_fold(name, X, y, t, splits, params, seed)
        qini[name] = UpliftMetrics.of(y, t, scores[name]).qini
    winner = max(candidates, key=lambda n: -np.inf if np.isnan(qini[n]) else qini[n])
    return Selection(qini, winner, scores[winner])


def _check_sizes(arm: str, t: np.ndarray, folds: int) -> None:
    n_t, n_c = int(t.sum()), int(len(t) - t.sum())
    need = MIN_GROUP_ROWS * folds
    if min(n_t, n_c) < need:
        raise ExperimentError(f"arm {arm!r}: {n_t} treated and {n_c} control rows; uplift "
                              f"with {folds} folds needs at least {need} of each")


@dataclass
class ArmResult:
    """Everything learned about one arm against control.

    ``metrics`` are those of the nested out-of-fold scores in ``nested`` (the learner chosen
    again inside each training fold), not of the winner's own out-of-fold scores, which the
    choice among learners inflates.
    """

    arm: str
    treated: int
    control: int
    effects: dict[str, tuple[float, float]]
    checks: ExperimentChecks
    selection: Selection
    metrics: dict[str, UpliftMetrics]
    nested: pd.DataFrame
    # How the fitted ensemble combined its members ('' for a single learner).
    combination: str = ""

    def warnings(self) -> list[str]:
        return self.checks.warnings()

    def nested_scores(self) -> dict[str, np.ndarray]:
        """Nested out-of-fold scores of the model and, for an ensemble, of each member on
        the same folds (fitted inside the ensemble, so comparing them costs nothing)."""
        members = {c.removeprefix("score_"): self.nested[c].to_numpy()
                   for c in self.nested.columns if c.startswith("score_")}
        return {self.selection.winner: self.nested["uplift_score"].to_numpy(), **members}

    def nested_qini(self, outcome: str = "spend") -> dict[str, float]:
        """Qini of every ``nested_scores`` scorer on ``outcome``, best first."""
        y, t = self.nested[outcome].to_numpy(float), self.nested["treated"].to_numpy()
        qini = {name: UpliftMetrics.of(y, t, score).qini
                for name, score in self.nested_scores().items()}
        return dict(sorted(qini.items(), key=lambda kv: -np.nan_to_num(kv[1], nan=-np.inf)))


@dataclass
class UpliftResult:
    """A trained uplift model and what was measured on the way."""

    experiment: Experiment
    model: UpliftModel
    arms: dict[str, ArmResult]
    validation: pd.DataFrame
    # The MLflow run (``training.tracking.LoggedRun``) when the Python API logged one.
    run: object | None = None


def average_effects(outcomes: pd.DataFrame, t: np.ndarray) -> dict[str, tuple[float, float]]:
    """Treated minus control mean (and its standard error) of each outcome; AOV among buyers."""
    out = {}
    for name in outcomes.columns:
        values = outcomes[name].to_numpy(dtype=float)
        known = ~np.isnan(values)
        out[name] = average_effect(values[known], t[known])
    return out


def binary_outcome(outcomes: pd.DataFrame) -> bool:
    """True when the modelled outcome is itself 0/1 (conversion): no spend to split."""
    return outcomes["conversion"].equals(outcomes["spend"])


def _outcome_metrics(part: Experiment, t: np.ndarray, score: np.ndarray
                     ) -> dict[str, UpliftMetrics]:
    metrics = {}
    for name in ("spend", "conversion"):
        metrics[name] = UpliftMetrics.of(part.outcomes[name].to_numpy(float), t, score)
    buyers = part.outcomes["conversion"].to_numpy(float) > 0
    if not binary_outcome(part.outcomes) and buyers.any():
        # Spend among buyers: does the score also rank what buyers spend?
        metrics["order_value"] = UpliftMetrics.of(
            part.outcomes["spend"].to_numpy(float)[buyers], t[buyers], score[buyers])
    return metrics


def train_arm(part: Experiment, arm: str, cfg: UpliftTrainConfig, expected_share: float,
              progress: Progress | None = None) -> tuple[ArmResult, object]:
    """Checks, effects, learner choice and the final fit for one arm against control."""
    t = part.treated()
    _check_sizes(arm, t, cfg.selection_folds)
    y = part.outcome()
    candidates = cfg.candidates()
    if len(candidates) > 1:
        if progress:
            progress(f"{arm}: choosing among {', '.join(candidates)}")
        selection = select_learner(part.features, y, t, candidates, cfg.selection_folds,
                                   cfg.params, cfg.seed)
    if progress:
        progress(f"{arm}: fitting {candidates[0] if len(candidates) == 1 else 'the winner'} "
                 f"on every row")
    winner = candidates[0] if len(candidates) == 1 else selection.winner
    learner = make_learner(winner, cfg.params, cfg.seed).fit(part.features, y, t)
    if progress:
        progress(f"{arm}: nested out-of-fold scores ({cfg.nested_folds} folds)")
    nested = evaluate_arm(part, cfg, cfg.nested_folds, repeat=0)
    if len(candidates) == 1:
        # One learner: its own out-of-fold scores are the nested ones.
        score = nested["uplift_score"].to_numpy()
        selection = Selection({winner: UpliftMetrics.of(y, t, score).qini}, winner, score)
    result = ArmResult(arm, int(t.sum()), int(len(t) - t.sum()), average_effects(part.outcomes, t),
                       check_experiment(part.features, t, expected_share), selection,
                       _outcome_metrics(part, t, nested["uplift_score"].to_numpy()), nested,
                       learner.combination())
    return result, learner


def fit_parts(learner: UpliftLearner, part: Experiment, cfg: UpliftTrainConfig
              ) -> dict[str, list]:
    """Conversion and order-value parts for a spend model: the learner's own (two-part,
    ensemble) or a two-part model's fitted beside it. None for a 0/1 outcome, or when a
    group has too few buyers or only buyers."""
    y, t = part.outcome(), part.treated()
    if binary_outcome(part.outcomes):
        return {}
    if getattr(learner, "parts_", None):
        return learner.parts_
    try:
        return make_learner("two_part", cfg.params, cfg.seed).fit(part.features, y, t).parts_
    except ValueError:
        return {}


def _categories(X: pd.DataFrame) -> dict[str, list]:
    return {c: list(X[c].cat.categories) for c in X.columns
            if isinstance(X[c].dtype, pd.CategoricalDtype)}


def train_uplift(cfg: UpliftTrainConfig, progress: Progress | None = None,
                 experiment: Experiment | None = None) -> UpliftResult:
    """One uplift learner per arm, each chosen by out-of-fold Qini and fitted on all rows, and
    measured by nested out-of-fold scores (the choice made again inside each fold)."""
    cfg = with_threads(cfg)
    experiment = experiment or load_experiment(cfg)
    if not experiment.arms:
        raise ExperimentError(f"{experiment.source}: no treated rows")
    # Each arm is checked against control alone; by default the two were meant to be equal.
    share = cfg.expected_share if cfg.expected_share is not None else 0.5
    arms, learners, validation = {}, {}, []
    for arm in experiment.arms:
        part = experiment.arm(arm)
        arms[arm], learners[arm] = train_arm(part, arm, cfg, share, progress)
        validation.append(pd.DataFrame({
            "id": part.ids, "arm": arm, "treated": part.treated(),
            **{name: part.outcomes[name].to_numpy() for name in part.outcomes.columns},
            "uplift_score": arms[arm].nested["uplift_score"].to_numpy()}))
    effects = {arm: Effect(learner.terms_, fit_parts(learner, experiment.arm(arm), cfg),
                           getattr(learner, "intervals_", {}))
               for arm, learner in learners.items()}
    model = UpliftModel(effects, list(experiment.features.columns),
                        _categories(experiment.features), experiment.outcome_name,
                        {a: r.selection.winner for a, r in arms.items()})
    return UpliftResult(experiment, model, arms, pd.concat(validation, ignore_index=True))


# --- honest out-of-fold evaluation -----------------------------------------------------


def evaluate_arm(part: Experiment, cfg: UpliftTrainConfig, folds: int, repeat: int,
                 scorers: dict[str, Callable[[pd.DataFrame, np.ndarray, np.ndarray,
                                              pd.DataFrame], np.ndarray]] | None = None,
                 progress: Progress | None = None) -> pd.DataFrame:
    """Out-of-fold scores of one arm for one repeat: ``score`` from the trainer's own choice
    made inside each outer fold, plus any extra ``scorers`` (peers) on the same folds."""
    t = part.treated()
    y = part.outcome()
    _check_sizes(part.arms[0], t, folds)
    seed = cfg.seed + repeat
    raw = np.empty(len(y))
    estimates = {k: np.empty(len(y)) for k in (scorers or {})}
    scores = {"model": np.empty(len(y)), **{k: np.empty(len(y)) for k in (scorers or {})}}
    chosen, parts = [], {}
    for number, (fit, held) in enumerate(_folds(t, folds, seed), start=1):
        X_fit, X_held = part.features.iloc[fit], part.features.iloc[held]
        if progress:
            choosing = " (choosing the learner)" if len(cfg.candidates()) > 1 else ""
            progress(f"fold {number} of {folds}{choosing}")
        if len(cfg.candidates()) > 1:
            pick = select_learner(X_fit, y[fit], t[fit], cfg.candidates(),
                                  cfg.selection_folds, cfg.params, seed).winner
        else:
            pick = cfg.candidates()[0]
        chosen.append(pick)
        learner = make_learner(pick, cfg.params, seed).fit(X_fit, y[fit], t[fit])
        raw[held] = learner.predict(X_held)
        scores["model"][held] = fold_rank(raw[held])
        for name, member in learner.compared().items():
            # An ensemble's members, each fitted on the same rows: every learner compared.
            estimates.setdefault(name, np.full(len(y), np.nan))[held] = member.predict(X_held)
            scores.setdefault(name, np.full(len(y), np.nan))[held] = fold_rank(
                estimates[name][held])
        if getattr(learner, "intervals_", None):  # each held-out customer's interval
            bounds = Effect(learner.terms_, intervals=learner.intervals_).interval(raw[held])
            for bound, values in bounds.items():
                parts.setdefault(f"uplift_{bound}", np.full(len(y), np.nan))[held] = values
        if getattr(learner, "parts_", None):  # the parts as the saved model gives them
            answers = Effect(learner.terms_, learner.parts_).predict_all(X_held)
            for name in PARTS:
                parts.setdefault(f"uplift_{name}", np.full(len(y), np.nan))[held] = answers[
                    name]
                parts.setdefault(f"part_score_{name}", np.full(len(y), np.nan))[
                    held] = fold_rank(answers[name])
        for name, scorer in (scorers or {}).items():
            estimates[name][held] = scorer(X_fit, y[fit], t[fit], X_held)
            scores[name][held] = fold_rank(estimates[name][held])
    frame = pd.DataFrame({"id": part.ids, "repeat": repeat, "treated": t,
                          "spend": part.outcomes["spend"].to_numpy(),
                          "conversion": part.outcomes["conversion"].to_numpy()})
    frame["learners_chosen"] = ",".join(chosen)
    frame["uplift_estimate"] = raw
    for name, values in estimates.items():
        frame[f"estimate_{name}"] = values
    for name, values in parts.items():
        frame[name] = values
    for name, values in scores.items():
        frame["uplift_score" if name == "model" else f"score_{name}"] = values
    return frame


def evaluate_uplift(cfg: UpliftTrainConfig, folds: int = 5, repeats: int = 1,
                    experiment: Experiment | None = None, progress: Progress | None = None,
                    scorers: dict | None = None) -> pd.DataFrame:
    """Out-of-fold uplift scores per customer, arm and repeat."""
    if folds < 2 or repeats < 1:
        raise ExperimentError(f"{setting('folds')} must be at least 2 and {setting('repeats')} at "
                              "least 1")
    cfg = with_threads(cfg)
    experiment = experiment or load_experiment(cfg)
    frames = []
    for arm in experiment.arms:
        part = experiment.arm(arm)
        for repeat in range(repeats):
            where = f"{arm}: repeat {repeat + 1} of {repeats}"

            def step(text: str, where: str = where) -> None:
                if progress:
                    progress(f"{where}, {text}")

            frames.append(evaluate_arm(part, cfg, folds, repeat, scorers, step).assign(arm=arm))
    return pd.concat(frames, ignore_index=True)


def evaluation_metrics(scores: pd.DataFrame, pooled_estimates: bool = False) -> pd.DataFrame:
    """Qini, AUUC and uplift at 10/20/30% per arm, outcome, scorer and repeat.

    Outcomes: ``spend``, ``conversion`` and ``order_value`` (spend among the customers who
    bought, treated against control buyers). Each scorer ranks all three; a two-part model's
    own parts are scored on theirs as ``conversion part`` and ``order value part``.

    By default the within-fold ranks are used; ``pooled_estimates`` ranks the raw
    estimates of all folds together instead (for comparison with figures measured so).
    """
    rows = []
    if pooled_estimates:
        score_columns = [c for c in scores.columns
                         if c == "uplift_estimate" or c.startswith("estimate_")]
    else:
        score_columns = [c for c in scores.columns
                         if c == "uplift_score" or c.startswith("score_")]
    binary = binary_outcome(scores)
    for (arm, repeat), part in scores.groupby(["arm", "repeat"], sort=True):
        for outcome in ("spend", "conversion") if binary else ("spend", "conversion",
                                                                "order_value"):
            rows.extend({"arm": arm, "outcome": outcome, "scorer": scorer, "repeat": repeat,
                         **m.as_dict()}
                        for scorer, m in _scored(part, outcome, score_columns,
                                                 pooled_estimates))
    return pd.DataFrame(rows)


def _scored(part: pd.DataFrame, outcome: str, score_columns: list[str], pooled: bool
            ) -> list[tuple[str, UpliftMetrics]]:
    """Every scorer's metrics on one outcome (``order_value``: among buyers only)."""
    rows = part[part["conversion"] > 0] if outcome == "order_value" else part
    y = rows["spend" if outcome == "order_value" else outcome].to_numpy(float)
    t = rows["treated"].to_numpy()
    out = []
    for column in score_columns:
        scorer = ("model" if column in ("uplift_score", "uplift_estimate")
                  else column.split("_", 1)[1])
        out.append((scorer, UpliftMetrics.of(y, t, rows[column].to_numpy(float))))
    own = f"uplift_{outcome}" if pooled else f"part_score_{outcome}"
    if outcome != "spend" and own in rows and rows[own].notna().all():
        label = outcome.replace("_", " ") + " part"
        out.append((label, UpliftMetrics.of(y, t, rows[own].to_numpy(float))))
    return out


def summarize_evaluation(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over repeats of each arm x outcome x scorer."""
    grouped = metrics.groupby(["arm", "outcome", "scorer"], sort=False)
    out = grouped.agg(qini=("qini", "mean"), qini_sd=("qini", "std"), qini_min=("qini", "min"),
                      qini_max=("qini", "max"), auuc=("auuc", "mean"),
                      uplift_at_10=("uplift_at_10", "mean"),
                      uplift_at_20=("uplift_at_20", "mean"),
                      uplift_at_30=("uplift_at_30", "mean"))
    return out.reset_index()


__all__ = ["AUTO", "CONTROL", "ArmResult", "UpliftResult", "UpliftTrainConfig",
           "evaluate_uplift", "evaluation_metrics", "load_experiment", "summarize_evaluation",
           "train_uplift"]
