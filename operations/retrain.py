"""Retraining on a schedule: a challenger on the newest matured cutoffs, with the champion's
recorded settings, promoted only when it wins a fair comparison.

The challenger's cutoffs come from the data's own span (the latest test cutoff whose label
window has ended, and the validation and training cutoffs before it), so each retrain moves
forward with the data. Its settings (label windows, LightGBM parameters, number of training
cutoffs, seed) are those the champion's training run recorded. ``training.promote`` then
judges both on the challenger's test cutoff, which the champion must not have been fitted on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from features.errors import setting
from features.labels import ChurnLabelConfig
from features.point_in_time import connect
from features.tables import load_tables
from features.validation import OnBadRows
from models.registry import CHAMPION
from models.store import now_ms
from training.config import ChurnTrainConfig
from training.promote import Promotion, PromotionError, promote
from training.tracking import LoggedRun, log_churn_run
from training.train_churn import ChurnTrainResult, resolve_plan, train_churn


@dataclass
class Retrained:
    """What the retrain did: ``promoted``, or ``kept`` the champion (with why)."""

    status: str
    message: str
    result: ChurnTrainResult | None = None
    logged: LoggedRun | None = None
    promotion: Promotion | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "promoted" else 10


def champion_config(data: Path, name: str, on_bad_rows: OnBadRows = OnBadRows.stop
                    ) -> tuple[ChurnTrainConfig, date, str]:
    """A training configuration with the champion's recorded settings on ``data``, the
    champion's test cutoff, and its version."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise PromotionError(f"no '{name}' model holds the '{CHAMPION}' alias: train a churn "
                             f"model registered as '{name}' and promote it first"
                             ) from None
    params = client.get_run(version.run_id).data.params
    wanted = str(data.resolve())
    if params.get("data_source") != wanted:
        raise PromotionError(
            f"the '{name}' champion v{version.version} was trained on "
            f"{params.get('data_source')}, not on {wanted}: retrain on its data, or train a "
            f"model for this data under its own {setting('model_name')}")
    stopping = params.get("early_stopping_rounds")
    cfg = ChurnTrainConfig(
        data=data, train_cutoff_count=len(params["train_cutoffs"].split(",")),
        labels=ChurnLabelConfig(int(params["horizon_days"]), int(params["base_days"])),
        learning_rate=float(params["learning_rate"]), num_leaves=int(params["num_leaves"]),
        min_data_in_leaf=int(params["min_data_in_leaf"]), max_trees=int(params["max_trees"]),
        early_stopping_rounds=int(stopping) if stopping not in (None, "None") else None,
        seed=int(params["seed"]), on_bad_rows=on_bad_rows)
    return cfg, date.fromisoformat(params["test_cutoff"]), str(version.version)


def newest_test_cutoff(cfg: ChurnTrainConfig) -> date:
    """The test cutoff a training run on ``cfg.data`` would use now (reads transactions only)."""
    with tempfile.TemporaryDirectory(prefix="churn-retrain-") as work, \
            connect(cfg.memory_limit, Path(work) / "spill") as con:
        tables = load_tables(con, cfg.data, Path(work), cfg.on_bad_rows, only=("transactions",))
        return resolve_plan(cfg, tables).test


def retrain(data: Path, name: str = "churn", experiment: str = "churn",
            on_bad_rows: OnBadRows = OnBadRows.stop,
            on_step: Callable[[str], None] | None = None) -> Retrained:
    """Train a challenger with the champion's settings on the newest cutoffs; promote it if
    it beats the champion on rows neither was fitted on."""
    step = on_step or (lambda _: None)
    cfg, champion_test, version = champion_config(data, name, on_bad_rows)
    test = newest_test_cutoff(cfg)
    if test <= champion_test:
        return Retrained("kept", f"{name} v{version} was tested on {champion_test}, and the "
                                 f"newest matured test cutoff is {test}: no newer outcomes to "
                                 f"learn from, so nothing was trained; champion stays "
                                 f"v{version}")
    started = now_ms()
    result = train_churn(cfg, on_step=step)
    step("logging the challenger")
    logged = log_churn_run(cfg, result, experiment=experiment, registered_name=name,
                           started_ms=started)
    step("judging the challenger against the champion")
    promotion = promote(name, logged.run_id, kind="churn")
    return Retrained("promoted" if promotion.promoted else "kept", promotion.message(), result,
                     logged, promotion)
