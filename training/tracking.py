"""Record a churn training run in MLflow and register its model.

A run holds the parameters, the data lineage (source, cutoffs of each role, row counts,
digests), the metrics of the registered model and of each baseline on the same test rows
(``test_*``; the model's before the refit on the validation cutoff as ``validation_*``), the
plots, the test and validation rows themselves (a later promotion judges models on the test
rows) and the model with its signature and input example, registered under ``churn``.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.types import ColSpec, Schema

import features
import models
from features.labels import LABEL
from features.registry import FEATURE_SET_VERSION, feature_names
from models.churn_model import ARTIFACT_KEY
from models.registry import CHURN_MODEL_NAME, TEST_ARTIFACT, VALIDATION_ARTIFACT
from models.store import run_name, start_run, use_experiment
from training import plots
from training.backtest import METRICS, BacktestResult
from training.config import ChurnTrainConfig
from training.dataset import frame_digest
from training.metrics import decile_table
from training.train_churn import MODEL, SCORER_LABELS, ChurnTrainResult


def pinned(packages: tuple[str, ...]) -> list[str]:
    """``name==version`` of each installed package."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


PYFUNC_CODE = Path(models.__file__).with_name("pyfunc.py")
# A logged model carries the two packages loading it imports (``code_paths``: the models and
# the feature registry they read), and what those import from PyPI, pinned to the versions it
# was trained with, is its requirements: `mlflow models serve` works without this project.
CODE_PATHS = [str(Path(package.__file__).parent) for package in (features, models)]
PYFUNC_REQUIREMENTS = pinned(("lightgbm", "scikit-learn", "scipy", "numpy", "pandas", "pyarrow",
                              "duckdb", "pandera"))


@dataclass(frozen=True)
class LoggedRun:
    """Where a run landed: its id, the registered model version and the experiment."""

    run_id: str
    experiment_id: str
    model_version: str


def metrics_table(result: ChurnTrainResult) -> pd.DataFrame:
    """One row per scorer (model first, then baselines): the metrics and a verdict."""
    rows = []
    for name, m in result.metrics.items():
        rows.append({"scorer": name, **m.__dict__, "verdict": m.verdict})
    return pd.DataFrame(rows).set_index("scorer")


def _params(cfg: ChurnTrainConfig, result: ChurnTrainResult) -> dict[str, object]:
    rows = {f"rows_{table}": n for table, n in result.loaded.rows().items()}
    return {
        "data_source": cfg.data_source(),
        "train_cutoffs": ",".join(c.isoformat() for c in result.train_cutoffs),
        "validation_cutoff": result.validation_cutoff.isoformat(),
        "test_cutoff": result.test_cutoff.isoformat(),
        "fitted_through": result.plan.fitted_through().isoformat(),
        "data_start": result.loaded.start.isoformat(),
        "data_end": result.loaded.end.isoformat(),
        "horizon_days": cfg.labels.horizon_days,
        "base_days": cfg.labels.base_days,
        "feature_set_version": FEATURE_SET_VERSION,
        "features": len(feature_names()),
        "trees": result.trees,
        "calibration": result.model.calibrator.method,
        "max_trees": cfg.max_trees,
        "early_stopping_rounds": cfg.early_stopping_rounds,
        **{k: v for k, v in cfg.lightgbm_params().items() if k != "verbose"},
        "train_rows": int((result.frame["cutoff"] < pd.Timestamp(result.validation_cutoff)).sum()),
        "validation_rows": len(result.validation),
        "test_rows": len(result.test),
        **rows,
    }


