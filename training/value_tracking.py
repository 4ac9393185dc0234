"""Record a value training run in MLflow and register its model as ``value``.

The run holds the settings, the data lineage, each scorer's metrics on the test cutoff
(``test_*`` for the model, ``test_<scorer>_*`` for the baselines, ``validation_<form>_*`` for
the spend forms compared), the decile and lift charts, and the test rows a later promotion
judges models on.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

import models
from features.registry import FEATURE_SET_VERSION, feature_names
from models.registry import TEST_ARTIFACT, VALUE_MODEL_NAME
from models.store import run_name, start_run, use_experiment
from models.value_model import ARTIFACT_KEY
from training.config import ValueTrainConfig
from training.plots import subplots
from training.tracking import PYFUNC_REQUIREMENTS, LoggedRun, log_pyfunc
from training.train_value import MODEL, SCORER_LABELS, ValueTrainResult, metrics_table
from training.value_metrics import decile_table

PYFUNC_CODE = Path(models.__file__).with_name("value_pyfunc.py")


def _params(cfg: ValueTrainConfig, result: ValueTrainResult) -> dict[str, object]:
    plan = result.plan
    return {"data_source": cfg.data_source(),
            "train_cutoffs": ",".join(c.isoformat() for c in plan.train),
            "validation_cutoff": plan.validation.isoformat(),
            "test_cutoff": plan.test.isoformat(),
            "fitted_through": plan.fitted_through().isoformat(),
            "horizon_days": cfg.horizon_days, "spend_form": result.model.form,
            "forms_compared": ",".join(result.validation), "feature_set_version":
            FEATURE_SET_VERSION, "test_rows": len(result.test),
            **{f"trees_{k}": v for k, v in result.trees.items()},
            **{k: v for k, v in cfg.lightgbm_params("tweedie").items()
               if k not in ("objective", "verbose")}}


def _metrics(result: ValueTrainResult) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, m in result.metrics.items():
        prefix = "test_" if name == MODEL else f"test_{name}_"
        out.update({prefix + k: v for k, v in m.as_dict().items()})
    for name, m in result.orders_metrics.items():
        prefix = "test_orders_" if name == MODEL else f"test_{name}_orders_"
        out.update({prefix + k: v for k, v in m.as_dict().items()})
    for form, m in result.validation.items():
        out.update({f"validation_{form}_{k}": v for k, v in m.as_dict().items()})
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


def decile_figure(result: ValueTrainResult):
    """Mean forecast against mean realised spend per decile of the model's forecast."""
    table = decile_table(result.test["future_spend"].to_numpy(),
                         result.test["model_spend"].to_numpy())
    fig, ax = subplots(figsize=(7, 4))
    width = 0.4
    ax.bar(table["decile"] - width / 2, table["actual"], width, label="realised")
    ax.bar(table["decile"] + width / 2, table["forecast"], width, label="forecast")
    ax.set_xlabel("decile of forecast spend (1 = highest)")
    ax.set_ylabel(f"mean spend over {result.model.horizon_days} days")
    ax.set_xticks(table["decile"])
    ax.legend()
    fig.tight_layout()
    return fig


def lift_figure(result: ValueTrainResult):
    """Share of realised spend captured by the customers each scorer ranks first."""
    actual = result.test["future_spend"].to_numpy()
    fig, ax = subplots(figsize=(6, 5))
    share = np.linspace(0, 1, len(actual) + 1)
    for name, label in SCORER_LABELS.items():
        order = np.argsort(-result.test[f"{name}_spend"].to_numpy(), kind="stable")
        captured = np.concatenate([[0.0], np.cumsum(actual[order]) / max(actual.sum(), 1e-12)])
        ax.plot(share * 100, captured * 100, label=label)
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", label="random")
    ax.set_xlabel("% of customers, highest forecast first")
    ax.set_ylabel("% of realised spend")
    ax.legend()
    fig.tight_layout()
    return fig


def _description(cfg: ValueTrainConfig, result: ValueTrainResult) -> str:
    m = result.metrics
    return (f"Value model ({result.model.form}) of spend and orders over "
            f"{cfg.horizon_days} days on {cfg.data_source()}: test cutoff {result.plan.test} "
            f"({len(result.test):,} customers). Normalised Gini {m[MODEL].normalised_gini:.3f} "
            f"against BG/NBD x Gamma-Gamma {m['bgnbd_gamma_gamma'].normalised_gini:.3f}.")


def log_value_run(cfg: ValueTrainConfig, result: ValueTrainResult, experiment: str = "value",
                  registered_name: str = VALUE_MODEL_NAME,
                  started_ms: int | None = None) -> LoggedRun:
    """Log everything about ``result`` as one MLflow run and register the model."""
    exp = use_experiment(experiment, "Value models: expected spend and orders per customer "
                                     "over a horizon, against BG/NBD x Gamma-Gamma.")
    name = run_name("value", cfg.data, f"test-{result.plan.test.isoformat()}")
    with tempfile.TemporaryDirectory(prefix="value-run-") as tmp, \
            start_run(exp.experiment_id, name, started_ms, _description(cfg, result)) as run:
        work = Path(tmp)
        mlflow.log_params(_params(cfg, result))
        mlflow.log_metrics(_metrics(result))
        for path, fig in {"plots/deciles.png": decile_figure(result),
                          "plots/lift.png": lift_figure(result)}.items():
            mlflow.log_figure(fig, path)
        mlflow.log_text(metrics_table(result.metrics).to_csv(float_format="%.5f"),
                        "test_metrics.csv")
        result.test.to_parquet(work / "test.parquet", index=False)
        mlflow.log_artifact(str(work / "test.parquet"), str(Path(TEST_ARTIFACT).parent))
        folder = result.model.save(work / ARTIFACT_KEY)
        example = result.test[feature_names()].head(5)
        output = pd.DataFrame({"predicted_spend": result.model.predict_spend(example),
                               "predicted_orders": result.model.predict_orders(example)})
        lineage = {"data_source": cfg.data_source(),
                   "data_span": f"{result.loaded.start}..{result.loaded.end - timedelta(days=1)}",
                   "feature_set_version": FEATURE_SET_VERSION}
        version = log_pyfunc(PYFUNC_CODE, {ARTIFACT_KEY: folder}, example, output,
                             registered_name, PYFUNC_REQUIREMENTS, lineage)
        mlflow.set_tag("model_version", version)
    return LoggedRun(run.info.run_id, exp.experiment_id, version)
