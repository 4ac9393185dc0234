"""How well a forecast of spend ranks and sizes customers, as the CLV literature reports it.

- Spearman: rank correlation of forecast and realised spend.
- Normalised Gini (Wang, Liu & Miao 2019): the Gini of realised spend ordered by the forecast,
  over the Gini of the perfect order; 1 ranks every customer right, 0 is random.
- Decile MAPE: customers cut into ten deciles of forecast; per decile the mean forecast
  against the mean realised spend; the mean absolute percentage error over deciles whose
  realised mean is above zero.
- Total forecast error: the forecast total over the realised total, minus one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

DECILES = 10


def _gini(actual: np.ndarray, order_by: np.ndarray) -> float:
    order = np.lexsort((np.arange(len(order_by)), -order_by))
    ranked = actual[order]
    total = ranked.sum()
    if total <= 0:
        return 0.0
    cumulative = np.cumsum(ranked) / total
    return float(cumulative.sum() / len(ranked) - (len(ranked) + 1) / (2 * len(ranked)))


def normalised_gini(actual: np.ndarray, forecast: np.ndarray) -> float:
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    perfect = _gini(actual, actual)
    return _gini(actual, forecast) / perfect if perfect > 0 else float("nan")


def decile_table(actual: np.ndarray, forecast: np.ndarray) -> pd.DataFrame:
    """Mean forecast and mean realised spend per decile of forecast (decile 1: highest)."""
    order = np.argsort(-np.asarray(forecast, float), kind="stable")
    decile = np.empty(len(order), dtype=int)
    decile[order] = np.arange(len(order)) * DECILES // max(len(order), 1) + 1
    frame = pd.DataFrame({"decile": decile, "forecast": forecast, "actual": actual})
    table = frame.groupby("decile").agg(customers=("actual", "size"),
                                        forecast=("forecast", "mean"),
                                        actual=("actual", "mean"))
    return table.reset_index()


def decile_mape(actual: np.ndarray, forecast: np.ndarray) -> float:
    table = decile_table(actual, forecast)
    kept = table[table["actual"] > 0]
    if kept.empty:
        return float("nan")
    return float((abs(kept["forecast"] - kept["actual"]) / kept["actual"]).mean())


@dataclass(frozen=True)
class ValueMetrics:
    spearman: float
    normalised_gini: float
    decile_mape: float
    total_error: float
    mae: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def value_metrics(actual: np.ndarray, forecast: np.ndarray) -> ValueMetrics:
    actual, forecast = np.asarray(actual, float), np.asarray(forecast, float)
    total = actual.sum()
    rho = spearmanr(actual, forecast).statistic if len(actual) > 1 else float("nan")
    return ValueMetrics(
        spearman=float(rho),
        normalised_gini=normalised_gini(actual, forecast),
        decile_mape=decile_mape(actual, forecast),
        total_error=float(forecast.sum() / total - 1.0) if total > 0 else float("nan"),
        mae=float(np.abs(actual - forecast).mean()) if len(actual) else float("nan"))