def _metrics(result: ChurnTrainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        out.update(m.as_dict(prefix="test_" if name == MODEL else f"test_{name}_"))
    out.update(result.validation_metrics.as_dict(prefix="validation_"))
    out.update({f"calibration_log_loss_{k}": v for k, v in result.calibration_losses.items()})
    out["validation_churn_rate"] = float(result.validation[LABEL].mean())
    out["test_churn_rate"] = float(result.test[LABEL].mean())
    if result.target == "purchase":
        out["test_purchase_rate"] = 1.0 - out["test_churn_rate"]
    return out


# Column types are read off this many rows (they follow the dtype; text columns their values).
SCHEMA_SAMPLE_ROWS = 1000


def logged_dataset(frame: pd.DataFrame, **kwargs) -> mlflow.data.dataset.Dataset:
    """``mlflow.data.from_pandas(frame, **kwargs)`` with its schema worked out by column, not
    by value: MLflow tests every value of every column in Python for missing ones (about a
    third of a CDNOW training run); here each column's type comes from a sample and whether
    it has missing values from pandas."""
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values; these never do.
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(frame, **kwargs)
        sampled = infer_signature(frame.head(SCHEMA_SAMPLE_ROWS)).inputs
    missing = frame.isna().any()
    dataset.schema = Schema([ColSpec(spec.type, spec.name, required=not bool(missing[spec.name]))
                             for spec in sampled.inputs])
    return dataset


def _log_inputs(cfg: ChurnTrainConfig, result: ChurnTrainResult) -> None:
    # Data from memory (a recorded source that is no path) gets MLflow's own code source.
    source = None if cfg.source else cfg.data_source()
    cutoff = result.frame["cutoff"]
    roles = (("training", cutoff < pd.Timestamp(result.validation_cutoff)),
             ("validation", cutoff == pd.Timestamp(result.validation_cutoff)),
             ("test", cutoff == pd.Timestamp(result.test_cutoff)))
    for context, rows in roles:
        part = result.frame[rows]
        mlflow.log_input(logged_dataset(part, source=source, targets=LABEL,
                                        name=f"churn-{context}", digest=frame_digest(part)),
                         context=context)


def _log_plots(result: ChurnTrainResult) -> None:
    test = result.test
    y = result.outcome()
    scores = {"model": result.model_scores(), **result.baseline_scores}
    sample = test.sample(min(len(test), 3000), random_state=0)
    importance = pd.Series(result.model.booster.feature_importance("gain"),
                           index=result.model.features)
    figures = {
        "plots/roc.png": plots.roc_figure(y, scores),
        "plots/reliability.png": plots.reliability_figure(y, scores["model"]),
        "plots/gains_lift.png": plots.gains_figure(y, scores),
        "plots/feature_importance.png": plots.importance_figure(importance),
        "plots/shap_summary.png": plots.shap_summary_figure(
            result.model.contributions(sample), sample[result.model.features]),
    }
    for path, fig in figures.items():
        mlflow.log_figure(fig, path)


def _log_tables(result: ChurnTrainResult, work: Path) -> None:
    for rows, artifact in ((result.validation, VALIDATION_ARTIFACT),
                           (result.test, TEST_ARTIFACT)):
        folder, name = artifact.split("/")
        rows.to_parquet(work / name, index=False)
        mlflow.log_artifact(str(work / name), folder)
    mlflow.log_text(metrics_table(result).to_csv(float_format="%.5f"), "test_metrics.csv")
    deciles = decile_table(result.outcome(), result.model_scores())
    mlflow.log_text(deciles.to_csv(index=False), "deciles.csv")


def log_pyfunc(code: Path, artifacts: dict[str, Path], example: pd.DataFrame,
               output: pd.DataFrame, registered_name: str, requirements: list[str],
               lineage: dict[str, str]) -> str:
    """Log a models-from-code pyfunc with its signature and example; register it, with
    ``lineage`` (data source and span) as tags of the registered version."""
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: the example's own
        # types are the ones callers send.
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code),
            artifacts={k: str(v) for k, v in artifacts.items()},
            signature=infer_signature(example, output), input_example=example,
            registered_model_name=registered_name, pip_requirements=requirements,
            code_paths=CODE_PATHS)
    version = str(info.registered_model_version)
    for key, value in lineage.items():
        MlflowClient().set_model_version_tag(registered_name, version, key, value)
    return version


def _log_model(cfg: ChurnTrainConfig, result: ChurnTrainResult, work: Path,
               registered_name: str) -> str:
    folder = result.model.save(work / "churn_model")
    example = result.test[feature_names()].head(5)
    output = pd.DataFrame({"churn_probability": result.model.predict_proba(example)})
    lineage = {"data_source": cfg.data_source(),
               "data_span": f"{result.loaded.start}..{result.loaded.end - timedelta(days=1)}",
               "feature_set_version": FEATURE_SET_VERSION}
    return log_pyfunc(PYFUNC_CODE, {ARTIFACT_KEY: folder}, example, output, registered_name,
                      PYFUNC_REQUIREMENTS, lineage)


