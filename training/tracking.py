"""Record a churn training run in MLflow and register its model.

A run holds the parameters, the data lineage (source, cutoffs, row counts, digests), the
metrics of the model and of each baseline on the same validation rows, the plots, the
validation rows themselves (so a later promotion compares models on identical data) and the
model with its signature and input example, registered under ``churn``.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.data
import pandas as pd
from matplotlib import pyplot as plt
from mlflow.models import infer_signature

from features.registry import FEATURE_SET_VERSION, feature_names
from training import plots
from training.churn_model import ARTIFACT_KEY
from training.dataset import LABEL, frame_digest
from training.metrics import decile_table
from training.train_churn import MODEL, ChurnTrainConfig, ChurnTrainResult

CHURN_MODEL_NAME = "churn"
PYFUNC_CODE = Path(__file__).with_name("pyfunc.py")
VALIDATION_ARTIFACT = "validation/validation.parquet"


def default_tracking_uri(folder: Path) -> str:
    """The embedded default: a SQLite store in ``folder`` (artifacts next to it)."""
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


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
        "data_source": str(cfg.data.resolve()),
        "train_cutoffs": ",".join(c.isoformat() for c in result.train_cutoffs),
        "validation_cutoff": result.validation_cutoff.isoformat(),
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
        **rows,
    }


def _metrics(result: ChurnTrainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        out.update(m.as_dict(prefix="" if name == MODEL else f"{name}_"))
    out.update({f"calibration_log_loss_{k}": v for k, v in result.calibration_losses.items()})
    out["validation_churn_rate"] = float(result.validation[LABEL].mean())
    return out


def _log_inputs(cfg: ChurnTrainConfig, result: ChurnTrainResult) -> None:
    source = str(cfg.data.resolve())
    is_valid = result.frame["cutoff"] == pd.Timestamp(result.validation_cutoff)
    for context, part in (("training", result.frame[~is_valid]),
                          ("validation", result.frame[is_valid])):
        with warnings.catch_warnings():
            # MLflow hints that the integer label cannot hold missing values; it never does.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(part, source=source, targets=LABEL,
                                              name=f"churn-{context}", digest=frame_digest(part))
            mlflow.log_input(dataset, context=context)


def _log_plots(result: ChurnTrainResult) -> None:
    valid = result.validation
    y = valid[LABEL].to_numpy()
    scores = {"model": valid["churn_probability"].to_numpy(), **result.baseline_scores}
    sample = valid.sample(min(len(valid), 3000), random_state=0)
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
        plt.close(fig)


def _log_tables(result: ChurnTrainResult, work: Path) -> None:
    result.validation.to_parquet(work / "validation.parquet", index=False)
    mlflow.log_artifact(str(work / "validation.parquet"), "validation")
    mlflow.log_text(metrics_table(result).to_csv(float_format="%.5f"), "metrics.csv")
    deciles = decile_table(result.validation[LABEL].to_numpy(),
                           result.validation["churn_probability"].to_numpy())
    mlflow.log_text(deciles.to_csv(index=False), "deciles.csv")


def log_pyfunc(code: Path, artifacts: dict[str, Path], example: pd.DataFrame,
               output: pd.DataFrame, registered_name: str, requirements: list[str]) -> str:
    """Log a models-from-code pyfunc with its signature and example; register it."""
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold missing values: the example's own
        # types are the ones callers send.
        warnings.simplefilter("ignore", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code),
            artifacts={k: str(v) for k, v in artifacts.items()},
            signature=infer_signature(example, output), input_example=example,
            registered_model_name=registered_name, pip_requirements=requirements)
    return str(info.registered_model_version)


def _log_model(result: ChurnTrainResult, work: Path, registered_name: str) -> str:
    folder = result.model.save(work / "churn_model")
    example = result.validation[feature_names()].head(5)
    output = pd.DataFrame({"churn_probability": result.model.predict_proba(example)})
    return log_pyfunc(PYFUNC_CODE, {ARTIFACT_KEY: folder}, example, output, registered_name,
                      ["lightgbm", "scikit-learn", "pandas", "numpy", "scipy"])


def log_churn_run(cfg: ChurnTrainConfig, result: ChurnTrainResult, experiment: str = "churn",
                  registered_name: str = CHURN_MODEL_NAME) -> LoggedRun:
    """Log everything about ``result`` as one MLflow run and register the model."""
    exp = mlflow.set_experiment(experiment)
    run_name = f"churn-{result.validation_cutoff.isoformat()}"
    with tempfile.TemporaryDirectory(prefix="churn-run-") as tmp, \
            mlflow.start_run(run_name=run_name) as run:
        work = Path(tmp)
        mlflow.log_params(_params(cfg, result))
        _log_inputs(cfg, result)
        mlflow.log_metrics(_metrics(result))
        _log_plots(result)
        _log_tables(result, work)
        version = _log_model(result, work, registered_name)
        mlflow.set_tags({"validation_digest": frame_digest(result.validation),
                         "model_version": version})
    return LoggedRun(run.info.run_id, exp.experiment_id, version)
