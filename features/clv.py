"""The per-customer summary buy-till-you-die models take, as of a cutoff.

``x`` counts repeat purchase days (same-day orders merge into one), ``t_x`` is the time from
the first to the last purchase day and ``T`` the time from the first purchase day to the last
observed day (the day before the cutoff), both in weeks, the unit of the BG/NBD literature;
``monetary`` is the mean spend of the repeat purchase days (0 without one), what Gamma-Gamma
models.
Measured this way, the summary reproduces the published CDNOW fit.
"""

from __future__ import annotations

from datetime import date

DAYS_PER_UNIT = 7.0


def clv_summary_query(transactions: str, cutoff: date) -> str:
    """SQL giving ``customer_id, x, t_x, T`` from orders strictly before ``cutoff``."""
    last_day = f"(DATE '{cutoff.isoformat()}' - INTERVAL 1 DAY)"
    return f"""
WITH days AS (
    SELECT customer_id, CAST(ordered_at AS DATE) AS day,
           CAST(sum(CAST(amount AS DECIMAL(38, 6))) AS DOUBLE) AS spend
    FROM {transactions}
    WHERE amount >= 0 AND ordered_at < TIMESTAMPTZ '{cutoff.isoformat()} 00:00:00+00'
    GROUP BY ALL),
ranked AS (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY day) AS n FROM days)
SELECT customer_id,
       CAST(count(*) - 1 AS DOUBLE) AS x,
       date_diff('day', min(day), max(day)) / {DAYS_PER_UNIT} AS t_x,
       date_diff('day', min(day), {last_day}) / {DAYS_PER_UNIT} AS "T",
       coalesce(avg(spend) FILTER (WHERE n > 1), 0) AS monetary
FROM ranked GROUP BY customer_id ORDER BY customer_id"""
