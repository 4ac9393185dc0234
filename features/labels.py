"""The churn label: who, of the customers buying before a cutoff, places no order after it.

The base at cutoff T is every customer with an order in [T - base_days, T); a customer
in the base is labelled churned (1) when they place no order in [T, T + horizon_days).
An order is a transaction row with a non-negative amount, as in the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np

from features.contract import ContractError
from features.errors import setting

# The label column: 1 churned, 0 ordered again within the horizon.
LABEL = "churned"


@dataclass(frozen=True)
class ChurnLabelConfig:
    """The two windows of the churn label, in days."""

    horizon_days: int = 90
    base_days: int = 365

    def __post_init__(self) -> None:
        for name in ("horizon_days", "base_days"):
            if getattr(self, name) < 1:
                raise ContractError(f"{setting(name)} must be at least 1 day")


class LabelWindowError(ContractError):
    """A cutoff whose label window reaches past the end of the data."""


def _ts(day: date) -> str:
    return f"TIMESTAMPTZ '{day.isoformat()} 00:00:00+00'"


def churn_label_query(transactions: str, cutoff: date, cfg: ChurnLabelConfig) -> str:
    """SQL giving ``customer_id, churned`` for every customer in the base at ``cutoff``."""
    t = _ts(cutoff)
    return f"""
WITH label_orders AS (SELECT customer_id, ordered_at FROM {transactions} WHERE amount >= 0)
SELECT customer_id,
       CASE WHEN count(*) FILTER (WHERE ordered_at >= {t}
                                   AND ordered_at < {t} + INTERVAL {cfg.horizon_days} DAY) = 0
            THEN 1 ELSE 0 END AS {LABEL}
FROM label_orders
WHERE ordered_at >= {t} - INTERVAL {cfg.base_days} DAY
  AND ordered_at < {t} + INTERVAL {cfg.horizon_days} DAY
GROUP BY customer_id
HAVING count(*) FILTER (WHERE ordered_at < {t}) > 0
ORDER BY customer_id"""


def value_target_query(transactions: str, cutoff: date, horizon_days: int) -> str:
    """SQL giving, for every customer with an order before ``cutoff``: ``future_spend`` (net
    spend in [T, T + horizon), returns netted off, never below 0), ``future_orders`` (orders
    in that window) and ``past_spend`` (net spend in the same length of time before T, never
    below 0: the "last period again" forecast). Money is summed as exact decimals, so the
    labels do not depend on the order DuckDB's threads add in."""
    t = _ts(cutoff)
    window = f"INTERVAL {int(horizon_days)} DAY"
    return f"""
SELECT customer_id,
       greatest(coalesce(CAST(sum(CAST(amount AS DECIMAL(38, 6))) FILTER (
           WHERE ordered_at >= {t}) AS DOUBLE), 0), 0) AS future_spend,
       CAST(count(DISTINCT order_id) FILTER (WHERE ordered_at >= {t} AND amount >= 0)
            AS DOUBLE) AS future_orders,
       greatest(coalesce(CAST(sum(CAST(amount AS DECIMAL(38, 6))) FILTER (
           WHERE ordered_at < {t} AND ordered_at >= {t} - {window}) AS DOUBLE), 0), 0)
           AS past_spend
FROM {transactions}
WHERE ordered_at < {t} + {window}
GROUP BY customer_id
HAVING count(*) FILTER (WHERE ordered_at < {t} AND amount >= 0) > 0
ORDER BY customer_id"""


def data_span(con: duckdb.DuckDBPyConnection, transactions: str) -> tuple[date, date]:
    """The day of the first order, and the first day the transactions do not cover (the day
    after the last row's day), in one pass over the table."""
    first, last = con.sql(f"SELECT min(ordered_at) FILTER (WHERE amount >= 0), max(ordered_at) "
                          f"FROM {transactions}").fetchall()[0]
    if last is None:
        raise ContractError("transactions: no rows, so there is nothing to label")
    if first is None:
        raise ContractError("transactions: no orders, so there is nothing to learn from")
    return first.date(), last.date() + timedelta(days=1)


def in_base(recency_days: np.ndarray, base_days: float) -> np.ndarray:
    """Whether each customer is in the churn base: an order in [T - base_days, T).

    The same definition as ``churn_label_query``'s (an order exactly ``base_days`` before the
    cutoff counts); missing recency (no order yet) is outside.
    """
    with np.errstate(invalid="ignore"):
        return np.asarray(recency_days, dtype=float) <= base_days


def check_matured(cutoffs: list[date], horizon_days: int, end: date) -> None:
    """Raise unless every cutoff's label window [T, T + horizon) ends by ``end``."""
    late = [c for c in cutoffs if c + timedelta(days=horizon_days) > end]
    if late:
        latest_ok = end - timedelta(days=horizon_days)
        raise LabelWindowError(
            f"cutoff {', '.join(c.isoformat() for c in late)}: the {horizon_days}-day label "
            f"window is not over yet (the data ends {end.isoformat()}, so the latest cutoff "
            f"with a matured label is {latest_ok.isoformat()})"
        )
