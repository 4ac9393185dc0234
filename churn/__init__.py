"""Churn and spend-uplift models for marketing teams.

The Python API (``churn.features_at``, ``churn.train_churn``, ``churn.score``, ...) lives in
``churn.api`` and is imported on first use, so the `churn` command starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from churn.api import *  # noqa: F403

_API = (
    "BacktestResult", "ChurnTrainResult", "LoadedModel", "LoggedRun", "Promotion", "Tables",
    "UpliftEvaluation", "UpliftResult", "backtest_churn", "churn_labels", "evaluate_uplift",
    "features_at", "load_champion", "metrics_table", "promote", "score", "snapshot",
    "train_churn", "train_propensity", "train_uplift", "train_value", "uplift_learners",
    "value_metrics_table",
)
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        from churn import api  # noqa: PLC0415 (imported on first use: a fast `churn --help`)

        return getattr(api, name)
    raise AttributeError(f"module 'churn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
