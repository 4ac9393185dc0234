"""Record an uplift training run in MLflow and register its model under ``uplift``.

A run holds the parameters and data lineage, per arm: the average effects on spend,
conversion and order value among buyers, the experiment checks, each candidate learner's
out-of-fold Qini and the one chosen, Qini/AUUC/uplift-at-k of the nested out-of-fold scores
(the learner chosen again inside each training fold), the Qini and decile plots; and the
nested out-of-fold rows themselves (with features), which promotion compares.
"""

from __future__ import annotations

import hashlib
import math
import re
import tempfile
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd

import models
from models.registry import UPLIFT_MODEL_NAME
from models.store import run_name, start_run, use_experiment
from models.uplift_model import ARTIFACT_KEY
from training.config import UpliftTrainConfig
from training.tracking import PYFUNC_REQUIREMENTS, LoggedRun, log_pyfunc, logged_dataset
from training.train_uplift import UpliftResult
from training.uplift_metrics import uplift_by_decile
from training.uplift_plots import qini_figure, uplift_decile_figure

PYFUNC_CODE = Path(models.__file__).with_name("uplift_pyfunc.py")


def slug(arm: str) -> str:
    """An arm's name as it appears in metric names: lower case, words joined by ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", arm.lower()).strip("_") or "arm"


def effects_table(result: UpliftResult) -> pd.DataFrame:
    """Per arm and outcome: average effect, its standard error and the rows behind it."""
    rows = []
    for arm, r in result.arms.items():
        for outcome, (effect, se) in r.effects.items():
            rows.append({"arm": arm, "outcome": outcome, "effect": effect, "std_error": se,
                         "treated": r.treated, "control": r.control})
    return pd.DataFrame(rows)


def metrics_table(result: UpliftResult) -> pd.DataFrame:
    """Per arm and outcome: Qini, AUUC and uplift at 10/20/30% of the nested out-of-fold
    scores."""
    return pd.DataFrame([{"arm": arm, "outcome": outcome, "learner": r.selection.winner,
                          **m.as_dict()}
                         for arm, r in result.arms.items() for outcome, m in r.metrics.items()])


def validation_digest(rows: pd.DataFrame) -> str:
    """A digest of the experiment's rows (id, arm, group, outcome), whatever their order.

    The outcome is rounded to 6 decimals: DuckDB sums amounts in parallel, so the same
    window's spend can differ in its last bits from one run to the next."""
    key = rows[["id", "arm", "treated", "spend"]].sort_values(["arm", "id"]).assign(
        spend=lambda f: f["spend"].round(6))
    hashed = pd.util.hash_pandas_object(key, index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()[:16]


def validation_rows(result: UpliftResult) -> pd.DataFrame:
    """Out-of-fold scores with outcomes and the features the model reads."""
    features = result.experiment.features.copy()
    features.insert(0, "id", result.experiment.ids)
    return result.validation.merge(features, on="id", how="left")


def _params(cfg: UpliftTrainConfig, result: UpliftResult) -> dict[str, object]:
    e = result.experiment
    params: dict[str, object] = {
        "data_source": cfg.data_source(),
        "input": "table" if cfg.table else "contract",
        "experiment": e.source, "outcome": e.outcome_name, "arms": ",".join(e.arms),
        "learner": cfg.learner, "selection_folds": cfg.selection_folds, "seed": cfg.seed,
        "features": len(e.features.columns), "rows": len(e.ids),
        **{f"base_{k}": v for k, v in cfg.params.lightgbm().items()
           if k not in ("verbose", "deterministic", "objective")},
    }
    if cfg.data is not None:
        params["horizon_days"] = cfg.horizon_days
    for arm, r in result.arms.items():
        params[f"{slug(arm)}_learner"] = r.selection.winner
        if r.combination:
            params[f"{slug(arm)}_combination"] = r.combination
    return params


def _metrics(result: UpliftResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for arm, r in result.arms.items():
        s = slug(arm)
        for outcome, m in r.metrics.items():
            out.update(m.as_dict(prefix=f"{s}_{outcome}_"))
        for outcome, (effect, se) in r.effects.items():
            out[f"{s}_ate_{outcome}"] = effect
            out[f"{s}_ate_{outcome}_se"] = se
        for learner, q in r.selection.qini.items():
            out[f"{s}_oof_qini_{learner}"] = q
        for learner, q in r.nested_qini().items():
            out[f"{s}_nested_qini_{learner}"] = q
        out[f"{s}_treated_share"] = r.checks.treated_share
        out[f"{s}_srm_p_value"] = r.checks.srm_p_value
        out[f"{s}_max_abs_smd"] = abs(r.checks.worst_smd)
    out["qini"] = float(pd.Series([r.metrics["spend"].qini for r in result.arms.values()]).mean())
    return {k: v for k, v in out.items() if not math.isnan(v)}


def _log_plots(result: UpliftResult) -> None:
    for arm, r in result.arms.items():
        part = result.validation[result.validation["arm"] == arm]
        t = part["treated"].to_numpy()
        score = part["uplift_score"].to_numpy()
        for outcome in ("spend", "conversion"):
            y = part[outcome].to_numpy(float)
            label = f"{arm}: {outcome}"
            figures = {
                f"plots/{slug(arm)}/qini_{outcome}.png": qini_figure(
                    y, t, r.nested_scores(), f"Qini, {label} (nested out of fold)"),
                f"plots/{slug(arm)}/uplift_by_decile_{outcome}.png": uplift_decile_figure(
                    y, t, score, f"Observed uplift by decile, {label}"),
            }
            for path, fig in figures.items():
                mlflow.log_figure(fig, path)
            mlflow.log_text(uplift_by_decile(y, t, score).to_csv(index=False),
                            f"deciles/{slug(arm)}_{outcome}.csv")


def _log_tables(result: UpliftResult, rows: pd.DataFrame, work: Path) -> None:
    rows.to_parquet(work / "validation.parquet", index=False)
    mlflow.log_artifact(str(work / "validation.parquet"), "validation")
    mlflow.log_text(effects_table(result).to_csv(index=False, float_format="%.6g"), "effects.csv")
    mlflow.log_text(metrics_table(result).to_csv(index=False, float_format="%.5f"), "metrics.csv")
    selection = pd.concat([r.selection.table().assign(arm=a) for a, r in result.arms.items()])
    mlflow.log_text(selection.to_csv(index=False, float_format="%.5f"), "selection.csv")


def _log_input(cfg: UpliftTrainConfig, result: UpliftResult, rows: pd.DataFrame) -> None:
    source = None if cfg.source else cfg.data_source()
    mlflow.log_input(logged_dataset(rows.drop(columns=["uplift_score"]), source=source,
                                    targets="spend", name="uplift-experiment",
                                    digest=validation_digest(rows)), context="training")


def _log_model(cfg: UpliftTrainConfig, result: UpliftResult, work: Path,
               registered_name: str) -> str:
    folder = result.model.save(work / ARTIFACT_KEY)
    example = result.experiment.features.head(5).copy()
    for column in result.model.categories:
        example[column] = example[column].astype(str)
    return log_pyfunc(PYFUNC_CODE, {ARTIFACT_KEY: folder}, example, result.model.predict(example),
                      registered_name, PYFUNC_REQUIREMENTS,
                      {"data_source": cfg.data_source(),
                       "experiment": result.experiment.source})


def _description(cfg: UpliftTrainConfig, result: UpliftResult) -> str:
    arms = "; ".join(f"{arm}: {r.treated:,} treated, {r.control:,} control, learner "
                     f"{r.selection.winner}, nested out-of-fold Qini "
                     f"{r.metrics['spend'].qini:.4f}" for arm, r in result.arms.items())
    return (f"Uplift model of {result.experiment.outcome_name} on {cfg.data_source()} "
            f"({result.experiment.source}). {arms}.")


def log_uplift_run(cfg: UpliftTrainConfig, result: UpliftResult, experiment: str = "uplift",
                   registered_name: str = UPLIFT_MODEL_NAME,
                   started_ms: int | None = None) -> LoggedRun:
    """Log everything about ``result`` as one MLflow run and register the model."""
    exp = use_experiment(experiment, "Spend-uplift models: who a campaign moves, judged by "
                                     "nested out-of-fold Qini against random targeting.")
    rows = validation_rows(result)
    source = cfg.data or cfg.table or "table"
    name = run_name("uplift", source, result.experiment.outcome_name)
    with tempfile.TemporaryDirectory(prefix="uplift-run-") as tmp, \
            start_run(exp.experiment_id, name, started_ms, _description(cfg, result)) as run:
        work = Path(tmp)
        mlflow.log_params(_params(cfg, result))
        _log_input(cfg, result, rows)
        mlflow.log_metrics(_metrics(result))
        _log_plots(result)
        _log_tables(result, rows, work)
        version = _log_model(cfg, result, work, registered_name)
        warned = [w for r in result.arms.values() for w in r.warnings()]
        mlflow.set_tags({"experiment_digest": validation_digest(rows), "evaluation": "nested",
                         "model_version": version,
                         "experiment_warnings": " | ".join(warned) or "none"})
    return LoggedRun(run.info.run_id, exp.experiment_id, version)