def _churn_description(cfg: ChurnTrainConfig, result: ChurnTrainResult) -> str:
    plan, m = result.plan, result.metrics
    return (f"Churn model on {cfg.data_source()}: {len(plan.train)} training cutoffs "
            f"({plan.train[0]} .. {plan.train[-1]}), validation cutoff {plan.validation}, "
            f"test cutoff {plan.test} ({len(result.test):,} customers, "
            f"{result.test[LABEL].mean():.1%} churned). {result.trees} trees, "
            f"{result.model.calibrator.method} calibration. Test ROC AUC "
            f"{m[MODEL].roc_auc:.3f} against the recency rule's {m['recency_rule'].roc_auc:.3f}.")


def log_churn_run(cfg: ChurnTrainConfig, result: ChurnTrainResult, experiment: str = "churn",
                  registered_name: str = CHURN_MODEL_NAME,
                  started_ms: int | None = None) -> LoggedRun:
    """Log everything about ``result`` as one MLflow run and register the model.

    ``started_ms`` (``now_ms()`` taken when training began) is the run's start time."""
    exp = use_experiment(experiment, "Churn models: LightGBM on point-in-time features, "
                                     "against the recency rule and BG/NBD on each test cutoff.")
    name = run_name("churn", cfg.data, f"test-{result.test_cutoff.isoformat()}")
    with tempfile.TemporaryDirectory(prefix="churn-run-") as tmp, \
            start_run(exp.experiment_id, name, started_ms,
                      _churn_description(cfg, result)) as run:
        work = Path(tmp)
        mlflow.log_params(_params(cfg, result))
        _log_inputs(cfg, result)
        mlflow.log_metrics(_metrics(result))
        _log_plots(result)
        _log_tables(result, work)
        version = _log_model(cfg, result, work, registered_name)
        mlflow.set_tags({"test_digest": frame_digest(result.test),
                         "model_version": version})
    return LoggedRun(run.info.run_id, exp.experiment_id, version)


def log_backtest_run(cfg: ChurnTrainConfig, result: BacktestResult,
                     experiment: str = "churn-backtest",
                     started_ms: int | None = None) -> LoggedRun:
    """One run holding the backtest: per-origin metrics (as steps), their mean and spread, the
    table as CSV and the plot across origins. Nothing is registered."""
    exp = use_experiment(experiment, "Churn backtests: the model and its baselines trained "
                                     "and tested at several origins, as `churn train` would.")
    origins = ",".join(o.isoformat() for o in result.origins)
    summary = result.summary()
    means = {s: summary.loc[s, ("mean", "roc_auc")] for s in summary.index}
    description = (f"Rolling-origin backtest on {cfg.data_source()} at {len(result.origins)} "
                   f"origins ({origins.replace(',', ', ')}), {cfg.train_cutoff_count} training "
                   f"cutoffs each. Mean ROC AUC: "
                   + ", ".join(f"{SCORER_LABELS.get(str(s), s)} {v:.3f}"
                               for s, v in means.items()) + ".")
    with start_run(exp.experiment_id, run_name("backtest", cfg.data, origins),
                   started_ms, description) as run:
        mlflow.log_params({
            "data_source": cfg.data_source(), "origins": origins,
            "horizon_days": cfg.labels.horizon_days, "base_days": cfg.labels.base_days,
            "train_cutoff_count": cfg.train_cutoff_count, "feature_set_version":
                FEATURE_SET_VERSION, **{k: v for k, v in cfg.lightgbm_params().items()
                                        if k != "verbose"}})
        for step, (_, part) in enumerate(result.per_origin.groupby("origin", sort=True)):
            for _, row in part.iterrows():
                mlflow.log_metrics({f"{row['scorer']}_{m}": float(row[m]) for m in METRICS
                                    if pd.notna(row[m])}, step=step)
        for scorer, row in summary.iterrows():
            mlflow.log_metrics({f"{kind}_{scorer}_{m}": float(row[(kind, m)])
                                for kind in ("mean", "sd") for m in METRICS
                                if pd.notna(row[(kind, m)])})
        mlflow.log_text(result.per_origin.to_csv(index=False, float_format="%.5f"),
                        "backtest.csv")
        fig = plots.backtest_figure(result.per_origin, SCORER_LABELS)
        mlflow.log_figure(fig, "plots/backtest.png")
        mlflow.set_tags({"kind": "backtest", "notes": " | ".join(result.notes) or "none"})
    return LoggedRun(run.info.run_id, exp.experiment_id, "")
